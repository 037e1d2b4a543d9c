"""Prediction explorer: score a folder of recordings with a saved model, then review the scores.

Choose a model file and a folder of recordings, run prediction in the
background (streamed to disk, so a stopped or crashed run resumes where it
left off), then look at score timelines per file, the score histogram and the
top-scoring clips (spectrogram + audio of just that clip), move a threshold
and see how many detections each class would give, and export the detections
as CSV and Raven selection tables.

All science is in :mod:`opso_nb.ml.prediction` and :mod:`opso_nb.detection`;
this module only wires widgets to it.
"""
from __future__ import annotations

import os
import threading
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, Span
from bokeh.palettes import Category10
from bokeh.plotting import figure

from opso_nb import sample_data
from opso_nb.batch.results import read_score_table
from opso_nb.dashboards._widgets import (
    AUDIO_PATTERNS,
    FolderFilePicker,
    audio_player,
    message_alert,
    show_message,
    spectrogram_figure,
)
from opso_nb.detection import (
    detection_counts,
    detections_table,
    top_clips,
    write_detections_csv,
    write_raven_tables,
)
from opso_nb.ml.prediction import PredictionInterrupted, PredictionSettings

MODEL_PATTERNS = ("*.model", "*.pt", "*.pth")


def default_models_folder() -> Path:
    """Where the explorer looks for models: ``$OPSO_NB_MODELS``, else ``./runs``.

    ``runs/<run name>/best.model`` is where the training monitor saves its models;
    sub-folders are searched.
    """
    return Path(os.environ.get("OPSO_NB_MODELS", Path.cwd() / "runs"))


def list_audio_files(folder) -> list[Path]:
    """Audio files directly inside ``folder`` (sorted), by the dashboards' audio patterns."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return []
    found = set()
    for pattern in AUDIO_PATTERNS:
        found.update(p for p in root.glob(pattern) if p.is_file())
    return sorted(found)


def _export_folder(path: Path) -> Path:
    """Where exports of scores read from ``path`` go: the folder holding the runs, or the table's folder."""
    if path.name == "parts" and (path.parent / "settings.json").exists():
        return path.parent.parent
    if (path / "settings.json").exists():
        return path.parent
    if path.is_dir() and any(path.glob("*/settings.json")):
        return path
    return path.parent  # a table, or a plain dataset folder: never write into it


