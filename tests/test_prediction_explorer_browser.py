"""The prediction explorer: driven from Python, then served by ``panel serve`` and clicked in headless Chromium."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

pn = pytest.importorskip("panel")

from opso_nb.dashboards import PredictionExplorer  # noqa: E402
from opso_nb.detection import detection_counts  # noqa: E402
from opso_nb.ml.prediction import load_prediction_output  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "notebooks" / "apps" / "prediction_explorer.ipynb"
CHROMIUM = "/usr/bin/chromium"


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
    app.__panel__()
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
    # other class keeps its own threshold
    app.selected_class = "bird"
    assert app.threshold == 0.5
    app.selected_class = "toad"
    assert app.threshold == mid


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


# ----------------------------------------------------------------------------- browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(setup, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium not installed at /usr/bin/chromium")
    models, rec, _ = setup
    out = tmp_path / "served_out"
    port = _free_port()
    panel_exe = Path(sys.executable).with_name("panel")
    proc = subprocess.Popen(
        [str(panel_exe), "serve", str(APP), "--port", str(port), "--address", "127.0.0.1",
         "--allow-websocket-origin", f"127.0.0.1:{port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "BOKEH_RESOURCES": "inline", "OPSO_NB_MODELS": str(models),
             "OPSO_NB_RECORDINGS": str(rec), "OPSO_NB_PREDICTIONS": str(out), "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    try:
        yield f"http://127.0.0.1:{port}/{APP.stem}", out
    finally:
        proc.terminate()
        try:
            log = proc.communicate(timeout=15)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0].decode(errors="replace")
        assert "Traceback" not in log, log[-3000:]


def _detections_cell(page, row: int) -> str:
    """Text of the 'detections' column in the counts table, for the given class row."""
    return page.locator("table tbody tr").nth(row).locator("td").nth(1).inner_text()


@pytest.mark.browser
def test_prediction_explorer_in_chromium(served_app):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    url, out = served_app
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, timeout=60_000)
            page.get_by_text("press Run prediction").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Run prediction").click()
            page.get_by_text("2 file(s) scored").first.wait_for(timeout=60_000)
            assert (out / "manifest.json").exists() and len(list(out.glob("*.parquet"))) == 2
            scores, _ = load_prediction_output(out)
            assert len(scores) == 8

            # the counts table has one row per class; moving the threshold to its ends changes the counts
            page.locator("table tbody tr").nth(1).wait_for(timeout=15_000)
            slider = page.locator("div", has=page.locator(".bk-slider-title", has_text="Threshold")).last
            handle = slider.locator(".noUi-handle")
            assert float(handle.get_attribute("aria-valuemin")) <= float(scores["toad"].min())
            handle.focus()
            handle.press("End")
            page.wait_for_timeout(500)
            deadline = time.time() + 15
            while time.time() < deadline and _detections_cell(page, 0) != "0":
                page.wait_for_timeout(200)
            assert _detections_cell(page, 0) == "0"
            handle.press("Home")
            deadline = time.time() + 15
            while time.time() < deadline and _detections_cell(page, 0) != "8":
                page.wait_for_timeout(200)
            assert _detections_cell(page, 0) == "8"

            page.get_by_role("button", name="Export Raven tables").click()
            page.get_by_text("Raven table(s)").first.wait_for(timeout=15_000)
            assert sorted(p.name for p in (out / "raven").glob("*.txt")) == [
                "night1.Table.1.selections.txt", "night2.Table.1.selections.txt"]
            toad_rows = pd.read_csv(out / "raven" / "night1.Table.1.selections.txt", sep="\t")
            assert set(toad_rows["Annotation"]) <= {"toad", "bird"} and len(toad_rows) >= 1
            assert page.locator("audio").count() >= 1 and page.locator("canvas").count() >= 2
            assert errors == [], errors
        finally:
            browser.close()
