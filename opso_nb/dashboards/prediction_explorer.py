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
from opso_nb.audio import Audio
from opso_nb.dashboards._widgets import (
    run_on_page,
    FolderBox,
    FolderFilePicker,
    audio_player,
    display_name,
    failure_text,
    folder_property,
    message_alert,
    show_message,
    spectrogram_figure,
)
from opso_nb.spectrogram import Spectrogram
from opso_nb.failures import failures_frame
from opso_nb.detection import (
    detection_counts,
    detections_table,
    top_clips,
    write_detections_csv,
    write_raven_tables,
)
from opso_nb.ml.cnn import load_model
from opso_nb.ml.prediction import PredictionInterrupted, PredictionSettings
from opso_nb.store import read_results, utf8_name
from opso_nb.workspace import PathRefused, Workspace, audio_files_in, check_recordings, user_data_dirs

#: Extensions of saved models offered.
MODEL_EXTENSIONS = (".model", ".pt", ".pth")

#: Plot titles before any scores exist: what to do next.
_EMPTY_HINT = "no scores yet: choose a model and recordings, then press Run prediction"


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
        Folder with saved models, searched with its sub-folders (default: the
        workspace's output folder, where notebook 04 and the training monitor
        save ``<run>/best.model``).
    folder : str or Path, optional
        Folder of recordings (default: the workspace's first data folder, else the
        bundled soundscapes).
    output_folder : str or Path, optional
        Where scores are streamed: a name inside the workspace's output folder
        (default ``predictions/<model stem>``). An absolute path given here in
        Python makes its parent the output folder.
    workspace : Workspace, optional
        Default :meth:`Workspace.from_env` plus the folders given.
    """

    output_folder = param.String(default="", label="Scores folder",
                                 doc="Folder for scores and exports, inside the output folder "
                                     "(empty: predictions/<model name>)")
    selected_class = param.Selector(default=None, objects=[], doc="Class to review")
    threshold = param.Number(default=0.5, softbounds=(0.0, 1.0), step=0.01, doc="Score threshold of this class")
    timeline_file = param.Selector(default=None, objects=[], doc="Recording shown in the timeline")
    n_top = param.Integer(default=4, bounds=(1, 12), doc="Top-scoring clips to show")
    merge_detections = param.Boolean(default=True, doc="Merge overlapping detections into one event on export")

    def __init__(self, models_folder=None, folder=None, output_folder=None, workspace: Workspace | None = None,
                 **params):
        super().__init__(**params)
        if workspace is None:
            out = Path(output_folder).expanduser().absolute() if output_folder else None
            trusted = [Path(d) for d in (folder, models_folder) if d]
            workspace = Workspace(data_dirs=user_data_dirs() + trusted, output_dir=out.parent if out else None)
            if out is not None:
                self.output_folder = out.name
        elif output_folder:
            self.output_folder = str(output_folder)
        self.workspace = workspace
        start = folder or self.workspace.start_folder(sample_data.soundscapes_folder())
        self.folder_box = FolderBox(folder=str(start), workspace=self.workspace)
        self.model_picker = FolderFilePicker(folder=str(models_folder or self.workspace.output_dir),
                                             extensions=MODEL_EXTENSIONS, recursive=True, workspace=self.workspace)
        self.settings = PredictionSettings(batch_size=8)
        self.scores: pd.DataFrame | None = None
        self.invalid = failures_frame()
        self.thresholds: dict[str, float] = {}
        self.state = "idle"  # idle, running, stopping, done, stopped, failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._doc = None

        self.run_button = pn.widgets.Button(label="Run prediction", color="primary")
        self.stop_button = pn.widgets.Button(label="Stop", color="warning", disabled=True)
        self.open_button = pn.widgets.Button(label="Open scores", color="light",
                                             description="Review the scores already in the scores folder (e.g. "
                                                         "written by python -m opso_nb.batch), without scoring")
        self.refresh_button = pn.widgets.Button(label="Refresh model list", color="light",
                                                description="Look again for models, e.g. after training one")
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width")
        self.status = pn.pane.Markdown("Choose a model and a folder, then press **Run prediction**.",
                                       sizing_mode="stretch_width")
        self.models_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.recordings_note = pn.pane.Markdown("", sizing_mode="stretch_width")
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
        self.refresh_button.on_click(lambda _: self._pick_newest_model(rescan=True))
        self.model_picker.param.watch(lambda *_: self._describe_models(), ["file", "folder"])
        self.folder_box.param.watch(lambda *_: self._describe_recordings(), ["folder"])
        self.export_csv_button.on_click(lambda _: self.export_csv())
        self.export_raven_button.on_click(lambda _: self.export_raven())
        self.param.watch(self._on_class, ["selected_class"])
        self.param.watch(self._on_threshold, ["threshold"])
        self.param.watch(lambda *_: self._draw_timeline(), ["timeline_file"])
        self.param.watch(lambda *_: self._draw_top_clips(), ["n_top"])
        self._pick_newest_model()
        self._describe_recordings()
        self._show_empty(_EMPTY_HINT)

    # ------------------------------------------------------------------ paths
    folder = folder_property

    @property
    def model_path(self) -> Path | None:
        return self.model_picker.path

    @property
    def files(self) -> list[Path]:
        root = self.folder_box.root
        return [Path(f) for f in audio_files_in(root)] if root is not None else []

    def resolved_output_folder(self) -> Path:
        """Absolute folder for scores and exports, checked to lie inside the output folder.

        Raises
        ------
        PathRefused
        """
        if self.output_folder:
            return self.workspace.output_path(self.output_folder)
        stem = self.model_path.parent.name if self.model_path is not None and self.model_path.stem == "best" \
            else (self.model_path.stem if self.model_path is not None else "model")
        return self.workspace.output_path(Path("predictions") / stem)

    def _pick_newest_model(self, rescan: bool = False):
        """Select the newest ``best.model`` (the last training run), refreshing the list first if asked."""
        if rescan:  # the folder may have appeared since (the first training run creates it)
            self.model_picker._check_folder()
        root = self.model_picker.root
        best = [f for f in self.model_picker.param.file.objects if Path(f).name == "best.model"]
        if best and root is not None:
            self.model_picker.file = max(best, key=lambda f: (root / f).stat().st_mtime)
        self._describe_models()

    def _describe_models(self):
        if self.model_path is not None:
            n = len(self.model_picker.param.file.objects)
            self.models_note.object = f"{n} model file(s) found; scoring with `{self.model_path}`."
        else:
            self.models_note.object = (
                f"**No model yet** in `{self.model_picker.root or self.model_picker.folder}`. Train one with the "
                "training monitor or notebook 04: both save `<run name>/best.model` in the output folder "
                f"`{self.workspace.output_dir}`. Then press **Refresh model list**.")

    def _describe_recordings(self):
        root = self.folder_box.root
        if root is None:
            self.recordings_note.object = f"**No recordings:** {self.folder_box.problem}."
            return
        files = audio_files_in(root)
        _, failures = check_recordings(files)
        unreadable = failure_text(failures, "recording")
        self.recordings_note.object = (f"{len(files)} recording(s) in `{root}`."
                                       + (f"  \n{unreadable} They will be skipped." if unreadable else "")
                                       + ("" if files else " Choose a folder of recordings under *Browse*."))

    def _show_empty(self, hint: str):
        """No scores: empty plots whose titles say what to do next."""
        self.timeline.title.text = f"score timeline ({hint})"
        self.histogram.title.text = f"score histogram ({hint})"

    # ------------------------------------------------------------------ running

    def _ui(self, fn):
        """Run ``fn`` on the UI's event loop when served; directly in a notebook kernel."""
        run_on_page(self._doc, fn)

    def start(self, blocking: bool = False):
        """Start prediction in a background thread (or in this thread with ``blocking=True``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.model_path is None:
            show_message(self.error, f"No model file (*.model) in {self.model_picker.root or self.model_picker.folder} "
                                     "or its sub-folders; train one first (training monitor or notebook 04) or "
                                     "choose another folder.")
            return
        files = self.files
        if not files:
            show_message(self.error, f"No audio files to score: {self.folder_box.problem or self.folder}")
            return
        try:
            out = self.resolved_output_folder()
        except PathRefused as err:
            show_message(self.error, f"Scores folder refused: {err}")
            return
        show_message(self.error, None)
        self._stop.clear()
        self._doc = pn.state.curdoc
        self.state = "running"
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.progress.value = 0
        self.status.object = f"Loading model {self.model_path.name} ..."
        args = (self.model_path, files, out)
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
        def report(done, total, file):
            def update():
                self.progress.max = max(int(total), 1)
                self.progress.value = int(done)
                self.status.object = f"Scored {done} of {total} clips · now **{display_name(file)}**"
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
        except Exception as err:  # e.g. nothing written yet: no scores of an earlier run may stay on screen
            show_message(self.error, f"Could not read results in {out}: {err}")
            self.clear_results("the last run left no readable scores")
            self.status.object = "No scores to show."
            return
        n_files = 0 if self.scores is None else self.scores.index.get_level_values("file").nunique()
        verb = {"done": "Finished", "stopped": "Stopped (run again to resume)", "failed": "Failed"}[final]
        failures = failure_text(self.invalid, "recording")
        if not n_files:
            invalid = self.invalid
            self.clear_results("no scores: see the message above")
            show_message(self.error, f"No scores in `{out}`: no recording could be scored."
                         + (f"  \n{failures}" if failures else ""))
            self.invalid = invalid
            self.status.object = f"{verb}: 0 file(s) scored."
            return
        self.status.object = f"{verb}: {n_files} file(s) scored, results in `{out}`" + (
            f"  \n{failures}" if failures else "")
        if final == "done":
            self.progress.value = self.progress.max

    # ------------------------------------------------------------------ results
    def clear_results(self, hint: str = _EMPTY_HINT):
        """Forget the scores: empty plots, counts and top clips; exports disabled."""
        self.scores = None
        self.invalid = self.invalid.iloc[0:0]
        with param.parameterized.discard_events(self):
            self.param.selected_class.objects = []
            self.selected_class = None
            self.param.timeline_file.objects = []
            self.timeline_file = None
        self._timeline_source.data = dict(t=[], score=[])
        self._hist_source.data = dict(left=[], right=[], count=[])
        self.counts.object = self.detection_counts()
        self.top_clips.objects = []
        self.export_csv_button.disabled = self.export_raven_button.disabled = True
        self._show_empty(hint)

    def load_results(self, out=None, files=None):
        """Read scores from ``out`` (default: the output folder) and refresh every view."""
        out = Path(out) if out is not None else self.resolved_output_folder()
        scores, invalid = read_results(out, files=[str(f) for f in files] if files else None)
        self.scores, self.invalid = scores, invalid
        classes = list(scores.columns)
        for c in classes:
            self.thresholds.setdefault(c, 0.5)
        self.param.selected_class.objects = classes
        names = list(dict.fromkeys(scores.index.get_level_values("file")))
        # shown as valid UTF-8 (what the page can carry), selected by the exact name
        shown = {utf8_name(str(n)): n for n in names}
        self.param.timeline_file.objects = shown if len(shown) == len(names) else names
        enabled = len(scores) > 0
        self.export_csv_button.disabled = self.export_raven_button.disabled = not enabled
        with param.parameterized.discard_events(self):
            if self.timeline_file not in names:
                self.timeline_file = names[0] if names else None
            if self.selected_class not in classes:
                self.selected_class = classes[0] if classes else None
        self._on_class()

    def open_scores(self):
        """Review the scores already in the scores folder (e.g. from a batch run on a cluster), without scoring.

        The scores folder may hold runs (an ``--out`` of ``python -m opso_nb.batch``),
        be one run or its ``parts/``, or be a folder of Parquet score tables
        (see :func:`opso_nb.store.read_results`). Exports then go to the folder
        holding the runs, never into a run.
        """
        try:
            where = self.resolved_output_folder()
            self.load_results(where)
        except PathRefused as err:
            show_message(self.error, f"Scores folder refused: {err}")
            return
        except (OSError, ValueError, KeyError) as err:  # not a score table: say what was found
            show_message(self.error, f"Could not open scores in {where}: {err}")
            return
        show_message(self.error, None)
        note = ""
        home = _export_folder(where)
        if home != where:
            try:
                self.output_folder = str(self.workspace.output_path(home))
            except PathRefused:  # never write into a run: no exports rather than a damaged dataset
                self.export_csv_button.disabled = self.export_raven_button.disabled = True
                note = (f"  \nExports are off: the folder holding these scores (`{home}`) is not inside the "
                        f"output folder `{self.workspace.output_dir}`.")
        n_files = self.scores.index.get_level_values("file").nunique()
        self.state = "done"
        self.status.object = f"Opened the scores of {n_files} file(s) from `{where}`" + note

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
            self.histogram.title.text = f"{self.selected_class} score histogram (all files)"
        else:
            self._hist_source.data = dict(left=[], right=[], count=[])
        if self.selected_class is not None:
            # with events: the page's slider must show this class's threshold (its watcher only recounts)
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
            table[f"in {display_name(self.timeline_file)}"] = detection_counts(one, self.thresholds)
        table.index.name = "class"
        return table

    def _update_counts(self):
        self.counts.object = self.detection_counts()

    def _draw_timeline(self):
        if self.scores is None or self.timeline_file is None or self.selected_class is None:
            self._timeline_source.data = dict(t=[], score=[])
            self._show_empty(_EMPTY_HINT)
            return
        one = self.scores.xs(self.timeline_file, level="file")[self.selected_class]
        starts = one.index.get_level_values("start_time").to_numpy(dtype=float)
        ends = one.index.get_level_values("end_time").to_numpy(dtype=float)
        self._timeline_source.data = dict(t=(starts + ends) / 2, score=one.to_numpy(dtype=float))
        self.timeline.title.text = f"{self.selected_class} scores in {display_name(self.timeline_file)} (clip centres)"
        self._update_counts()

    def top_clips_table(self) -> pd.DataFrame:
        """The ``n_top`` highest-scoring, non-overlapping clips of the selected class."""
        if self.scores is None or self.selected_class is None:
            return pd.DataFrame()
        return top_clips(self.scores, self.selected_class, n=self.n_top)

    def _draw_top_clips(self):
        cards = []
        for (file, start, end), row in self.top_clips_table().iterrows():
            title = f"{display_name(file)} {start:.1f}-{end:.1f} s · score {row['score']:.3f}"
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

    def _export_folder(self) -> Path | None:
        try:
            return self.resolved_output_folder()
        except PathRefused as err:
            self.export_status.object = f"**Not exported:** {err}"
            return None

    def export_csv(self) -> Path | None:
        """Write the detections as CSV in the scores folder; returns its absolute path."""
        folder = self._export_folder() if self.scores is not None else None
        if folder is None:
            return None
        path = write_detections_csv(self.detections(), folder / "detections.csv")
        self.export_status.object = f"Wrote `{Path(path).absolute()}`"
        return path

    def export_raven(self) -> list[Path]:
        """Write one Raven selection table per recording in ``<scores folder>/raven``."""
        folder = self._export_folder() if self.scores is not None else None
        if folder is None:
            return []
        files = list(dict.fromkeys(self.scores.index.get_level_values("file")))
        written = write_raven_tables(self.detections(), folder / "raven", include_empty_files=files)
        self.export_status.object = f"Wrote {len(written)} Raven table(s) to `{folder / 'raven'}`"
        return written

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        controls = pn.Column(
            "### Model",
            self.model_picker.widgets(
                ("folder", "file"),
                folder={"type": pn.widgets.TextInput, "name": "Models folder",
                        "description": "Folder searched (with its sub-folders) for saved models; "
                                       "by default the output folder, where training saves them"},
                file={"type": pn.widgets.Select, "name": "Model"}),
            self.refresh_button, self.models_note,
            "### Recordings",
            self.folder_box.widgets(), self.recordings_note,
            pn.Param(self, parameters=["output_folder"], show_name=False,
                     widgets={"output_folder": pn.widgets.TextInput}),
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
