"""The localization map: Python-level behaviour, then Voila + headless Chromium."""
import re
from pathlib import Path

import pytest


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
    assert total == 8 * 6  # 8 calls heard by 6 recorders; each detection is the reference of one event
    # the six events of the first clip carry the intruder's wrong delays: hidden at the default 2 m
    assert shown(app) == total - 6
    app.residual_threshold = 20
    # each call is localized once per reference recorder: those events share a point whose count says how many
    assert shown(app) == total == sum(app._points.data["count"])
    assert len(app._points.data["x"]) < total
    app.residual_threshold = 0.0
    assert shown(app) == 0
    app.residual_threshold = 2.0
    app.classes = ["wren"]
    assert set(app._points.data["cls"]) == {"wren"} and shown(app) == 6 * 4 - 6
    app.classes = list(app.param.classes.objects)
    app.time_range = (2.5, 5.5)  # clips starting at 3, 4, 5 s
    assert sorted(set(app._points.data["start"])) == [3.0, 4.0, 5.0]
    app.time_range = app.param.time_range.bounds
    app.cc_threshold = float(app.table["min_cc"].median())
    assert 0 < shown(app) < total - 6
    app.cc_threshold = 0.0


def test_events_of_one_call_are_drawn_as_one_point(app):
    app.residual_threshold = 2.0
    data = app._points.data
    # 42 well-fitting events of 7 calls: one point per call, counts add up, bigger for more events
    assert sum(data["count"]) == shown(app) == 42
    assert len(data["x"]) == len(set(zip(data["cls"], data["start"]))) == 7
    assert all(size > 9 for size in data["size"]) and "as 7 point(s)" in app.count.object
    app.merge_distance = 0.01  # a finer grid splits the nearly identical positions again
    assert len(app._points.data["x"]) > 7 and sum(app._points.data["count"]) == 42
    app.merge_distance = 1.0


def test_a_folder_of_synchronized_recordings_is_localized(tmp_path):
    import shutil

    from opso_nb import sample_data
    from opso_nb.dashboards import LocalizationMap
    from opso_nb.workspace import Workspace

    for f in sample_data.localization_folder().iterdir():
        shutil.copy(f, tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"junk")
    with open(tmp_path / "LOCA_2021_aru_coords.csv", "a") as fh:
        fh.write("broken.wav,5,5,2\n")
    app = LocalizationMap(folder=tmp_path, workspace=Workspace(data_dirs=[tmp_path], output_dir=tmp_path / "o"))
    assert app.positions_csv == "LOCA_2021_aru_coords.csv" and app.detections_csv == "LOCA_2021_detections.csv"
    assert len(app.table) == 6 and app.table["class"].tolist() == ["zeep"] * 6  # one per reference recorder
    assert len(app._recorders.data["x"]) == 7 and app._truth.data["x"] == []
    assert "broken.wav" in app.warning.object and "not a readable audio file" in app.warning.object
    assert "veryshort.wav" in app.warning.object  # named in the tables, not in the folder
    app.folder_box.folder = "/etc"
    app.localize_folder()
    assert app.error.visible and "outside the data folders" in app.error.object
    assert len(app.table) == 0 and app._points.data["x"] == [] and app._recorders.data["x"] == []


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
        assert first == 42, text[:300]  # 48 events, the intruder's 6 hidden at the default residual threshold
        # click a position: select the first point in the browser's copy of the points' data source, as the
        # tap tool does; the server must answer with that event's aligned receivers (6 spectrograms + players)
        canvases_before = page.locator("canvas").count()
        selected = page.evaluate("""() => {
            for (const doc of window.Bokeh.documents) {
                for (const model of doc.all_models) {
                    if (model.data !== undefined && model.data.residual !== undefined && model.selected) {
                        model.selected.indices = [0];
                        return true;
                    }
                }
            }
            return false;
        }""")
        assert selected
        assert poll(page, lambda: "Event " in page_text(page), timeout_s=60), page_text(page)[:500]
        assert poll(page, lambda: page.locator("audio").count() >= 6, timeout_s=60)
        assert poll(page, lambda: page.locator("canvas").count() >= canvases_before + 2 * 6, timeout_s=60)
        assert "residual RMS" in page_text(page)
        # drag the residual slider to its minimum: fewer points
        handle = page.locator(".noUi-handle").first
        handle.focus()
        for _ in range(25):
            handle.press("ArrowLeft")
        assert poll(page, lambda: int(re.search(r"(\d+) of \d+ events shown", page_text(page)).group(1)) < first,
                    timeout_s=30), page_text(page)[:500]
        assert_healthy(page)
