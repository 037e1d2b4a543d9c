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
        assert poll(page, lambda: "6 samples, tensor [1, 128, 256]" in page_text(page)), page_text(page)[:600]
        assert poll(page, lambda: _grid_src(page) is not None)
        before = _grid_src(page)

        # a smaller tensor: status and the grid image both change
        set_widget_value(page, "Height", 64)
        assert poll(page, lambda: "tensor [1, 64, 256]" in page_text(page), timeout_s=60)
        assert poll(page, lambda: _grid_src(page) not in (None, before), timeout_s=60)

        # new random augmentations
        page.get_by_role("button", name="Re-draw augmentations").click()
        assert poll(page, lambda: "seed 1" in page_text(page), timeout_s=60)

        # export: into the output folder, the absolute path shown; the file loads back with the tuned shape
        out = url.output / "tuned.json"
        set_widget_value(page, "Save as", "tuned.json")
        page.get_by_role("button", name="Export config").click()
        assert poll(page, lambda: f"Saved to {out}" in page_text(page), timeout_s=60)
        from opso_nb.preprocess.preprocessors import load_preprocessor

        assert load_preprocessor(out).out_shape == (64, 256, 1)
        assert_healthy(page)


def test_tuner_without_browser(tmp_path):
    """Callbacks only call the library: a bad setting is reported, not raised; export round-trips."""
    import numpy as np
    import pandas as pd
    import soundfile as sf

    from opso_nb.dashboards.preprocessing_tuner import PreprocessingTuner
    from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor, load_preprocessor
    from opso_nb.workspace import Workspace

    t = np.arange(32000) / 16000
    sf.write(tmp_path / "t.wav", (0.3 * np.sin(2 * np.pi * 2000 * t)).astype("float32"), 16000)
    idx = pd.MultiIndex.from_tuples([(str(tmp_path / "t.wav"), 0.0, 1.0), (str(tmp_path / "t.wav"), 1.0, 2.0)],
                                    names=["file", "start_time", "end_time"])
    clips = pd.DataFrame({"song": [1, 0]}, index=idx)
    out = tmp_path / "out"
    app = PreprocessingTuner(clips=clips, preprocessor=SpectrogramPreprocessor(1.0, height=20, width=30),
                             workspace=Workspace(data_dirs=[tmp_path], output_dir=out))
    assert "2 samples, tensor [1, 20, 30]" in app._status.object
    assert app._grid.object.startswith('<img alt="preprocessed samples"')
    app.preprocessor.pipeline["bandpass"].set(min_f=5000, max_f=4000)
    assert "no sample could be preprocessed" in app._status.object and "max_f > min_f" in app._status.object
    app.preprocessor.pipeline["bandpass"].set(min_f=0)
    app.preprocessor.pipeline["to_tensor"].width = 12
    assert "tensor [1, 20, 12]" in app._status.object
    app._new_seed()
    assert "seed 1" in app._status.object
    path = app.export("cfg.json")
    assert path == out / "cfg.json" and load_preprocessor(path).out_shape == (20, 12, 1)
    app.config_path = "missing_dir/sub/cfg.json"
    (out / "missing_dir").write_text("a file, not a folder")
    app._on_export(None)
    assert app._export_status.object.startswith("**Not saved:**")
    # outside the output folder: refused, nothing created
    app.config_path = str(tmp_path / "elsewhere" / "cfg.json")
    app._on_export(None)
    assert "outside the output folder" in app._export_status.object and not (tmp_path / "elsewhere").exists()


def test_the_grid_has_a_colour_bar_of_the_network_input(tmp_path, monkeypatch):
    import torch

    import opso_nb.dashboards.preprocessing_tuner as tuner
    from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor
    from opso_nb.preprocess.utils import show_tensor_grid
    from opso_nb.workspace import Workspace

    # the library's grid: one bar in tensor units (-1 to 1), arrows only for values beyond
    fig = show_tensor_grid([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)], columns=2)
    bar = fig.axes[-1]
    assert len(fig.axes) == 3 and bar.get_ylabel() == "network input (tensor value)"
    assert bar.get_ylim() == (-1.0, 1.0) and fig.axes[0].images[0].colorbar is None
    assert show_tensor_grid([torch.full((1, 8, 8), 1.5)], colorbar="x").axes[-1].get_ylabel() == "x"
    assert len(show_tensor_grid([torch.zeros(1, 8, 8)], colorbar=False).axes) == 1
    assert len(show_tensor_grid([torch.rand(3, 8, 8)]).axes) == 1  # colour images: no grey scale to show

    # the tuner's grid says what the values mean, following the to_tensor and rescale steps
    drawn = []
    monkeypatch.setattr(tuner, "show_tensor_grid", lambda *a, **k: drawn.append(show_tensor_grid(*a, **k)) or drawn[-1])
    app = tuner.PreprocessingTuner(preprocessor=SpectrogramPreprocessor(2.0, height=16, width=32),
                                   workspace=Workspace(data_dirs=[], output_dir=tmp_path))
    assert drawn[-1].axes[-1].get_ylabel() == "network input (-1 = quiet, 1 = loud)"
    app.preprocessor.pipeline["rescale"].bypass = True  # each change redraws
    assert drawn[-1].axes[-1].get_ylabel() == "network input (0 = quiet, 1 = loud)"
    app.preprocessor.pipeline["to_tensor"].invert = True
    assert drawn[-1].axes[-1].get_ylabel() == "network input (1 = quiet, 0 = loud)"


def test_tuner_on_a_user_folder_reports_unreadable_recordings(tmp_path):
    import shutil

    from opso_nb import sample_data
    from opso_nb.dashboards.preprocessing_tuner import PreprocessingTuner
    from opso_nb.workspace import RAVEN_TABLES, RECORDINGS, Workspace

    wav, table = sample_data.annotated_recording()
    shutil.copy(wav, tmp_path)
    shutil.copy(table, tmp_path)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE")
    app = PreprocessingTuner(folder=tmp_path, workspace=Workspace(data_dirs=[tmp_path], output_dir=tmp_path / "o"))
    assert app.param.source.objects == [RAVEN_TABLES, RECORDINGS] and app.source == RAVEN_TABLES
    assert "5 samples" in app._status.object  # 10 s in 2 s clips, labelled from the table
    app.source = RECORDINGS
    assert "5 samples" in app._status.object
    assert "corrupt.wav" in app._status.object and "not a readable audio file" in app._status.object
    app.folder_box.folder = "/etc"
    assert "outside the data folders" in app._status.object and app._grid.object == ""
