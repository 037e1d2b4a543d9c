"""The spectrogram explorer in headless Chromium, served by Voila and by `panel serve`."""
from pathlib import Path

import pytest

from browser import (assert_healthy, canvas_fingerprint, page_text, poll, serve_panel, serve_voila, set_widget_value,
                     wait_for_bokeh_plot)

APP = Path(__file__).resolve().parents[1] / "notebooks" / "apps" / "spectrogram_explorer.ipynb"


@pytest.mark.browser
@pytest.mark.parametrize("server", ["voila", "panel"])
def test_explorer_renders_and_reacts_to_widgets(server, page):
    serve = serve_voila if server == "voila" else serve_panel
    with serve(APP) as url:
        page.goto(url, timeout=120_000)
        status = page.get_by_text("Showing 0.00-10.00 s").first
        status.wait_for(timeout=120_000)
        wait_for_bokeh_plot(page, 2)  # overview and spectrogram
        assert poll(page, lambda: "birds_10s.wav" in page_text(page)
                    and "window 512 samples (16.0 ms, 62.5 Hz per bin" in page_text(page)), page_text(page)[:600]
        page.wait_for_timeout(1000)
        before = canvas_fingerprint(page, 2)

        # a longer FFT window: the status explains the new resolution and the image is redrawn
        set_widget_value(page, "Window samples", 2048)
        assert poll(page, lambda: "window 2048 samples (64.0 ms, 15.6 Hz per bin" in page_text(page))
        assert poll(page, lambda: canvas_fingerprint(page, 2) != before)

        # move the window: type a start time
        set_widget_value(page, "Start time", 2)
        assert poll(page, lambda: "Showing 2.00-10.13 s" in page_text(page))

        # the player holds only the window (a WAV data URL), never the whole file
        src = page.locator("audio").first.get_attribute("src")
        assert src.startswith("data:audio/wav;base64,")
        assert len(src) < 1.5 * (2 * 32000 * 8.2) * 4 / 3
        assert_healthy(page)