class PredictionExplorer(pn.viewable.Viewer):
    """Run a saved model over a folder of recordings and review its scores.

    Parameters
    ----------
    models_folder : str or Path, optional
        Folder with saved models (default :func:`default_models_folder`).
    folder : str or Path, optional
        Folder of recordings (default ``$OPSO_NB_RECORDINGS`` or the bundled soundscapes).
    output_folder : str or Path, optional
        Where scores are streamed (default ``$OPSO_NB_PREDICTIONS`` or
        ``<folder>/predictions_<model stem>``).
    """

    folder = param.String(default="", doc="Folder of recordings to score")
    output_folder = param.String(default="", doc="Folder for scores (empty: next to the recordings); "
                                                 "Open scores reads it, e.g. the --out of python -m opso_nb.batch")
    selected_class = param.Selector(default=None, objects=[], doc="Class to review")
    threshold = param.Number(default=0.5, softbounds=(0.0, 1.0), step=0.01, doc="Score threshold of this class")
    timeline_file = param.Selector(default=None, objects=[], doc="Recording shown in the timeline")
    n_top = param.Integer(default=4, bounds=(1, 12), doc="Top-scoring clips to show")
    merge_detections = param.Boolean(default=True, doc="Merge overlapping detections into one event on export")

    def __init__(self, models_folder=None, folder=None, output_folder=None, **params):
        super().__init__(**params)
        self.folder = str(folder or os.environ.get("OPSO_NB_RECORDINGS") or sample_data.soundscapes_folder())
        output_folder = output_folder or os.environ.get("OPSO_NB_PREDICTIONS")
        if output_folder:
            self.output_folder = str(output_folder)
        self.model_picker = FolderFilePicker(folder=str(models_folder or default_models_folder()),
                                             patterns=MODEL_PATTERNS, recursive=True)
        best = [f for f in self.model_picker.param.file.objects if Path(f).name == "best.model"]
        if best:  # newest training-monitor run first
            root = Path(self.model_picker.folder)
            self.model_picker.file = max(best, key=lambda f: (root / f).stat().st_mtime)
        self.settings = PredictionSettings(batch_size=8)
        self.scores: pd.DataFrame | None = None
        self.invalid = pd.DataFrame(columns=["file", "start_time", "end_time", "error"])
        self.thresholds: dict[str, float] = {}
        self.state = "idle"  # idle, running, stopping, done, stopped, failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._doc = None

        self.run_button = pn.widgets.Button(label="Run prediction", button_type="primary")
        self.stop_button = pn.widgets.Button(label="Stop", button_type="warning", disabled=True)
        self.open_button = pn.widgets.Button(label="Open scores")
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width")
        self.status = pn.pane.Markdown("Choose a model and a folder, then press **Run prediction**.",
                                       sizing_mode="stretch_width")
        self.error = message_alert("danger")
        self.counts = pn.pane.DataFrame(pd.DataFrame(), index=True, sizing_mode="stretch_width")
        self.export_csv_button = pn.widgets.Button(label="Export detections (CSV)", disabled=True)
        self.export_raven_button = pn.widgets.Button(label="Export Raven tables", disabled=True)
        self.export_status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.top_clips = pn.FlexBox(sizing_mode="stretch_width")

        self._timeline_source = ColumnDataSource(data=dict(t=[], score=[]))
        self.timeline = figure(height=230, sizing_mode="stretch_width", x_axis_label="time in file (s)",
                               y_axis_label="score", tools="pan,xwheel_zoom,box_zoom,reset", title="score timeline")
        self.timeline.line("t", "score", source=self._timeline_source, line_width=1.5, color=Category10[10][0])
        self.timeline.scatter("t", "score", source=self._timeline_source, size=3, color=Category10[10][0])
        self._timeline_threshold = Span(location=0.5, dimension="width", line_color="red", line_dash="dashed")
        self.timeline.add_layout(self._timeline_threshold)

        self._hist_source = ColumnDataSource(data=dict(left=[], right=[], count=[]))
        self.histogram = figure(height=230, sizing_mode="stretch_width", x_axis_label="score",
                                y_axis_label="clips", tools="reset", title="score histogram")
        self.histogram.quad(left="left", right="right", bottom=0, top="count", source=self._hist_source,
                            fill_color="#4a6fa5", line_color="white")
        self._hist_threshold = Span(location=0.5, dimension="height", line_color="red", line_dash="dashed")
        self.histogram.add_layout(self._hist_threshold)

        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.open_button.on_click(lambda _: self.open_scores())
        self.export_csv_button.on_click(lambda _: self.export_csv())
        self.export_raven_button.on_click(lambda _: self.export_raven())
        self.param.watch(self._on_class, ["selected_class"])
        self.param.watch(self._on_threshold, ["threshold"])
        self.param.watch(lambda *_: self._draw_timeline(), ["timeline_file"])
        self.param.watch(lambda *_: self._draw_top_clips(), ["n_top"])

    # ------------------------------------------------------------------ paths
    @property
    def model_path(self) -> Path | None:
        return self.model_picker.path

    @property
    def files(self) -> list[Path]:
        return list_audio_files(self.folder)

    def resolved_output_folder(self) -> Path:
        if self.output_folder:
            return Path(self.output_folder).expanduser()
        stem = self.model_path.stem if self.model_path is not None else "model"
        return Path(self.folder).expanduser() / f"predictions_{stem}"

    # ------------------------------------------------------------------ running

    def _ui(self, fn):
        """Run ``fn`` on the UI's event loop when served; directly in a notebook kernel."""
        doc = self._doc
        if doc is not None and getattr(doc, "session_context", None) is not None and \
                threading.current_thread() is not threading.main_thread():
            doc.add_next_tick_callback(fn)
        else:
            fn()

    def start(self, blocking: bool = False):
        """Start prediction in a background thread (or in this thread with ``blocking=True``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.model_path is None:
            show_message(self.error, f"No model file (*.model) in {self.model_picker.folder} or its sub-folders; train one "
                             "first (training monitor or notebook 04) or choose another folder.")
            return
        files = self.files
        if not files:
            show_message(self.error, f"No audio files in {self.folder}")
            return
        show_message(self.error, None)
        self._stop.clear()
        self._doc = pn.state.curdoc
        self.state = "running"
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.progress.value = 0
        self.status.object = f"Loading model {self.model_path.name} ..."
        args = (self.model_path, files, self.resolved_output_folder())
        if blocking:
            self._run(*args)
        else:
            self._thread = threading.Thread(target=self._run, args=args, daemon=True, name="prediction")
            self._thread.start()

    def stop(self):
        """Ask a running prediction to stop after the current run of clips (finished files are kept)."""
        if self.state == "running":
            self.state = "stopping"
            self._stop.set()
            self.status.object = "Stopping after the current clips ..."

    def wait(self, timeout=None):
        """Block until the background run ends (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, model_path, files, out):
        from opso_nb.ml.cnn import load_model

        def report(done, total, file):
            def update():
                self.progress.max = max(int(total), 1)
                self.progress.value = int(done)
                self.status.object = f"Scored {done} of {total} clips · now **{Path(file).name}**"
            self._ui(update)
            return not self._stop.is_set()

        try:
            model = load_model(model_path)
            model.verbose = 0
            self.settings.predict(model, files, output_path=out, progress=False, progress_callback=report,
                                  return_scores=False)
            final = "done"
        except PredictionInterrupted:
            final = "stopped"
        except Exception as err:  # shown in the app; the run can be retried (it resumes)
            final = "failed"
            message = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            self._ui(lambda: show_message(self.error, f"Prediction failed: {message}"))
        self._ui(lambda: self._finish(final, out, files))

    def _finish(self, final, out, files):
        self.state = final
        self.run_button.disabled, self.stop_button.disabled = False, True
        try:
            self.load_results(out, files)
        except Exception as err:  # e.g. nothing written yet
            show_message(self.error, f"Could not read results in {out}: {err}")
            return
        n_files = 0 if self.scores is None else self.scores.index.get_level_values("file").nunique()
        verb = {"done": "Finished", "stopped": "Stopped (run again to resume)", "failed": "Failed"}[final]
        failures = f" · {len(self.invalid)} failure(s): {', '.join(Path(f).name for f in self.invalid['file'][:3])}" \
            if len(self.invalid) else ""
        self.status.object = f"{verb}: {n_files} file(s) scored, results in `{out}`{failures}"
        if final == "done":
            self.progress.value = self.progress.max

    # ------------------------------------------------------------------ results
    def load_results(self, out=None, files=None):
        """Read scores from ``out`` (default: the output folder) and refresh every view."""
        out = Path(out) if out is not None else self.resolved_output_folder()
        scores, invalid = read_score_table(out, files=[str(f) for f in files] if files else None)
        self.scores, self.invalid = scores, invalid
        classes = list(scores.columns)
        for c in classes:
            self.thresholds.setdefault(c, 0.5)
        self.param.selected_class.objects = classes
        names = list(dict.fromkeys(scores.index.get_level_values("file")))
        self.param.timeline_file.objects = names
        enabled = len(scores) > 0
        self.export_csv_button.disabled = self.export_raven_button.disabled = not enabled
        with param.parameterized.discard_events(self):
            if self.timeline_file not in names:
                self.timeline_file = names[0] if names else None
            if self.selected_class not in classes:
                self.selected_class = classes[0] if classes else None
        self._on_class()

    def open_scores(self):
        """Review the scores already in the output folder (e.g. from a batch run on a cluster), without scoring.

        The output folder may be a run's output folder, one run, its ``parts/``,
        or any Parquet (or CSV) score table (see :func:`opso_nb.batch.read_score_table`).
        Exports then go to the folder holding the runs (or the table).
        """
        where = self.resolved_output_folder()
        try:
            self.load_results(where)
        except Exception as err:  # not a score table: say what was found
            show_message(self.error, f"Could not open scores in {where}: {err}")
            return
        show_message(self.error, None)
        home = _export_folder(where)
        if home != where:
            self.output_folder = str(home)
        n_files = self.scores.index.get_level_values("file").nunique()
        self.status.object = f"Opened the scores of {n_files} file(s) from `{where}`"

    def _class_scores(self) -> np.ndarray:
        if self.scores is None or self.selected_class is None:
            return np.array([])
        s = self.scores[self.selected_class].to_numpy(dtype=float)
        return s[np.isfinite(s)]

    def _on_class(self, *_):
        s = self._class_scores()
        if len(s):
            lo, hi = float(s.min()), float(s.max())
            pad = 0.05 * (hi - lo or 1.0)
            self.param.threshold.softbounds = (min(lo - pad, 0.0 if lo >= 0 else lo - pad), max(hi + pad, 1.0 if hi <= 1 else hi + pad))
            counts, edges = np.histogram(s, bins=30)
            self._hist_source.data = dict(left=edges[:-1], right=edges[1:], count=counts)
        else:
            self._hist_source.data = dict(left=[], right=[], count=[])
        if self.selected_class is not None:
            with param.parameterized.discard_events(self):
                self.threshold = self.thresholds.get(self.selected_class, 0.5)
        self._on_threshold()
        self._draw_timeline()
        self._draw_top_clips()

    def _on_threshold(self, *_):
        if self.selected_class is not None:
            self.thresholds[self.selected_class] = float(self.threshold)
        self._timeline_threshold.location = float(self.threshold)
        self._hist_threshold.location = float(self.threshold)
        self._update_counts()

    def detection_counts(self) -> pd.DataFrame:
        """Detections per class (all files, and the file in the timeline) at the current thresholds."""
        if self.scores is None or len(self.scores) == 0:
            return pd.DataFrame(columns=["threshold", "detections", "clips"])
        table = pd.DataFrame({
            "threshold": pd.Series(self.thresholds)[self.scores.columns],
            "detections": detection_counts(self.scores, self.thresholds),
            "clips": self.scores.notna().sum(),
        })
        if self.timeline_file is not None:
            one = self.scores.xs(self.timeline_file, level="file", drop_level=False)
            table[f"in {Path(self.timeline_file).name}"] = detection_counts(one, self.thresholds)
        table.index.name = "class"
        return table

    def _update_counts(self):
        self.counts.object = self.detection_counts()

    def _draw_timeline(self):
        if self.scores is None or self.timeline_file is None or self.selected_class is None:
            self._timeline_source.data = dict(t=[], score=[])
            return
        one = self.scores.xs(self.timeline_file, level="file")[self.selected_class]
        starts = one.index.get_level_values("start_time").to_numpy(dtype=float)
        ends = one.index.get_level_values("end_time").to_numpy(dtype=float)
        self._timeline_source.data = dict(t=(starts + ends) / 2, score=one.to_numpy(dtype=float))
        self.timeline.title.text = f"{self.selected_class} scores in {Path(self.timeline_file).name} (clip centres)"
        self._update_counts()

    def top_clips_table(self) -> pd.DataFrame:
        """The ``n_top`` highest-scoring, non-overlapping clips of the selected class."""
        if self.scores is None or self.selected_class is None:
            return pd.DataFrame()
        return top_clips(self.scores, self.selected_class, n=self.n_top)

    def _draw_top_clips(self):
        from opso_nb.audio import Audio
        from opso_nb.spectrogram import Spectrogram

        cards = []
        for (file, start, end), row in self.top_clips_table().iterrows():
            title = f"{Path(file).name} {start:.1f}-{end:.1f} s · score {row['score']:.3f}"
            try:
                audio = Audio.from_file(file, offset=float(start), duration=float(end - start),
                                        out_of_bounds_mode="ignore")
                spec = Spectrogram.from_audio(audio)
                fig = spectrogram_figure(spec, height=200, title=title, time_offset=float(start))
                fig.sizing_mode = "fixed"
                fig.width = 340
                cards.append(pn.Column(pn.pane.Bokeh(fig), audio_player(audio, name=title, width=340)))
            except Exception as err:  # a file changed since scoring: say so, keep the others
                cards.append(pn.pane.Alert(f"{title}: {err}", alert_type="warning", width=340))
        self.top_clips.objects = cards

    # ------------------------------------------------------------------ export
    def detections(self) -> pd.DataFrame:
        """Detections at the current per-class thresholds (see :func:`opso_nb.detection.detections_table`)."""
        return detections_table(self.scores, self.thresholds, merge=self.merge_detections)

    def export_csv(self) -> Path | None:
        if self.scores is None:
            return None
        path = write_detections_csv(self.detections(), self.resolved_output_folder() / "detections.csv")
        self.export_status.object = f"Wrote `{path}`"
        return path

    def export_raven(self) -> list[Path]:
        if self.scores is None:
            return []
        files = list(dict.fromkeys(self.scores.index.get_level_values("file")))
        written = write_raven_tables(self.detections(), self.resolved_output_folder() / "raven",
                                     include_empty_files=files)
        self.export_status.object = f"Wrote {len(written)} Raven table(s) to `{self.resolved_output_folder() / 'raven'}`"
        return written

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        controls = pn.Column(
            "### Model and recordings",
            pn.Param(self.model_picker, parameters=["folder", "file"], show_name=False,
                     widgets={"folder": {"type": pn.widgets.TextInput, "name": "Models folder"},
                              "file": {"type": pn.widgets.Select, "name": "Model"}}),
            pn.Param(self, parameters=["folder", "output_folder"], show_name=False,
                     widgets={"folder": pn.widgets.TextInput, "output_folder": pn.widgets.TextInput}),
            pn.Param(self.settings, show_name=False,
                     widgets={"overlap_fraction": pn.widgets.FloatSlider}),
            pn.Row(self.run_button, self.stop_button, self.open_button),
            width=330,
        )
        review = pn.Column(
            pn.Param(self, parameters=["selected_class", "threshold", "timeline_file", "n_top"], show_name=False,
                     widgets={"threshold": pn.widgets.FloatSlider, "n_top": pn.widgets.IntSlider}),
            "**Detections at the current thresholds**",
            self.counts,
            pn.Param(self, parameters=["merge_detections"], show_name=False),
            pn.Row(self.export_csv_button, self.export_raven_button),
            self.export_status,
            width=360,
        )
        view = pn.Column(
            self.error, self.status, self.progress,
            pn.Row(review, pn.Column(pn.pane.Bokeh(self.timeline, sizing_mode="stretch_width"),
                                     pn.pane.Bokeh(self.histogram, sizing_mode="stretch_width"),
                                     sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            "### Top-scoring clips of the selected class",
            self.top_clips,
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, view, sizing_mode="stretch_width")
