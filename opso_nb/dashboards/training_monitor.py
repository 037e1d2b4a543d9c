"""Training monitor: choose labelled clips and settings, train a CNN in the background, watch it learn."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, Legend
from bokeh.plotting import figure

from opso_nb.dashboards._widgets import FolderBox, failure_text, message_alert, show_message
from opso_nb.failures import failures_frame
from opso_nb.ml.training_run import TrainingSession
from opso_nb.ml.utils import make_tone_dataset
from opso_nb.utils import atomic_write
from opso_nb.workspace import RECORDINGS, Workspace, clip_sources, load_clips, user_data_dirs

#: Milliseconds between polls of the training thread's event queue.
POLL_MS = 300

#: Folder (inside the output folder) that *Make demo data* writes to.
DEMO_FOLDER = "demo_data"

_CURVE_COLUMNS = ("epoch", "train_loss", "valid_loss", "train_map", "valid_map", "valid_auc", "valid_f1")


def _empty_curves() -> dict:
    # new lists every time: ColumnDataSource.stream appends to the lists it was given
    return {column: [] for column in _CURVE_COLUMNS}


class TrainingMonitor(pn.viewable.Viewer):
    """Start/stop CNN training in a background thread and plot loss and metrics per epoch.

    The labelled clips come from a folder of the workspace: one sub-folder per
    class, recordings with Raven tables, or a clip-label CSV
    (:func:`opso_nb.workspace.load_clips`). Training runs in
    :class:`opso_nb.ml.training_run.TrainingSession`; this view only shows its
    settings, polls its event queue every ``POLL_MS`` ms from the server's own
    thread and streams each finished epoch into the curves. Runs are saved under
    the workspace's output folder, ``<output>/<run_name>/best.model``, where the
    prediction explorer looks. A run in which no clip could be read is reported
    as a failure, not as a trained model. Starting a run under the name of an
    earlier one moves the earlier run's files to ``<run_name>-previous-<time>``
    first (see :meth:`TrainingSession.set_aside_previous_run`) and says so.

    Parameters
    ----------
    folder : str or Path, optional
        Folder of labelled clips (default: the workspace's first data folder).
    labels_path : str or Path, optional
        A clip-label CSV to start with (its folder becomes ``folder``).
    runs_folder : str or Path, optional
        Output folder for runs (default: the workspace's output folder).
    workspace : Workspace, optional
        Default :meth:`Workspace.from_env` plus ``folder`` and ``runs_folder``.
    **params
        Any :class:`TrainingSession` setting.
    """

    source = param.Selector(default=None, objects=[], allow_None=True, label="Labelled clips from",
                            doc="One sub-folder per class (each recording labelled with its folder's name), "
                                "recordings with Raven selection tables, or a clip-label CSV "
                                "(file, start_time, end_time, one 0/1 column per class)")

    def __init__(self, folder=None, labels_path=None, runs_folder=None, workspace: Workspace | None = None,
                 **params):
        super().__init__()
        if labels_path is not None:
            folder = Path(labels_path).expanduser().absolute().parent
        if workspace is None:
            workspace = Workspace(data_dirs=user_data_dirs() + ([Path(folder)] if folder else []),
                                  output_dir=runs_folder)
        self.workspace = workspace
        settings = {k: v for k, v in params.items() if k not in ("runs_folder", "labels_path")}
        self.session = TrainingSession(runs_folder=str(self.workspace.output_dir), **settings)
        self.clips: pd.DataFrame | None = None
        self.data_failures = failures_frame()
        start = folder or self.workspace.start_folder(self.workspace.output_dir / DEMO_FOLDER)
        self.folder_box = FolderBox(folder=str(start), workspace=self.workspace)
        self.data_status = pn.pane.Markdown("", sizing_mode="stretch_width")

        self.curves = ColumnDataSource(data=_empty_curves(), name="training_curves")
        self.loss_figure = figure(height=260, sizing_mode="stretch_width", title="loss per epoch",
                                  x_axis_label="epoch", y_axis_label="loss", toolbar_location=None)
        self.metric_figure = figure(height=260, sizing_mode="stretch_width", title="validation metrics per epoch",
                                    x_axis_label="epoch", y_axis_label="score", y_range=(0, 1.05),
                                    toolbar_location=None)
        for fig, series in ((self.loss_figure, [("train_loss", "#1f77b4", "training"),
                                                ("valid_loss", "#ff7f0e", "validation")]),
                            (self.metric_figure, [("valid_map", "#2ca02c", "mAP"),
                                                  ("valid_auc", "#d62728", "macro ROC-AUC"),
                                                  ("valid_f1", "#9467bd", "F1 at 0.5"),
                                                  ("train_map", "#7f7f7f", "training mAP")])):
            items = []
            for column, color, label in series:
                line = fig.line("epoch", column, source=self.curves, color=color, line_width=2)
                dots = fig.scatter("epoch", column, source=self.curves, color=color, size=6)
                items.append((label, [line, dots]))
            fig.add_layout(Legend(items=items, location="top_right"), "right")
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width",
                                               bar_color="info")
        self.status = pn.pane.Markdown("Choose a folder of labelled clips and press **Start training**.",
                                       sizing_mode="stretch_width", css_classes=["training-status"])
        # where an earlier run of the same name went; kept on screen for the whole run
        self.run_note = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["run-note"])
        self.previous_run: Path | None = None
        self.error = message_alert("danger")
        self.start_button = pn.widgets.Button(label="Start training", color="primary")
        self.stop_button = pn.widgets.Button(label="Stop", color="warning", disabled=True)
        self.demo_button = pn.widgets.Button(label="Make demo data", color="light",
                                             description="Write 12 one-second clips of two synthetic tone classes "
                                                         "to the output folder and select them")
        self.start_button.on_click(lambda _e: self.start())
        self.stop_button.on_click(lambda _e: self.stop())
        self.demo_button.on_click(lambda _e: self.make_demo_data())
        self._poller = None
        self._reset_curves = False
        self._epochs_done = 0
        self._epochs_total = 1
        self._n_clips = 0
        self._trained_clips = False
        self.folder_box.param.watch(lambda *_: self._scan(), ["folder"])
        self.param.watch(lambda *_: self._read_clips(), ["source"])
        self.session.param.watch(lambda *_: self._read_clips(), ["sample_duration"])
        self._scan(prefer=Path(labels_path).name if labels_path is not None else None)

    # ------------------------------------------------------------------ data (the library reads it)

    def _scan(self, prefer=None):
        root = self.folder_box.root
        sources = [s for s in clip_sources(root) if s != RECORDINGS] if root is not None else []
        self.param.source.objects = sources  # with events: the page's select must see them
        with param.parameterized.discard_events(self):
            self.source = prefer if prefer in sources else (sources[0] if sources else None)
        self._read_clips()

    def _read_clips(self):
        """Read the chosen clips and say what they are (counts per class, unreadable files with reasons)."""
        root, self.clips, self.data_failures = self.folder_box.root, None, failures_frame()
        if root is None:
            self.data_status.object = (f"**No data:** {self.folder_box.problem}. Type a folder of labelled clips, "
                                       "or press **Make demo data**.")
            return
        if self.source is None:
            self.data_status.object = (
                f"**No labelled clips in `{root}`.** Use a folder with one sub-folder per class, recordings with "
                "Raven selection tables, or a clip-label CSV; or press **Make demo data**.")
            return
        try:
            self.clips, self.data_failures = load_clips(root, self.source, self.session.sample_duration)
        except (ValueError, OSError) as err:
            self.data_status.object = f"**Cannot use these clips:** {err}"
            return
        counts = self.clips.sum().astype(int)
        per_class = ", ".join(f"{c}: {n}" for c, n in counts.items())
        unreadable = failure_text(self.data_failures, "recording")
        self.data_status.object = (f"{len(self.clips)} clips of {len(counts)} classes ({per_class}) from "
                                   f"*{self.source}*." + (f"  \n{unreadable}" if unreadable else ""))

    def make_demo_data(self):
        """Write a tiny synthetic two-class dataset to the output folder and select it."""
        folder = self.workspace.output_dir / DEMO_FOLDER
        make_tone_dataset(folder, n_per_class=6, duration=1.0)
        if self.folder_box.folder == str(folder):
            self.folder_box.param.trigger("folder")  # same text, new content: check and read it again
        else:
            self.folder_box.folder = str(folder)
        if "labels.csv" in self.param.source.objects:
            self.source = "labels.csv"
        self.status.object = f"Demo data written to `{folder}` (12 one-second clips, two tone classes)."

    def _labels_file(self) -> Path:
        """The clip-label CSV to train on: the chosen CSV, or the clips written to the run folder."""
        chosen = self.folder_box.root / self.source
        # a chosen CSV inside a run folder set aside has just moved: then the clips read are written instead
        if self.source.lower().endswith(".csv") and not len(self.data_failures) and chosen.is_file():
            return chosen
        target = self.workspace.output_path(Path(self.session.run_name) / "labels.csv")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as fh:
            self.clips.to_csv(fh)
        return target

    # ------------------------------------------------------------------ actions (library does the work)

    def _clear_view(self):
        # touched from a button callback: the curves are reset by poll(), which holds the document lock
        self._reset_curves = True
        self.progress.value = 0

    def _say_previous_run(self, moved: Path | None) -> None:
        """Keep and say where an earlier run of the same name was moved (``moved``); nothing if none was."""
        self.previous_run = moved
        self.run_note.object = "" if moved is None else (
            f"An earlier run named *{self.session.run_name}* was in the output folder: its files (models, "
            f"metrics) were moved, not deleted, to `{moved}`, so this run's results cannot mix with them. The "
            "prediction explorer lists its models under that folder name.")

    def start(self):
        """Start training (errors in the inputs are shown, not raised)."""
        show_message(self.error, None)
        moved = None
        try:
            self.workspace.output_path(self.session.run_name)  # the run folder must stay in the output folder
            if self.session.preprocessor_config:
                config = Path(self.session.preprocessor_config).expanduser()
                in_output = self.workspace.output_dir / config
                self.session.preprocessor_config = str(self.workspace.readable(
                    in_output if not config.is_absolute() and in_output.is_file() else config, kind="file"))
            self.session.runs_folder = str(self.workspace.output_dir)
            if self.clips is None or not len(self.clips):
                raise ValueError(self.data_status.object.replace("**", "") or "choose labelled clips first")
            # before the labels table is written into the run folder, which the session then keeps
            moved = self.session.set_aside_previous_run()
            self.session.labels_path = str(self._labels_file())
            self.session.start()
            moved = moved or self.session.previous_run
        except (ValueError, RuntimeError, OSError) as err:  # PathRefused is a ValueError
            self._say_previous_run(moved)
            show_message(self.error, f"Cannot start: {err}")
            self.status.object = "Not started: fix the problem named above."
            self._clear_view()
            if self._poller is None and pn.state.curdoc is not None:
                pn.state.add_periodic_callback(self.poll, period=POLL_MS, count=1)  # clears the old curves
            return
        self._say_previous_run(moved)
        self._clear_view()
        self._epochs_done = 0
        self._epochs_total = self.session.epochs
        self._trained_clips = False
        self.start_button.disabled = True
        self.stop_button.disabled = False
        self.status.object = "Starting..."
        if self._poller is None:
            self._poller = pn.state.add_periodic_callback(self.poll, period=POLL_MS)

    def stop(self):
        self.session.stop()
        self.status.object = "Stopping after the current batch..."

    def poll(self):
        """Apply queued training events to the view (runs on the server's thread)."""
        if self._reset_curves:
            self.curves.data = _empty_curves()
            self._reset_curves = False
        for ev in self.session.drain_events():
            self._apply(ev)

    def _failures(self) -> pd.DataFrame:
        model = self.session.model
        failed = getattr(model, "failed_samples", None) if model is not None else None
        return failed if failed is not None else failures_frame()

    def _apply(self, ev):
        kind = ev.get("event")
        if kind == "start":
            self._n_clips = int(ev["n_train"]) + int(ev["n_valid"])
            self.status.object = (f"Training on {ev['n_train']} clips, validating on {ev['n_valid']} "
                                  f"(classes: {', '.join(map(str, ev['classes']))})")
        elif kind == "batch":
            frac = (self._epochs_done + ev["batch"] / max(ev["n_batches"], 1)) / max(self._epochs_total, 1)
            self.progress.value = int(min(100, 100 * frac))
            if np.isfinite(ev["loss"]):
                self._trained_clips = True
            self.status.object = (f"Epoch {ev['epoch']}: batch {ev['batch']}/{ev['n_batches']}, "
                                  f"loss {ev['loss']:.3f}")
        elif kind == "epoch":
            self._epochs_done += 1
            t, v = ev.get("train") or {}, ev.get("valid") or {}
            row = dict(epoch=[ev["epoch"]], train_loss=[t.get("loss", np.nan)], valid_loss=[v.get("loss", np.nan)],
                       train_map=[t.get("map", np.nan)], valid_map=[v.get("map", np.nan)],
                       valid_auc=[v.get("macro_roc_auc", np.nan)], valid_f1=[v.get("f1", np.nan)])
            if np.isfinite(row["train_loss"][0]):
                self._trained_clips = True
            self.curves.stream(row)
            self.progress.value = int(min(100, 100 * self._epochs_done / max(self._epochs_total, 1)))
            best = ev.get("best_score")
            self.status.object = (f"Epoch {ev['epoch']} done: training loss {row['train_loss'][0]:.3f}"
                                  + (f", validation mAP {row['valid_map'][0]:.3f}" if v else "")
                                  + (f" (best {best:.3f} at epoch {ev.get('best_epoch')})" if best is not None else ""))
        elif kind in ("finished", "failed"):
            self.start_button.disabled = False
            self.stop_button.disabled = True
            reasons = failure_text(self._failures(), "clip file")
            if kind == "failed":
                show_message(self.error, f"Training failed: {ev['error']}" + (f"  \n{reasons}" if reasons else ""))
                renamed = ev.get("renamed_best")
                self.status.object = "**Training failed.** No model was saved as best." + (
                    f" The best model of the epochs before the failure was renamed `{renamed}`, so it is not "
                    "taken for a trained model." if renamed else "")
            elif not self._trained_clips:
                # no batch held a readable clip: the weights are the random initial ones
                show_message(self.error, f"Training failed: none of the {self._n_clips} clips could be read, "
                                         f"so nothing was learned.  \n{reasons}")
                self.status.object = "**Training failed.** The saved model learned nothing; do not use it."
            else:
                self.progress.value = 100 if ev["state"] == "done" else self.progress.value
                self.status.object = (f"Training {ev['state']}. Best model saved to "
                                      f"`{Path(ev['model_path']).absolute()}`."
                                      + (f"  \n{reasons}" if reasons else ""))
            if self._poller is not None:
                self._poller.stop()
                self._poller = None

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        s = self.session
        settings = pn.Param(
            s, show_name=False,
            parameters=["preprocessor_config", "architecture", "pretrained", "sample_duration",
                        "image_size", "channels", "epochs", "batch_size", "learning_rate",
                        "freeze_feature_extractor", "single_target", "validation_fraction", "num_workers",
                        "run_name"],
            widgets={"preprocessor_config": {"type": pn.widgets.TextInput, "name": "Preprocessor config",
                                             "description": "JSON saved by the preprocessing tuner (a name in "
                                                            "the output folder, or a path in the data folders); "
                                                            "empty: a default spectrogram"},
                     "run_name": {"type": pn.widgets.TextInput, "name": "Run name",
                                  "description": f"Sub-folder of the output folder {self.workspace.output_dir} "
                                                 "for this run's models and metrics"},
                     "epochs": pn.widgets.IntInput, "batch_size": pn.widgets.IntInput,
                     "learning_rate": pn.widgets.FloatInput, "image_size": pn.widgets.IntInput},
        )
        data = pn.Column("### Labelled clips", self.folder_box.widgets(),
                         pn.Param(self, parameters=["source"], show_name=False), self.demo_button,
                         self.data_status)
        controls = pn.Column(data, "### Settings", settings, pn.Row(self.start_button, self.stop_button), width=330)
        view = pn.Column(self.error, self.status, self.run_note, self.progress,
                         pn.pane.Bokeh(self.loss_figure, sizing_mode="stretch_width"),
                         pn.pane.Bokeh(self.metric_figure, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
        return pn.Row(controls, view, sizing_mode="stretch_width")
