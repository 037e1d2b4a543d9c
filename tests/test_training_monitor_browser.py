"""Training monitor: the background session, the Panel view driven from Python, and the app in Chromium."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from browser import assert_healthy, open_page, page_text, poll, serve_app
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


def _drive(app, timeout=120):
    """Run the monitor's polling by hand (no server loop here) until training ends."""
    app._poller = "not-used"
    app.start()
    deadline = time.time() + timeout
    while app.session.state == "running" and time.time() < deadline:
        app.poll()
        time.sleep(0.1)
    app.session.join(30)
    app._poller = None
    app.poll()


def test_monitor_view_streams_epochs(labels, tmp_path):
    from opso_nb.dashboards import TrainingMonitor

    app = TrainingMonitor(labels_path=labels, runs_folder=tmp_path, epochs=2, batch_size=2, image_size=32)
    app.__panel__()
    _drive(app)
    assert app.curves.data["epoch"] == [0, 1]
    assert len(app.curves.data["valid_map"]) == 2 and app.progress.value == 100
    assert "Training done" in app.status.object and not app.error.visible
    assert app.start_button.disabled is False


def test_demo_data_paths_are_read_back_from_the_labels_table(tmp_path, monkeypatch):
    # the bug: a relative folder wrote cwd-relative paths that the reader joined to the CSV's folder again
    monkeypatch.chdir(tmp_path)
    make_tone_dataset("runs/demo_data", n_per_class=2, duration=0.5)
    files = read_labels_table("runs/demo_data/labels.csv").index.get_level_values("file")
    assert len(files) == 4 and all(Path(f).is_file() for f in files)
    assert all("demo_data/runs" not in f for f in files)


def test_monitor_demo_data_trains_on_real_clips(tmp_path):
    from opso_nb.dashboards import TrainingMonitor
    from opso_nb.workspace import Workspace

    app = TrainingMonitor(workspace=Workspace(data_dirs=[], output_dir=tmp_path), epochs=1, batch_size=4,
                          image_size=32)
    assert "No data" in app.data_status.object and "Make demo data" in app.data_status.object
    app.make_demo_data()
    assert app.folder_box.root == tmp_path / "demo_data" and app.source == "labels.csv"
    assert "12 clips of 2 classes (low_tone: 6, high_tone: 6)" in app.data_status.object
    _drive(app)
    assert app.session.state == "done" and not app.error.visible, app.error.object
    assert np.isfinite(app.curves.data["train_loss"]).all() and len(app.curves.data["epoch"]) == 1
    assert f"Best model saved to `{tmp_path / 'run1' / 'best.model'}`" in app.status.object
    assert "could not be read" not in app.status.object


def test_monitor_reports_a_run_in_which_no_clip_could_be_read_as_a_failure(tmp_path):
    from opso_nb.dashboards import TrainingMonitor

    make_tone_dataset(tmp_path / "data", n_per_class=4, duration=1.0, write_labels=False)
    # every clip lies beyond the end of its 1 s file: the headers are fine, no clip can be read
    rows = [f"{f.name},5.0,6.0,{int('low' in f.name)},{int('high' in f.name)}"
            for f in sorted((tmp_path / "data").glob("*.wav"))]
    (tmp_path / "data" / "late.csv").write_text("file,start_time,end_time,low_tone,high_tone\n" + "\n".join(rows))
    app = TrainingMonitor(labels_path=tmp_path / "data" / "late.csv", runs_folder=tmp_path / "runs", epochs=1,
                          batch_size=4, image_size=32)
    assert "8 clips of 2 classes" in app.data_status.object
    _drive(app)
    assert app.error.visible and "Training failed" in app.error.object
    assert "could not be read" in app.error.object and ".wav" in app.error.object  # reasons, per file
    assert "Best model saved" not in app.status.object and "Training failed" in app.status.object


