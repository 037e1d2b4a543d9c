"""The prediction explorer: driven from Python, then served by ``panel serve`` and clicked in headless Chromium."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch


from opso_nb.dashboards import PredictionExplorer  # noqa: E402
from opso_nb.detection import detection_counts  # noqa: E402
from opso_nb.ml.prediction import load_prediction_output  # noqa: E402
from opso_nb.store import RunStore  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "notebooks" / "apps" / "prediction_explorer.ipynb"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved (untrained, tiny-input) resnet18, two short recordings and one broken one."""
    from opso_nb.ml.cnn import CNN

    root = tmp_path_factory.mktemp("explorer")
    models, rec = root / "models", root / "recordings"
    models.mkdir()
    rec.mkdir()
    torch.manual_seed(0)
    model = CNN("resnet18", ["toad", "bird"], 2.0, sample_shape=(32, 32, 1), weights=None, device="cpu")
    model.save(models / "tiny.model")
    rng = np.random.default_rng(0)
    t = np.arange(8 * 8000) / 8000
    for i, name in enumerate(["night1", "night2"]):
        tone = np.sin(2 * np.pi * (800 + 600 * i) * t) * (np.sin(2 * np.pi * t / 3) > 0)
        sf.write(rec / f"{name}.wav", (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype("float32"), 8000)
    (rec / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE")
    return models, rec, root


def test_explorer_runs_reviews_and_exports(setup, tmp_path):
    models, rec, _ = setup
    app = PredictionExplorer(models_folder=models, folder=rec, output_folder=tmp_path / "out")
    layout = app.__panel__()
    assert app.model_path.name == "tiny.model"
    app.settings.overlap_fraction = 0.5
    app.start(blocking=True)
    assert app.state == "done", app.error.object
    # 8 s files, 2 s clips every 1 s -> 7 clips each; the broken file is reported
    assert len(app.scores) == 14 and list(app.scores.columns) == ["toad", "bird"]
    assert "2 file(s) scored" in app.status.object and "broken.wav" in app.status.object
    assert app.invalid["file"].map(lambda f: Path(f).name).tolist() == ["broken.wav"]
    stored, _ = load_prediction_output(tmp_path / "out")
    pd.testing.assert_frame_equal(stored, app.scores)

    # threshold per class drives the counts, the lines on the plots and the export
    app.selected_class = "toad"
    mid = float(app.scores["toad"].median())
    app.threshold = mid
    expected = detection_counts(app.scores, {"toad": mid, "bird": 0.5})
    counts = app.counts.object
    assert counts["detections"].to_dict() == expected.to_dict()
    assert app._hist_threshold.location == mid and app._timeline_threshold.location == mid
    assert len(app._timeline_source.data["t"]) == 7
    assert sum(app._hist_source.data["count"]) == 14
    assert len(app.top_clips.objects) == 4
    app.merge_detections = False
    csv = pd.read_csv(app.export_csv())
    assert len(csv) == expected.sum()
    raven = app.export_raven()
    assert sorted(p.name for p in raven) == ["night1.Table.1.selections.txt", "night2.Table.1.selections.txt"]
    # other class keeps its own threshold, and the page's slider shows it
    import panel as pn

    slider = next(w for w in layout.select(pn.widgets.Widget) if w.name == app.param.threshold.label
                  and hasattr(w, "value"))
    app.selected_class = "bird"
    assert app.threshold == slider.value == 0.5
    app.selected_class = "toad"
    assert app.threshold == slider.value == mid


def test_explorer_stop_then_resume(setup, tmp_path):
    models, rec, _ = setup
    app = PredictionExplorer(models_folder=models, folder=rec, output_folder=tmp_path / "out")
    app.settings.batch_size = 1
    seen = []

    # stop as soon as the first progress report arrives: nothing beyond the first clips is scored
    original = app._ui

    def ui(fn):
        original(fn)
        if not seen:
            seen.append(1)
            app.stop()

    app._ui = ui
    app.start(blocking=True)
    assert app.state == "stopped", app.error.object
    assert "run again to resume" in app.status.object
    app._ui = original
    app.start(blocking=True)
    assert app.state == "done" and len(app.scores) == 8  # 4 clips of 2 s per 8 s file


def test_explorer_says_when_no_model(tmp_path):
    app = PredictionExplorer(models_folder=tmp_path, folder=tmp_path)
    app.start()
    assert app.error.visible and "No model file" in app.error.object


def test_explorer_finds_models_in_the_output_folder_and_writes_only_there(setup, tmp_path):
    from opso_nb.workspace import Workspace

    models, rec, _ = setup
    out = tmp_path / "runs"
    ws = Workspace(data_dirs=[rec], output_dir=out)
    app = PredictionExplorer(folder=rec, workspace=ws)
    # empty states say what to do next
    assert "No model yet" in app.models_note.object and "training monitor or notebook 04" in app.models_note.object
    assert str(out) in app.models_note.object
    assert "press Run prediction" in app.timeline.title.text and "press Run prediction" in app.histogram.title.text
    assert "3 recording(s)" in app.recordings_note.object and "broken.wav" in app.recordings_note.object
    # a model trained since (training monitor layout: <output>/<run>/best.model) appears on refresh
    (out / "run7").mkdir(parents=True)
    (out / "run7" / "best.model").write_bytes((models / "tiny.model").read_bytes())
    app._pick_newest_model(rescan=True)
    assert app.model_path == out / "run7" / "best.model"
    assert app.resolved_output_folder() == out / "predictions" / "run7"
    app.output_folder = "../escape"
    app.start(blocking=True)
    assert app.error.visible and "outside the output folder" in app.error.object and not (tmp_path / "escape").exists()
    app.output_folder = ""
    app.start(blocking=True)
    assert app.state == "done"
    assert (RunStore.existing(out / "predictions" / "run7", job="predict").folder / "manifest.json").exists()
    assert not list(rec.glob("predictions*"))  # nothing written next to the recordings
    assert app.export_csv() == out / "predictions" / "run7" / "detections.csv"
    assert str(out / "predictions" / "run7" / "detections.csv") in app.export_status.object
    # a later run whose results cannot be read leaves no stale plots behind
    app._finish("done", tmp_path / "no_results_here", app.files)
    assert app.error.visible and app.scores is None and app._hist_source.data["count"] == []
    assert app.top_clips.objects == [] and app.export_csv_button.disabled


# ----------------------------------------------------------------------------- browser


def _detections(page, row: int) -> str:
    """Text of the 'detections' column of the counts table for one class row ("" if not drawn yet)."""
    cells = page.locator("table tbody tr").nth(row).locator("td")
    return cells.nth(1).inner_text() if cells.count() > 1 else ""


@pytest.mark.browser
@pytest.mark.parametrize("server", ["voila", "panel"])
def test_prediction_explorer_in_chromium(server, setup, tmp_path, page):
    from browser import assert_healthy, page_text, poll, serve_app

    models, rec, _ = setup
    workspace_out = tmp_path / "served_out"
    (workspace_out / "tiny_run").mkdir(parents=True)  # where the training monitor would have saved it
    (workspace_out / "tiny_run" / "best.model").write_bytes((models / "tiny.model").read_bytes())
    out = workspace_out / "predictions" / "tiny_run"
    with serve_app(APP, server, data=[rec], output=workspace_out, env={"OMP_NUM_THREADS": "1"}) as url:
        page.goto(url, timeout=120_000)
        page.get_by_text("model file(s) found").first.wait_for(timeout=120_000)  # the app, not the intro text
        assert poll(page, lambda: "tiny_run/best.model" in page_text(page)), page_text(page)[:600]
        page.get_by_role("button", name="Run prediction").click()
        page.get_by_text("2 file(s) scored").first.wait_for(timeout=90_000)
        assert len(list(out.glob("predict-*/parts/*.parquet"))) == 2  # one run folder, one part per file
        scores, invalid = load_prediction_output(out)
        assert len(scores) == 8 and invalid["file"].map(lambda f: Path(f).name).tolist() == ["broken.wav"]

        # the counts table has one row per class; the threshold slider's ends give all / no detections
        assert poll(page, lambda: _detections(page, 1) != "", 20)
        slider = page.locator("div", has=page.locator(".bk-slider-title", has_text="Threshold")).last
        handle = slider.locator(".noUi-handle")
        assert float(handle.get_attribute("aria-valuemin")) <= float(scores["toad"].min())
        handle.focus()
        handle.press("End")
        assert poll(page, lambda: _detections(page, 0) == "0", 20), _detections(page, 0)
        handle.press("Home")
        assert poll(page, lambda: _detections(page, 0) == "8", 20), _detections(page, 0)

        page.get_by_role("button", name="Export Raven tables").click()
        page.get_by_text("Raven table(s)").first.wait_for(timeout=20_000)
        tables = sorted((out / "raven").glob("*.txt"))
        assert [p.name for p in tables] == ["night1.Table.1.selections.txt", "night2.Table.1.selections.txt"]
        # threshold at its minimum: every clip of the toad class is a detection (merged into events)
        night1 = pd.read_csv(tables[0], sep="\t")
        toad = night1[night1["Annotation"] == "toad"]
        assert toad["Begin Time (s)"].min() == 0.0 and toad["End Time (s)"].max() == 8.0
        assert poll(page, lambda: page.locator("audio").count() >= 1 and page.locator("canvas").count() >= 2)
        assert_healthy(page)
