"""The preprocessing tuner in headless Chromium: change a step's parameter, redraw, export."""
from pathlib import Path

import pytest

from browser import assert_healthy, page_text, poll, serve_panel, serve_voila, set_widget_value

APP = Path(__file__).resolve().parents[1] / "notebooks" / "apps" / "preprocessing_tuner.ipynb"


def _grid_src(page):
    imgs = page.locator("img[src^='data:image/png']")
    return imgs.first.get_attribute("src") if imgs.count() else None


@pytest.mark.browser
@pytest.mark.parametrize("server", ["voila", "panel"])
def test_tuner_redraws_on_parameter_change_and_exports(server, page, tmp_path):
    serve = serve_voila if server == "voila" else serve_panel
    with serve(APP) as url:
        page.goto(url, timeout=120_000)
        page.get_by_text("Render 1:").first.wait_for(timeout=120_000)
        assert "6 samples, tensor [1, 128, 256]" in page_text(page)
        assert poll(page, lambda: _grid_src(page) is not None)
        before = _grid_src(page)

        # a smaller tensor: status and the grid image both change
        set_widget_value(page, "Height", 64)
        assert poll(page, lambda: "tensor [1, 64, 256]" in page_text(page), timeout_s=60)
        assert poll(page, lambda: _grid_src(page) not in (None, before), timeout_s=60)

        # new random augmentations
        page.get_by_role("button", name="Re-draw augmentations").click()
        assert poll(page, lambda: "seed 1" in page_text(page), timeout_s=60)

        # export: the file loads back with the tuned shape
        out = tmp_path / "tuned.json"
        set_widget_value(page, "Config path", str(out))
        page.get_by_role("button", name="Export config").click()
        assert poll(page, lambda: "Saved config" in page_text(page), timeout_s=60)
        from opso_nb.preprocess.preprocessors import load_preprocessor

        assert load_preprocessor(out).out_shape == (64, 256, 1)
        assert_healthy(page)