def test_a_failed_rerun_under_a_used_name_leaves_no_old_best_model(tmp_path):
    from opso_nb.dashboards import PredictionExplorer, TrainingMonitor
    from opso_nb.workspace import Workspace

    make_tone_dataset(tmp_path / "data" / "good", n_per_class=3, duration=1.0)
    make_tone_dataset(tmp_path / "data" / "late", n_per_class=3, duration=1.0, write_labels=False)
    # every clip lies beyond the end of its 1 s file: no clip can be read, the run fails
    rows = [f"{f.name},5.0,6.0,{int('low' in f.name)},{int('high' in f.name)}"
            for f in sorted((tmp_path / "data" / "late").glob("*.wav"))]
    (tmp_path / "data" / "late" / "late.csv").write_text("file,start_time,end_time,low_tone,high_tone\n"
                                                         + "\n".join(rows))
    runs = tmp_path / "runs"
    app = TrainingMonitor(folder=tmp_path / "data" / "good", epochs=1, batch_size=4, image_size=32,
                          workspace=Workspace(data_dirs=[tmp_path / "data"], output_dir=runs))
    _drive(app)
    assert app.session.state == "done" and (runs / "run1" / "best.model").exists()
    assert app.run_note.object == ""  # a first run: nothing was moved
    old_model = load_model(runs / "run1" / "best.model")

    app.folder_box.folder = str(tmp_path / "data" / "late")
    assert app.source == "late.csv"
    _drive(app)  # the same run name, "run1"
    assert app.session.state == "failed" and "No model was saved as best" in app.status.object
    # nothing of the first run is left where the new run's results go
    assert not {"best.model", "last.model", "metrics.csv"} & {p.name for p in (runs / "run1").iterdir()}
    # ... and the first run's model is still on disk, in the folder the page names
    moved = app.previous_run
    assert moved is not None and moved.parent == runs and moved.name.startswith("run1-previous-")
    assert f"`{moved}`" in app.run_note.object and "moved, not deleted" in app.run_note.object
    assert load_model(moved / "best.model").classes == old_model.classes
    assert (moved / "metrics.csv").exists() and (moved / "last.model").exists()
    # the prediction explorer offers no model of the failed run: its newest best.model is the moved one
    explorer = PredictionExplorer(folder=tmp_path / "data" / "good", workspace=app.workspace)
    assert explorer.model_path == moved / "best.model"


def test_session_sets_an_earlier_runs_files_aside(tmp_path, labels):
    run = tmp_path / "t"
    run.mkdir()
    (run / "best.model").write_text("old model")
    (run / "labels.csv").write_text("new labels")
    session = TrainingSession(labels_path=str(labels), runs_folder=str(tmp_path), run_name="t")
    moved = session.set_aside_previous_run(keep=[run / "labels.csv"])  # the new run's own table stays
    assert moved.name.startswith("t-previous-") and (moved / "best.model").read_text() == "old model"
    assert [p.name for p in run.iterdir()] == ["labels.csv"] and not (moved / "labels.csv").exists()
    assert session.set_aside_previous_run(keep=[run / "labels.csv"]) is None  # nothing left to move
    (run / "best.model").write_text("another old model")
    again = session.set_aside_previous_run()
    assert again != moved and again.parent == tmp_path and (again / "best.model").read_text() == "another old model"
    assert (moved / "best.model").read_text() == "old model"  # never overwritten


def test_a_run_failing_after_an_epoch_keeps_no_best_model(labels, tmp_path, monkeypatch):
    from opso_nb.ml.cnn import CNN

    def train_then_fail(self, train_df, validation_df=None, save_path=".", **kwargs):
        self.save(Path(save_path) / "best.model")  # as after a first, good validation
        raise RuntimeError("too many clips of epoch 2 could not be read")

    monkeypatch.setattr(CNN, "train", train_then_fail)
    session = TrainingSession(labels_path=str(labels), runs_folder=str(tmp_path), run_name="t", image_size=32)
    session.start()
    session.join(60)
    event = session.drain_events()[-1]
    assert session.state == "failed" and event["event"] == "failed"
    assert not session.model_path.exists()  # the prediction explorer would take a best.model for a finished run
    assert event["renamed_best"] == str(tmp_path / "t" / TrainingSession.FAILED_BEST_NAME)
    assert load_model(event["renamed_best"]).classes == ["low_tone", "high_tone"]


def test_monitor_trains_from_class_folders_and_refuses_bad_inputs(tmp_path):
    from opso_nb.dashboards import TrainingMonitor
    from opso_nb.workspace import CLASS_FOLDERS

    for cls, freq in (("low", 1000.0), ("high", 3000.0)):
        make_tone_dataset(tmp_path / "data" / cls, n_per_class=3, duration=2.0, classes=(cls,),
                          frequencies=(freq,), write_labels=False)
    (tmp_path / "data" / "high" / "broken.wav").write_bytes(b"junk")
    app = TrainingMonitor(folder=tmp_path / "data", runs_folder=tmp_path / "runs")
    assert app.source == CLASS_FOLDERS
    # 2 s files in 1 s clips: 6 clips per class; the broken file is named with its reason
    assert "12 clips of 2 classes (high: 6, low: 6)" in app.data_status.object
    assert "broken.wav" in app.data_status.object and "not a readable audio file" in app.data_status.object
    app.session.run_name = "../outside"
    app.start()
    assert app.error.visible and "outside the output folder" in app.error.object
    assert not (tmp_path / "outside").exists()
    app.session.run_name = "run1"
    app.folder_box.folder = "/etc"
    app.start()
    assert "outside the data folders" in app.error.object and app.session.state == "idle"
    assert app.clips is None


