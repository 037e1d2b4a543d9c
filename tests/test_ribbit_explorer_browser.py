"""The RIBBIT explorer in headless Chromium: sliders re-score, the curve redraws, parameters save to JSON."""
import json
import re
from pathlib import Path

import pytest

from browser import assert_healthy, canvas_fingerprint, page_text, poll, serve_panel, serve_voila, set_widget_value

APP = Path(__file__).resolve().parents[1] / "notebooks" / "apps" / "ribbit_explorer.ipynb"
SCORE_PLOT = 1  # bokeh plots in page order: spectrogram, score curve, band levels, PSD


def highest_score(page):
    m = re.search(r"highest score (\S+) in clip", page_text(page))
    return m.group(1) if m else None


def test_empty_file_clears_the_old_scores_and_saves_stay_in_the_output_folder(tmp_path):
    import shutil

    from opso_nb import sample_data
    from opso_nb.dashboards import RibbitExplorer
    from opso_nb.workspace import Workspace

    folder, out = tmp_path / "toads", tmp_path / "out"
    folder.mkdir()
    shutil.copy(sample_data.toads_folder() / "gpt3.mp3", folder)
    (folder / "empty.mp3").write_bytes(b"")
    app = RibbitExplorer(folder=folder, file="gpt3.mp3", workspace=Workspace(data_dirs=[folder], output_dir=out))
    assert len(app._score_source.data["t"]) == 5 and not app.spectrogram_plot.cleared
    assert "empty.mp3" in app.warning.object and "file is empty (0 bytes)" in app.warning.object
    app.picker.file = "empty.mp3"
    assert app.error.visible and "empty.mp3" in app.error.object and "file is empty" in app.error.object
    assert app.spectrogram_plot.cleared and app._score_source.data["t"] == [] and app._psd_source.data["psd"] == []
    assert len(app.player.object) < 2000 and "cannot be read" in app.status.object
    # saving: only inside the output folder, and the absolute path is shown
    for bad in ("/nonexistent_opso_nb_dir/x.json", "../../../x.json"):
        app.save_box.path = bad
        assert app.save() is None and "Not saved" in app.save_box.status.object
    assert not Path("/nonexistent_opso_nb_dir").exists() and not out.exists()
    app.save_box.path = "toad/params.json"
    assert app.save() == out / "toad" / "params.json"
    assert f"Saved to `{out / 'toad' / 'params.json'}`" in app.save_box.status.object


@pytest.mark.browser
@pytest.mark.parametrize("server", ["voila", "panel"])
def test_slider_changes_score_curve_and_save_writes_json(server, page, tmp_path):
    serve = serve_voila if server == "voila" else serve_panel
    with serve(APP) as url:
        page.goto(url, timeout=120_000)
        page.get_by_text("highest score").first.wait_for(timeout=120_000)
        assert poll(page, lambda: all(s in page_text(page) for s in ("gpt3.mp3", "5 clips",
                                                                      "Pulse rate (pulses/s): 8 .. 20"))), \
            page_text(page)[:600]
        before_score = highest_score(page)
        assert before_score == "0.00293"  # the OpenSoundscape tutorial's 29.31 / 10,000 for this file (tests/test_compat_ribbit.py)
        assert poll(page, lambda: page.locator("canvas").count() >= 8, 90)
        page.wait_for_timeout(1000)
        before = canvas_fingerprint(page, 2 * SCORE_PLOT)

        # drag the lower pulse-rate handle from 8 to 12 pulses/s with the keyboard (step 0.5)
        handles = page.locator("[role=slider]")
        lower = next(handles.nth(i) for i in range(handles.count())
                     if handles.nth(i).get_attribute("aria-valuenow") == "8.0")
        lower.focus()
        for _ in range(8):
            lower.press("ArrowRight")
        assert poll(page, lambda: "Pulse rate (pulses/s): 12 .. 20" in page_text(page))
        assert poll(page, lambda: highest_score(page) not in (None, before_score)), page_text(page)[-600:]
        assert poll(page, lambda: canvas_fingerprint(page, 2 * SCORE_PLOT) != before)

        # pick another clip for the detail view
        set_widget_value(page, "Selected clip", 2)
        assert poll(page, lambda: "Clip 3: 4.00-6.00 s" in page_text(page))

        # a save path outside the output folder is refused and creates nothing
        escape = tmp_path / "escape" / "x.json"
        set_widget_value(page, "Save as", str(escape))
        page.get_by_role("button", name="Save parameters").click()
        assert poll(page, lambda: "Not saved" in page_text(page) and "outside the output folder" in page_text(page))
        assert not escape.parent.exists()

        # save the parameter set where the notebook can read it: inside the output folder
        target = url.output / "toad.json"
        set_widget_value(page, "Save as", "toad.json")
        page.get_by_role("button", name="Save parameters").click()
        assert poll(page, lambda: target.exists())
        saved = json.loads(target.read_text())
        assert saved["pulse_rate_range"] == [12.0, 20.0]
        assert saved["signal_band"] == [1900.0, 2400.0]
        assert poll(page, lambda: f"Saved to {target}" in page_text(page))

        # the player holds only the selected clip (2 s WAV), never the whole file
        src = page.locator("audio").first.get_attribute("src")
        assert src.startswith("data:audio/wav;base64,")
        assert len(src) < 1.5 * (2 * 48000 * 2) * 4 / 3
        assert_healthy(page)
