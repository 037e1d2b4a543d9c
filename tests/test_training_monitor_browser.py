"""Training monitor: the background session, the Panel view driven from Python, and the app in Chromium."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from browser import assert_healthy, open_page, poll, serve_app
from opso_nb.ml.cnn import load_model  # noqa: E402
from opso_nb.ml.training_run import TrainingSession, read_labels_table, split_train_validation  # noqa: E402
from opso_nb.ml.utils import make_tone_dataset  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "notebooks" / "apps" / "training_monitor.ipynb"


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    make_tone_dataset(folder, n_per_class=4, duration=1.0)
    return folder / "labels.csv"


def test_labels_table_and_split(labels, tmp_path):
    df = read_labels_table(labels)
    assert list(df.columns) == ["low_tone", "high_tone"] and len(df) == 8
    train, valid = split_train_validation(df, 0.25)
    assert len(valid) == 2 and valid.sum().tolist() == [1, 1]  # one file per class held out
    assert not set(train.index) & set(valid.index)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,start_time,end_time,frog\na.wav,0,1,yes\n")
    with pytest.raises(ValueError, match="bad.csv.*0/1"):
        read_labels_table(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_labels_table(tmp_path / "nope.csv")


def test_session_trains_in_background_and_saves_best(labels, tmp_path):
    session = TrainingSession(labels_path=str(labels), runs_folder=str(tmp_path), run_name="t", epochs=2,
                              batch_size=2, image_size=32)
    session.start()
    session.join(120)
    events = session.drain_events()
    assert session.state == "done", session.error
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [0, 1]
    assert events[-1]["event"] == "finished" and Path(events[-1]["model_path"]) == tmp_path / "t" / "best.model"
    model = load_model(tmp_path / "t" / "best.model")
    assert model.classes == ["low_tone", "high_tone"] and model.sample_shape == (32, 32, 1)
    assert (tmp_path / "t" / "last.model").exists() and (tmp_path / "t" / "metrics.csv").exists()


def test_monitor_view_streams_epochs(labels, tmp_path):
    from opso_nb.dashboards import TrainingMonitor

    app = TrainingMonitor(labels_path=labels, runs_folder=tmp_path, epochs=2, batch_size=2, image_size=32)
    app.__panel__()
    app._poller = "not-used"  # drive polling by hand (no server loop here)
    app.start()
    deadline = time.time() + 120
    while app.session.state == "running" and time.time() < deadline:
        app.poll()
        time.sleep(0.1)
    app.session.join(30)
    app._poller = None
    app.poll()
    assert app.curves.data["epoch"] == [0, 1]
    assert len(app.curves.data["valid_map"]) == 2 and app.progress.value == 100
    assert "Training done" in app.status.object and not app.error.visible
    assert app.start_button.disabled is False


def test_monitor_reports_bad_inputs(tmp_path):
    from opso_nb.dashboards import TrainingMonitor

    app = TrainingMonitor(runs_folder=tmp_path)
    app.session.labels_path = ""
    app.start()
    assert app.error.visible and "labels table" in app.error.object
    app.session.labels_path = str(tmp_path / "missing.csv")
    app.start()
    assert "does not exist" in app.error.object
    app.make_demo_data()
    assert Path(app.session.labels_path).exists() and len(pd.read_csv(app.session.labels_path)) == 12


# ----------------------------------------------------------------------------- browser


@pytest.fixture
def served_app(labels, tmp_path):
    """The monitor served by ``panel serve``, reading ``labels`` and saving runs under tmp_path/runs."""
    runs = tmp_path / "runs"
    env = {"BOKEH_RESOURCES": "inline", "OPSO_NB_LABELS": str(labels), "OPSO_NB_MODELS": str(runs),
           "OMP_NUM_THREADS": "1"}
    with serve_app(APP, "panel", env=env) as url:
        yield url, runs


_CURVE_POINTS = """() => {
  for (const doc of Bokeh.documents) {
    const src = doc.get_model_by_name('training_curves');
    if (src) return src.data.epoch.length;
  }
  return -1;
}"""


@pytest.mark.browser
def test_training_monitor_in_chromium(served_app):
    url, runs = served_app
    with open_page(url, viewport=(1500, 1100)) as page:
        page.get_by_text("press Start training").first.wait_for(timeout=60_000)
        assert page.evaluate(_CURVE_POINTS) == 0
        epochs = page.locator(".bk-input-group", has_text="Epochs").locator("input")
        epochs.fill("1")
        epochs.press("Enter")
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Training done").first.wait_for(timeout=90_000)
        assert poll(page, lambda: page.evaluate(_CURVE_POINTS) >= 1, 15)
        assert page.evaluate(_CURVE_POINTS) == 1
        assert page.get_by_text("Epoch 0 done").count() == 0  # replaced by the final message
        assert (runs / "run1" / "best.model").exists()
        assert load_model(runs / "run1" / "best.model").current_epoch == 1
        assert_healthy(page)
