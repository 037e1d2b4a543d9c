"""Training monitor: choose data and settings, train a CNN in the background, watch it learn."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, Legend
from bokeh.plotting import figure

from opso_nb.dashboards._widgets import message_alert, show_message
from opso_nb.ml.training_run import TrainingSession

#: Milliseconds between polls of the training thread's event queue.
POLL_MS = 300

_EMPTY_CURVES = dict(epoch=[], train_loss=[], valid_loss=[], train_map=[], valid_map=[], valid_auc=[], valid_f1=[])


class TrainingMonitor(pn.viewable.Viewer):
    """Start/stop CNN training in a background thread and plot loss and metrics per epoch.

    Training runs in :class:`opso_nb.ml.training_run.TrainingSession`; this view only
    shows its settings, polls its event queue every ``POLL_MS`` ms from the server's
    own thread and streams each finished epoch into the curves. The best model is
    saved to ``<runs_folder>/<run_name>/best.model``.

    Parameters
    ----------
    labels_path : str, optional
        CSV of clip labels to start with (default ``$OPSO_NB_LABELS`` if set).
    runs_folder : str, optional
        Where runs are saved (default ``$OPSO_NB_MODELS``, else ``runs``; the
        prediction explorer looks in the same place).
    **params
        Any :class:`TrainingSession` setting.
    """

    def __init__(self, labels_path=None, runs_folder=None, **params):
        super().__init__()
        settings = dict(params)
        # same environment variables as the prediction explorer, so the two apps share a runs folder
        labels_path = labels_path or os.environ.get("OPSO_NB_LABELS")
        runs_folder = runs_folder or os.environ.get("OPSO_NB_MODELS")
        if labels_path:
            settings["labels_path"] = str(labels_path)
        if runs_folder:
            settings["runs_folder"] = str(runs_folder)
        self.session = TrainingSession(**settings)
        self.curves = ColumnDataSource(data=dict(_EMPTY_CURVES), name="training_curves")
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
        self.status = pn.pane.Markdown("Choose a labels table and press **Start training**.",
                                       sizing_mode="stretch_width", css_classes=["training-status"])
        self.error = message_alert("danger")
        self.start_button = pn.widgets.Button(label="Start training", color="primary")
        self.stop_button = pn.widgets.Button(label="Stop", color="warning", disabled=True)
        self.demo_button = pn.widgets.Button(label="Make demo data", color="light")
        self.start_button.on_click(lambda _e: self.start())
        self.stop_button.on_click(lambda _e: self.stop())
        self.demo_button.on_click(lambda _e: self.make_demo_data())
        self._poller = None
        self._reset_curves = False
        self._epochs_done = 0
        self._epochs_total = 1

    # ------------------------------------------------------------------ actions (library does the work)

    def make_demo_data(self):
        """Write a tiny synthetic two-class dataset and select its labels table."""
        from opso_nb.ml.utils import make_tone_dataset

        folder = Path(self.session.runs_folder) / "demo_data"
        make_tone_dataset(folder, n_per_class=6, duration=1.0)
        self.session.labels_path = str(folder / "labels.csv")
        self.status.object = f"Demo data written to `{folder}` (12 one-second clips, two tone classes)."

    def start(self):
        """Start training (errors in the inputs are shown, not raised)."""
        show_message(self.error, None)
        try:
            self.session.start()
        except (ValueError, RuntimeError, OSError) as err:
            show_message(self.error, str(err))
            return
        # bokeh models are only touched from poll(): the periodic callback holds the document lock,
        # a button callback does not always (bokeh then refuses the change)
        self._reset_curves = True
        self._epochs_done = 0
        self._epochs_total = self.session.epochs
        self.progress.value = 0
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
            self.curves.data = dict(_EMPTY_CURVES)
            self._reset_curves = False
        for ev in self.session.drain_events():
            self._apply(ev)

    def _apply(self, ev):
        kind = ev.get("event")
        if kind == "start":
            self.status.object = (f"Training on {ev['n_train']} clips, validating on {ev['n_valid']} "
                                  f"(classes: {', '.join(map(str, ev['classes']))})")
        elif kind == "batch":
            frac = (self._epochs_done + ev["batch"] / max(ev["n_batches"], 1)) / max(self._epochs_total, 1)
            self.progress.value = int(min(100, 100 * frac))
            self.status.object = (f"Epoch {ev['epoch']}: batch {ev['batch']}/{ev['n_batches']}, "
                                  f"loss {ev['loss']:.3f}")
        elif kind == "epoch":
            self._epochs_done += 1
            t, v = ev.get("train") or {}, ev.get("valid") or {}
            row = dict(epoch=[ev["epoch"]], train_loss=[t.get("loss", np.nan)], valid_loss=[v.get("loss", np.nan)],
                       train_map=[t.get("map", np.nan)], valid_map=[v.get("map", np.nan)],
                       valid_auc=[v.get("macro_roc_auc", np.nan)], valid_f1=[v.get("f1", np.nan)])
            self.curves.stream(row)
            self.progress.value = int(min(100, 100 * self._epochs_done / max(self._epochs_total, 1)))
            best = ev.get("best_score")
            self.status.object = (f"Epoch {ev['epoch']} done: training loss {row['train_loss'][0]:.3f}"
                                  + (f", validation mAP {row['valid_map'][0]:.3f}" if v else "")
                                  + (f" (best {best:.3f} at epoch {ev.get('best_epoch')})" if best is not None else ""))
        elif kind in ("finished", "failed"):
            self.start_button.disabled = False
            self.stop_button.disabled = True
            if kind == "failed":
                show_message(self.error, f"Training failed: {ev['error']}")
                self.status.object = "Training failed."
            else:
                self.progress.value = 100 if ev["state"] == "done" else self.progress.value
                failed = f" {ev['n_failed']} clips could not be read (see invalid_samples.log)." if ev["n_failed"] else ""
                self.status.object = (f"Training {ev['state']}. Best model saved to `{ev['model_path']}`.{failed}")
            if self._poller is not None:
                self._poller.stop()
                self._poller = None

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        s = self.session
        settings = pn.Param(
            s, show_name=False,
            parameters=["labels_path", "preprocessor_config", "architecture", "pretrained", "sample_duration",
                        "image_size", "channels", "epochs", "batch_size", "learning_rate",
                        "freeze_feature_extractor", "single_target", "validation_fraction", "num_workers",
                        "runs_folder", "run_name"],
            widgets={"labels_path": pn.widgets.TextInput, "preprocessor_config": pn.widgets.TextInput,
                     "runs_folder": pn.widgets.TextInput, "run_name": pn.widgets.TextInput,
                     "epochs": pn.widgets.IntInput, "batch_size": pn.widgets.IntInput,
                     "learning_rate": pn.widgets.FloatInput, "image_size": pn.widgets.IntInput},
        )
        controls = pn.Column(settings, pn.Row(self.start_button, self.stop_button), self.demo_button, width=330)
        view = pn.Column(self.error, self.status, self.progress,
                         pn.pane.Bokeh(self.loss_figure, sizing_mode="stretch_width"),
                         pn.pane.Bokeh(self.metric_figure, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
        return pn.Row(controls, view, sizing_mode="stretch_width")