# ----------------------------------------------------------------------------- browser


#: The Chromium tests run on both servers; one server of each kind serves the module's tests.
BOTH_SERVERS = pytest.mark.parametrize("server", ["voila", "panel"], scope="module")


@pytest.fixture(scope="module")
def served_app(server, tmp_path_factory):
    """The monitor served by ``server`` (one server for the module), on a data folder with a bad table."""
    root = tmp_path_factory.mktemp(f"monitor_{server}")
    make_tone_dataset(root / "data" / "late", n_per_class=3, duration=1.0, write_labels=False)
    rows = [f"{f.name},5.0,6.0,{int('low' in f.name)},{int('high' in f.name)}"
            for f in sorted((root / "data" / "late").glob("*.wav"))]
    (root / "data" / "late" / "labels.csv").write_text("file,start_time,end_time,low_tone,high_tone\n"
                                                       + "\n".join(rows))
    with serve_app(APP, server, data=[root / "data"], output=root / "out",
                   env={"BOKEH_RESOURCES": "inline", "OMP_NUM_THREADS": "1"}) as url:
        yield url


_CURVE_POINTS = """() => {
  if (!window.Bokeh) return -1;  // under Voila, widget text can show before Bokeh has loaded
  for (const doc of window.Bokeh.documents) {
    const src = doc.get_model_by_name('training_curves');
    if (src) return src.data.train_loss.filter(Number.isFinite).length;
  }
  return -1;
}"""


def _wait_text(page, text, timeout_s: float = 30.0) -> None:
    """Wait until the page shows ``text`` (updates may come in separate messages)."""
    assert poll(page, lambda: text in page_text(page), timeout_s), f"no {text!r} in: {page_text(page)[:1500]}"


def _set_number(page, label, value):
    box = page.locator(".bk-input-group", has_text=label).locator("input")
    box.fill(str(value))
    box.press("Enter")


@pytest.mark.browser
@BOTH_SERVERS
def test_demo_run_trains_on_real_clips_in_chromium(served_app):
    with open_page(served_app, viewport=(1500, 1100)) as page:
        page.get_by_text("Run name").first.wait_for(timeout=120_000)  # a widget: the app is up
        assert poll(page, lambda: page.evaluate(_CURVE_POINTS) == 0)  # the plot's source may come a moment later
        page.get_by_role("button", name="Make demo data").click()
        page.get_by_text("12 clips of 2 classes").first.wait_for(timeout=30_000)
        _set_number(page, "Epochs", 1)
        _set_number(page, "Image size", 32)
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Training done").first.wait_for(timeout=90_000)
        assert poll(page, lambda: page.evaluate(_CURVE_POINTS) == 1, 15)  # a finite training loss: real clips
        assert poll(page, lambda: page.get_by_text("Epoch 0 done").count() == 0)  # replaced by the final message
        best = served_app.output / "run1" / "best.model"
        assert best.exists() and load_model(best).current_epoch == 1
        _wait_text(page, str(best))
        assert "could not be read" not in page_text(page)
        assert (served_app.output / "demo_data" / "labels.csv").exists()
        assert_healthy(page)


@pytest.mark.browser
@BOTH_SERVERS
def test_failed_run_says_so_in_chromium(served_app):
    with open_page(served_app, viewport=(1500, 1100)) as page:
        page.get_by_text("Run name").first.wait_for(timeout=120_000)  # a widget: the app is up
        folder = page.get_by_label("Folder", exact=True)
        folder.fill(str(Path(served_app.output).parent / "data" / "late"))
        folder.press("Enter")
        page.get_by_text("6 clips of 2 classes").first.wait_for(timeout=30_000)
        _set_number(page, "Epochs", 1)
        _set_number(page, "Image size", 32)
        # the run name of the demo run (when it ran first on this server): its files must not mix with this run's
        earlier = (served_app.output / "run1" / "best.model").exists()
        _set_number(page, "Run name", "run1")
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Training failed").first.wait_for(timeout=90_000)
        assert poll(page, lambda: "none of the 6 clips could be read" in page_text(page)
                    or "Training failed:" in page_text(page)), page_text(page)[:1500]
        assert "Best model saved" not in page_text(page)
        assert not (served_app.output / "run1" / "best.model").exists()
        if earlier:
            # the note on the moved run is a pane of its own: it may arrive after the status
            pattern = re.compile(r"moved, not deleted, to (\S+run1-previous-[\d-]+)")
            assert poll(page, lambda: pattern.search(page_text(page))), page_text(page)[:1500]
            moved = pattern.search(page_text(page))
            assert (Path(moved.group(1)) / "best.model").exists()
        assert_healthy(page)
