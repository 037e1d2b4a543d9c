"""The localization map: Python-level behaviour, then Voila + headless Chromium."""
import re
from pathlib import Path

import pytest

pn = pytest.importorskip("panel")

from browser import assert_healthy, open_page, page_text, poll, serve_app, wait_for_canvases  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "notebooks" / "apps" / "localization_map.ipynb"


@pytest.fixture(scope="module")
def app():
    from opso_nb.dashboards import LocalizationMap

    return LocalizationMap()


def shown(app):
    return int(re.search(r"\*\*(\d+) of", app.count.object).group(1))


def test_filters_change_points(app):
    total = len(app.table)
    app.residual_threshold = 50
    assert shown(app) == total == len(app._points.data["x"])
    app.residual_threshold = 0.0
    assert shown(app) < total
    app.residual_threshold = 5.0
    app.classes = ["wren"]
    assert set(app._points.data["cls"]) == {"wren"}
    app.classes = list(app.param.classes.objects)


def test_selecting_a_point_shows_aligned_receivers(app):
    app._points.selected.indices = [0]
    assert "Event" in app.detail_title.object
    grid = app.detail[0]
    assert len(grid.objects) == len(app.events[app._points.data["row"][0]].receiver_files)


@pytest.mark.browser
def test_localization_map_in_chromium():
    with serve_app(APP, "voila") as url, open_page(url) as page:
        page.get_by_text("events shown").first.wait_for(timeout=150_000)
        wait_for_canvases(page, 2)
        text = page_text(page)
        first = int(re.search(r"(\d+) of (\d+) events shown", text).group(1))
        # drag the residual slider to its minimum: fewer points
        handle = page.locator(".noUi-handle").first
        handle.focus()
        for _ in range(25):
            handle.press("ArrowLeft")
        assert poll(page, lambda: int(re.search(r"(\d+) of \d+ events shown", page_text(page)).group(1)) < first,
                    timeout_s=30), page_text(page)[:500]
        assert_healthy(page)
