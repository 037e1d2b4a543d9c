"""Agile modelling: find a call by example, label it, train a small classifier; and which species BirdNET hears.

Choose a folder of recordings (by default the bundled toad recordings) and embed
every 3 s clip with BirdNET in the background (progress bar; stored under the
output folder, so a stopped run resumes). Pick a query clip on the spectrogram
(click it, or choose it in the list), see the clips that sound most like it as
spectrogram tiles with their own players, and mark them present or absent:
every answer is saved at once in the label store shared with clip review. Train
a shallow classifier, see its scores and the next clips worth labelling, and
save the classifier and a detections table. The second tab lists the species
BirdNET detects in the folder, per species and per file, optionally only those
expected at a place and week.

All science is in :mod:`opso_nb.ml.birdnet` and :mod:`opso_nb.ml.agile`; this
module only wires widgets to them.
"""
from __future__ import annotations

import hashlib
import threading
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.events import Tap
from bokeh.models import BoxAnnotation, ColumnDataSource
from bokeh.plotting import figure

from opso_nb import sample_data
from opso_nb.audio import Audio, AudioLoadError
from opso_nb.dashboards._widgets import (
    run_on_page,
    FolderBox,
    SaveBox,
    SpectrogramPlot,
    audio_player,
    bokeh_callback,
    clear_player,
    failure_text,
    message_alert,
    set_player_audio,
    show_message,
)
from opso_nb.detection import detections_table, write_detections_csv
from opso_nb.failures import failures_frame
from opso_nb.ml.agile import EmbeddingSearch, ShallowClassifier, load_embeddings, search_by_example, training_labels
from opso_nb.ml.birdnet import BirdNET, confidence_detections, summarize_detections
from opso_nb.ml.prediction import PredictionInterrupted
from opso_nb.review import LabelStore
from opso_nb.spectrogram import Spectrogram
from opso_nb.workspace import PathRefused, Workspace, audio_files_in, check_recordings, user_data_dirs

#: Seconds of context drawn on each side of the query clip.
QUERY_CONTEXT = 6.0
#: Pixels of one clip tile.
TILE_WIDTH, TILE_HEIGHT = 270, 170


def _clip_name(clip) -> str:
    file, start, end = clip
    return f"{Path(str(file)).name} {float(start):g}–{float(end):g} s"


class AgileModeling(pn.viewable.Viewer):
    """Search a folder by example, label matches, train a shallow classifier on BirdNET embeddings; list species.

    Parameters
    ----------
    folder : str or Path, optional
        Folder of recordings (default: the workspace's first data folder, else the
        bundled toad recordings).
    output_folder : str or Path, optional
        The output folder (default: the workspace's). Embeddings go to
        ``agile/<folder name>-<id>/embeddings``, labels to
        ``agile/<folder name>-<id>/labels__<reviewer>.jsonl`` inside it.
    workspace : Workspace, optional
        Default :meth:`Workspace.from_env` plus the folder given.
    model : BirdNET, optional
        The embedding model (default ``BirdNET()``; its licence notice is shown once when it loads).
    """

    class_name = param.String(default="call", label="Call name",
                              doc="Name of the call you are labelling (a class of the label store)")
    reviewer = param.String(default="reviewer", label="Reviewer", doc="Your name, saved with every label")
    query_file = param.Selector(default=None, objects=[], allow_None=True, label="Query recording",
                                doc="Recording that holds an example of the call")
    query_clip = param.Selector(default=None, objects=[], allow_None=True, label="Query clip",
                                doc="The example clip (or click the spectrogram)")
    n_matches = param.Integer(default=8, bounds=(1, 24), label="Matches", doc="Clips shown per search")
    n_suggestions = param.Integer(default=3, bounds=(1, 12), label="Suggestions per kind",
                                  doc="Clips suggested after training: this many top scores and this many "
                                      "uncertain ones")
    threshold = param.Number(default=0.5, bounds=(0.0, 1.0), step=0.01, label="Detection threshold",
                             doc="Classifier score above which a clip is a detection (for the exported table)")

    def __init__(self, folder=None, output_folder=None, workspace: Workspace | None = None,
                 model: BirdNET | None = None, **params):
        super().__init__(**params)
        if workspace is None:
            trusted = [Path(folder)] if folder else []
            workspace = Workspace(data_dirs=user_data_dirs() + trusted, output_dir=output_folder)
        self.workspace = workspace
        self.model = model if model is not None else BirdNET()
        #: Location, week and confidence filters of the species view (a BirdNET used for its settings only).
        self.species_filter = BirdNET()
        self.classifier_settings = ShallowClassifier()
        self.embeddings: pd.DataFrame | None = None
        self.preds: pd.DataFrame | None = None
        self.failures = failures_frame()
        self.store: LabelStore | None = None
        self.searcher: EmbeddingSearch | None = None
        self.matches: pd.DataFrame | None = None
        self.classifier: ShallowClassifier | None = None
        self.scores: pd.DataFrame | None = None
        self.suggestions: pd.DataFrame | None = None
        self.species_detections: pd.DataFrame | None = None
        self.state = "idle"  # idle, running, stopping, done, stopped, failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._doc = None
        self._tile_labels: dict = {}  # clip -> Markdown pane showing its label

        # ------------------------------------------------------------ widgets
        self.error = message_alert("danger")
        self.notes = message_alert("warning")
        self.folder_box = FolderBox(folder=str(folder or self.workspace.start_folder(sample_data.toads_folder())),
                                    workspace=self.workspace)
        self.recordings_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.embed_button = pn.widgets.Button(label="Embed recordings", color="primary",
                                              description="Compute BirdNET embeddings of every 3 s clip "
                                                          "(resumes a stopped run)")
        self.stop_button = pn.widgets.Button(label="Stop", color="warning", disabled=True)
        self.progress = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width")
        self.status = pn.pane.Markdown("Choose a folder, then press **Embed recordings**.",
                                       sizing_mode="stretch_width")
        self.query_plot = SpectrogramPlot(height=240)
        self._query_box = BoxAnnotation(fill_color="#d62728", fill_alpha=0.15, line_color="#d62728", line_alpha=0.8)
        self.query_plot.figure.add_layout(self._query_box)
        self.query_plot.figure.on_event(Tap, self._on_tap)
        self.query_player = audio_player(Audio.silence(0.1, 8000), name="query clip", sizing_mode="stretch_width")
        self.search_button = pn.widgets.Button(label="Find similar clips", color="primary", disabled=True)
        self.matches_box = pn.FlexBox(sizing_mode="stretch_width")
        self.labels_text = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.train_button = pn.widgets.Button(label="Train classifier", color="success", disabled=True)
        self.train_status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self._hist = ColumnDataSource(data=dict(left=[], right=[], count=[]))
        self.histogram = figure(height=200, sizing_mode="stretch_width", x_axis_label="classifier score",
                                y_axis_label="clips", tools="reset", title="scores of every clip")
        self.histogram.quad(left="left", right="right", bottom=0, top="count", source=self._hist,
                            fill_color="#4a6fa5", line_color="white")
        self.per_file = pn.pane.DataFrame(pd.DataFrame(), index=False, sizing_mode="stretch_width")
        self.suggestions_box = pn.FlexBox(sizing_mode="stretch_width")
        self.save_classifier = SaveBox(self.workspace, self._write_classifier, "agile/call_classifier.json",
                                       label="Save classifier")
        self.save_detections = SaveBox(self.workspace, self._write_detections, "agile/call_detections.csv",
                                       label="Save detections table")
        self.species_status = pn.pane.Markdown("Embed the recordings to see which species BirdNET detects.",
                                               sizing_mode="stretch_width")
        self.species_table = pn.pane.DataFrame(pd.DataFrame(), index=False, sizing_mode="stretch_width")
        self.species_per_file = pn.pane.DataFrame(pd.DataFrame(), index=False, sizing_mode="stretch_width")
        self.save_species = SaveBox(self.workspace, self._write_species, "agile/birdnet_detections.csv",
                                    label="Save BirdNET detections")

        # ------------------------------------------------------------ events
        self.embed_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.search_button.on_click(lambda _: self.search())
        self.train_button.on_click(lambda _: self.train())
        self.folder_box.param.watch(lambda *_: self._on_folder(), ["folder"])
        self.param.watch(lambda *_: self._on_query_file(), ["query_file"])
        self.param.watch(lambda *_: self._show_query(), ["query_clip"])
        self.param.watch(lambda *_: self._open_store(), ["class_name", "reviewer"])
        self.param.watch(lambda *_: self._update_scores_view(), ["threshold"])
        self.species_filter.param.watch(lambda *_: self.update_species(),
                                        ["latitude", "longitude", "week", "location_threshold", "min_confidence"])
        self._on_folder()

    # ------------------------------------------------------------------ folder and paths
    @property
    def files(self) -> list[str]:
        root = self.folder_box.root
        return audio_files_in(root) if root is not None else []

    def run_folder(self) -> Path:
        """This folder's work folder under the output folder: ``agile/<folder name>-<id>`` (created)."""
        root = self.folder_box.root
        key = f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"
        return self.workspace.prepare_output(Path("agile") / key, folder=True)

    @bokeh_callback
    def _on_folder(self):
        """A new folder: forget everything computed, describe its recordings, reuse stored embeddings if any."""
        self._clear_results()
        root = self.folder_box.root
        if root is None:
            self.recordings_note.object = f"**No recordings:** {self.folder_box.problem}."
            self.embed_button.disabled = True
            return
        files = self.files
        _, unreadable = check_recordings(files)
        problems = failure_text(unreadable, "recording")
        self.recordings_note.object = (f"{len(files)} recording(s) in `{root}`."
                                       + (f"  \n{problems} They will be skipped." if problems else "")
                                       + ("" if files else " Choose a folder of recordings under *Browse*."))
        self.embed_button.disabled = not files
        self._open_store()
        try:
            stored = self.run_folder() / "embeddings"
            if stored.is_dir() and any(stored.iterdir()):
                self.load_results()
        except (OSError, PathRefused, FileNotFoundError, ValueError):
            pass  # nothing usable stored yet: the user embeds

    def _open_store(self):
        """The label store of this folder and reviewer (created on the first label)."""
        if self.folder_box.root is None or not self.reviewer.strip():
            self.store = None
        else:
            try:
                self.store = LabelStore(self.run_folder() / f"labels__{self.reviewer.strip()}.jsonl",
                                        reviewer=self.reviewer.strip())
            except (OSError, PathRefused) as err:
                self.store = None
                show_message(self.error, f"The label store cannot be opened: {err}")
        self.save_classifier.path = f"agile/{self.class_name}_classifier.json"
        self.save_detections.path = f"agile/{self.class_name}_detections.csv"
        self._update_label_counts()
        self._refresh_tile_labels()

    # ------------------------------------------------------------------ embedding (background)
    def _ui(self, fn):
        """Run ``fn`` on the page's event loop when served from another thread; directly otherwise."""
        run_on_page(self._doc, fn)

    def start(self, blocking: bool = False):
        """Embed the folder's recordings (in a background thread, or here with ``blocking=True``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        files = self.files
        if not files:
            show_message(self.error, f"No recordings to embed: {self.folder_box.problem or self.folder_box.folder}")
            return
        try:
            out = self.run_folder() / "embeddings"
        except PathRefused as err:
            show_message(self.error, f"Output folder refused: {err}")
            return
        show_message(self.error, None)
        self._stop.clear()
        self._doc = pn.state.curdoc
        self.state = "running"
        self.embed_button.disabled, self.stop_button.disabled = True, False
        self.progress.value = 0
        self.status.object = "Loading BirdNET ..."
        if blocking:
            self._run(files, out)
        else:
            self._thread = threading.Thread(target=self._run, args=(files, out), daemon=True, name="embedding")
            self._thread.start()

    def stop(self):
        """Stop embedding after the current clips (finished files are kept: embedding again resumes)."""
        if self.state == "running":
            self.state = "stopping"
            self._stop.set()
            self.status.object = "Stopping after the current clips ..."

    def wait(self, timeout=None):
        """Block until the background run ends (scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, files, out):
        def report(done, total, file):
            def update():
                self.progress.max, self.progress.value = max(int(total), 1), int(done)
                self.status.object = f"Embedded {done} of {total} clips · now **{Path(file).name}**"
            self._ui(update)
            return not self._stop.is_set()

        final = "done"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # failures are read back from the store and shown
                self.model.embed(files, return_preds=True, output_path=out, progress=False,
                                 progress_callback=report, return_scores=False)
        except PredictionInterrupted:
            final = "stopped"
        except Exception as err:  # shown in the page; embedding again resumes
            final = "failed"
            message = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            self._ui(lambda: show_message(self.error, f"Embedding failed: {message}"))
        self._ui(lambda: self._finish(final))

    def _finish(self, final):
        self.state = final
        self.embed_button.disabled, self.stop_button.disabled = False, True
        try:
            self.load_results()
        except (OSError, ValueError, FileNotFoundError) as err:
            self._clear_results()
            show_message(self.error, f"No embeddings to use: {err}")
            return
        if final == "done":
            self.progress.value = self.progress.max

    @bokeh_callback
    def load_results(self):
        """Read this folder's stored embeddings and BirdNET scores, and refresh every view."""
        files = self.files
        embeddings, preds, failures = load_embeddings(self.run_folder() / "embeddings", files=files,
                                                      return_preds=True)
        self.embeddings, self.preds, self.failures = embeddings, preds, failures
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.searcher = EmbeddingSearch(embeddings) if len(embeddings) else None
        show_message(self.notes, "  \n".join(dict.fromkeys(str(w.message) for w in caught)))
        embedded = list(dict.fromkeys(embeddings.index.get_level_values("file")))
        problems = failure_text(failures, "recording")
        verb = {"stopped": "Stopped (embed again to resume)", "failed": "Failed"}.get(self.state, "Embedded")
        self.status.object = (f"{verb}: {len(embeddings)} clips of {len(embedded)} recording(s), stored in "
                              f"`{self.run_folder() / 'embeddings'}`." + (f"  \n{problems}" if problems else ""))
        self.search_button.disabled = self.searcher is None
        # choices change with events on (the page's select must see them); the value's watcher redraws
        self.param.query_file.objects = {Path(f).name: f for f in embedded}
        keep = self.query_file if self.query_file in embedded else (embedded[0] if embedded else None)
        if keep == self.query_file:
            self._on_query_file()
        else:
            self.query_file = keep
        self._update_label_counts()
        self.update_species()

    # ------------------------------------------------------------------ the query
    def _clips_of(self, file) -> list:
        if self.embeddings is None or file is None:
            return []
        index = self.embeddings.index
        return [key for key in index if key[0] == file]

    def _on_query_file(self):
        clips = self._clips_of(self.query_file)
        self.param.query_clip.objects = {f"{s:g}–{e:g} s": (f, s, e) for f, s, e in clips}
        first = clips[0] if clips else None
        if first == self.query_clip:
            self._show_query()
        else:
            self.query_clip = first

    def _on_tap(self, event):
        """A click on the query spectrogram picks the clip of the query recording that holds that time."""
        if event.x is None:
            return
        holding = [c for c in self._clips_of(self.query_file) if c[1] <= event.x < c[2]]
        if holding:
            # of overlapping clips, the one whose centre is nearest the click
            self.query_clip = min(holding, key=lambda c: abs((c[1] + c[2]) / 2 - event.x))

    @bokeh_callback
    def _show_query(self):
        clip = self.query_clip
        if clip is None:
            self.query_plot.clear("no clip to show: embed the recordings first")
            clear_player(self.query_player)
            return
        file, start, end = clip
        try:
            first = max(0.0, float(start) - QUERY_CONTEXT)
            shown = Audio.from_file(file, offset=first, duration=float(end) + QUERY_CONTEXT - first,
                                    out_of_bounds_mode="ignore", load_metadata=False)
            clip_audio = Audio.from_file(file, offset=float(start), duration=float(end) - float(start),
                                         out_of_bounds_mode="ignore", load_metadata=False)
        except (AudioLoadError, OSError, ValueError) as err:
            self.query_plot.clear(f"{Path(file).name} cannot be read")
            clear_player(self.query_player)
            show_message(self.error, f"The query clip cannot be read: {err}")
            return
        self.query_plot.update(Spectrogram.from_audio(shown), time_offset=first)
        self.query_plot.figure.title.text = f"{Path(file).name}: query clip {start:g}–{end:g} s (red); click to pick another"
        self._query_box.left, self._query_box.right = float(start), float(end)
        set_player_audio(self.query_player, clip_audio)

    # ------------------------------------------------------------------ searching and labelling
    @bokeh_callback
    def search(self):
        """Show the clips most like the query clip, as tiles to label."""
        if self.searcher is None or self.query_clip is None:
            return
        self.matches = search_by_example(self.embeddings, self.query_clip, k=self.n_matches, searcher=self.searcher)
        captions = [f"#{r} · similarity {s:.2f}" for r, s in zip(self.matches["rank"], self.matches["similarity"])]
        self.matches_box.objects = self._tiles(self.matches.index, captions)

    def _tiles(self, clips, captions) -> list:
        self._tile_labels = {k: v for k, v in self._tile_labels.items() if k in set(self._shown_clips())}
        return [self._tile(tuple(clip), caption) for clip, caption in zip(clips, captions)]

    def _shown_clips(self) -> list:
        shown = [] if self.matches is None else list(self.matches.index)
        return shown + ([] if self.suggestions is None else list(self.suggestions.index))

    def _tile(self, clip, caption) -> pn.Column:
        """One clip: its spectrogram, a player of just that clip, present / absent buttons and its label."""
        file, start, end = clip
        title = f"**{_clip_name(clip)}**  \n{caption}"
        label = pn.pane.Markdown(self._label_text(clip), margin=(0, 5))
        self._tile_labels[clip] = label
        present = pn.widgets.Button(label="Present", color="success", width=90)
        absent = pn.widgets.Button(label="Absent", color="danger", width=90)
        present.on_click(lambda _: self.label(clip, "present"))
        absent.on_click(lambda _: self.label(clip, "absent"))
        try:
            audio = Audio.from_file(file, offset=float(start), duration=float(end) - float(start),
                                    out_of_bounds_mode="ignore", load_metadata=False)
            plot = SpectrogramPlot(height=TILE_HEIGHT, width=TILE_WIDTH)
            plot.update(Spectrogram.from_audio(audio), time_offset=float(start))
            plot.figure.toolbar_location = None
            plot.figure.axis.major_label_text_font_size = "8pt"
            view = [pn.pane.Bokeh(plot.figure), audio_player(audio, name=_clip_name(clip), width=TILE_WIDTH)]
        except (AudioLoadError, OSError, ValueError) as err:  # the file changed since embedding
            view = [pn.pane.Alert(f"cannot be read: {err}", alert_type="warning", width=TILE_WIDTH)]
        return pn.Column(pn.pane.Markdown(title, margin=(0, 5)), *view, pn.Row(present, absent), label,
                         width=TILE_WIDTH + 20, styles={"border": "1px solid #ddd", "border-radius": "4px"})

    def _label_text(self, clip) -> str:
        if self.store is None:
            return ""
        labels = self.store.labels(self.class_name)
        value = labels["label"].get(clip) if clip in labels.index else None
        return f"labelled **{value}**" if value else "not labelled"

    def label(self, clip, value: str):
        """Save ``value`` ("present" or "absent") for ``clip`` and the current call name."""
        if self.store is None:
            show_message(self.error, "Labels cannot be saved: type a reviewer name.")
            return
        try:
            self.store.add(tuple(clip), self.class_name, value)
        except OSError as err:  # disk full, folder removed: the user must know the label is not saved
            show_message(self.error, f"**Label not saved:** {err}")
            return
        if tuple(clip) in self._tile_labels:
            self._tile_labels[tuple(clip)].object = f"labelled **{value}**"
        self._update_label_counts()

    def _refresh_tile_labels(self):
        for clip, pane in self._tile_labels.items():
            pane.object = self._label_text(clip)

    def _labelled(self) -> pd.DataFrame:
        """Labels of the current call for the embedded clips."""
        if self.store is None or self.embeddings is None:
            return pd.DataFrame(columns=["label"])
        labels = self.store.labels(self.class_name)
        return labels[labels.index.isin(self.embeddings.index)]

    def _update_label_counts(self):
        labels = self._labelled()
        counts = labels["label"].value_counts() if len(labels) else pd.Series(dtype=int)
        present, absent = int(counts.get("present", 0)), int(counts.get("absent", 0))
        where = f" (saved in `{self.store.path}`)" if self.store is not None else ""
        self.labels_text.object = (f"**{self.class_name}**: {present} present, {absent} absent{where}."
                                   + ("" if present and absent else
                                      " Label at least one present and one absent clip to train."))
        self.train_button.disabled = not (present and absent)

    # ------------------------------------------------------------------ training
    @bokeh_callback
    def train(self):
        """Train the shallow classifier on this call's labels; score every clip; suggest what to label next."""
        if self.embeddings is None or self.store is None:
            return
        show_message(self.error, None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # labels of other folders are left out on purpose
                labels = training_labels(self.store, self.embeddings, classes=[self.class_name])
            settings = {k: v for k, v in self.classifier_settings.param.values().items() if k != "name"}
            classifier = ShallowClassifier(**settings).fit(self.embeddings, labels)
        except (ValueError, KeyError) as err:
            show_message(self.error, f"**Not trained:** {err}")
            return
        self.classifier = classifier
        self.scores = classifier.predict(self.embeddings)
        self.train_status.object = (f"Trained on {classifier.n_train} labelled clips of **{self.class_name}** "
                                    f"({int(labels[self.class_name].sum())} present); scores of all "
                                    f"{len(self.scores)} clips below.")
        self.suggest()
        self._update_scores_view()

    def suggest(self):
        """Tiles of the clips to label next: the top scores and the most uncertain, not yet labelled."""
        if self.classifier is None:
            return
        labelled = self._labelled().index
        top = self.classifier.suggest(self.scores, self.class_name, labelled=labelled, n=self.n_suggestions,
                                      mode="top")
        unsure = self.classifier.suggest(self.scores, self.class_name, labelled=labelled.append(top.index),
                                         n=self.n_suggestions, mode="uncertain")
        self.suggestions = pd.concat([top.assign(kind="top score"), unsure.assign(kind="uncertain")])
        captions = [f"{k} · score {s:.2f}" for k, s in zip(self.suggestions["kind"], self.suggestions["score"])]
        self.suggestions_box.objects = self._tiles(self.suggestions.index, captions)

    def detections(self) -> pd.DataFrame:
        """The classifier's detections at :attr:`threshold` (overlapping clips merged into events)."""
        if self.scores is None:
            raise ValueError("train the classifier first")
        return detections_table(self.scores[[self.class_name]], self.threshold, merge=True)

    @bokeh_callback
    def _update_scores_view(self):
        if self.scores is None:
            self._hist.data = dict(left=[], right=[], count=[])
            self.per_file.object = pd.DataFrame()
            return
        values = self.scores[self.class_name].to_numpy(dtype=float)
        counts, edges = np.histogram(values[np.isfinite(values)], bins=20, range=(0.0, 1.0))
        self._hist.data = dict(left=edges[:-1], right=edges[1:], count=counts)
        by_file = self.scores[self.class_name].groupby(level="file", sort=False)
        table = pd.DataFrame({"best score": by_file.max(), f"clips at or above {self.threshold:g}":
                              by_file.apply(lambda s: int((s >= self.threshold).sum()))})
        table.index = [Path(str(f)).name for f in table.index]
        self.per_file.object = table.rename_axis("recording").reset_index().round(3)

    def _write_classifier(self, path) -> Path:
        if self.classifier is None:
            raise ValueError("train the classifier first")
        return self.classifier.save(path)

    def _write_detections(self, path) -> Path:
        return write_detections_csv(self.detections(), path)

    # ------------------------------------------------------------------ species BirdNET hears
    @bokeh_callback
    def update_species(self):
        """BirdNET's detections in the folder with the current filters: tables per species and per file."""
        if self.preds is None or self.preds.shape[1] == 0:
            return
        try:
            species = [s for s in self.species_filter.species() if s in self.preds.columns]
        except ValueError as err:
            self.species_status.object = f"**No species:** {err}"
            self.species_table.object = self.species_per_file.object = pd.DataFrame()
            self.species_detections = None
            return
        found = confidence_detections(self.preds[species], self.species_filter.min_confidence)
        self.species_detections = found
        where = ("" if self.species_filter.latitude is None else
                 f" expected at {self.species_filter.latitude:g}, {self.species_filter.longitude:g}"
                 f" (week {self.species_filter.week})")
        self.species_status.object = (
            f"{found['class'].nunique()} species above a confidence of {self.species_filter.min_confidence:g} "
            f"among {len(species)} species{where}. Raw confidences are not probabilities: check clips by "
            "listening and calibrate a threshold (clip review) before reporting them.")
        per_species = summarize_detections(found)
        self.species_table.object = per_species[["common_name", "scientific_name", "detections", "files",
                                                 "max_confidence"]].round(3)
        per_file = summarize_detections(found, by="file")
        per_file["file"] = per_file["file"].map(lambda f: Path(str(f)).name)
        self.species_per_file.object = per_file[["file", "common_name", "detections", "max_confidence",
                                                 "first_time", "last_time"]].round(3)

    def _write_species(self, path) -> Path:
        if self.species_detections is None:
            raise ValueError("embed the recordings first")
        return write_detections_csv(self.species_detections, path)

    # ------------------------------------------------------------------ clearing
    @bokeh_callback
    def _clear_results(self):
        """Forget the folder's results: nothing stale stays on the page."""
        self.embeddings = self.preds = self.searcher = self.matches = None
        self.classifier = self.scores = self.suggestions = self.species_detections = None
        self.failures = failures_frame()
        self._tile_labels = {}
        self.param.query_file.objects = self.param.query_clip.objects = []
        self.query_file = self.query_clip = None  # with events, so the page's selects empty too
        self.query_plot.clear("embed the recordings first")
        clear_player(self.query_player)
        self.matches_box.objects = self.suggestions_box.objects = []
        self.search_button.disabled = self.train_button.disabled = True
        self.train_status.object = ""
        self.status.object = "Press **Embed recordings** (a stopped run resumes)."
        self.progress.value = 0
        self.species_status.object = "Embed the recordings to see which species BirdNET detects."
        self.species_table.object = self.species_per_file.object = pd.DataFrame()
        self._update_scores_view()
        show_message(self.error, None)
        show_message(self.notes, None)

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        controls = pn.Column(
            pn.pane.Markdown("### Recordings"),
            self.folder_box.widgets(folder={"type": pn.widgets.TextInput, "name": "Recordings folder"}),
            self.recordings_note,
            pn.Row(self.embed_button, self.stop_button),
            pn.pane.Markdown("### Call and reviewer"),
            pn.Param(self, parameters=["class_name", "reviewer"], show_name=False,
                     widgets={"class_name": pn.widgets.TextInput, "reviewer": pn.widgets.TextInput}),
            pn.pane.Markdown("### Search and suggestions"),
            pn.Param(self, parameters=["n_matches", "n_suggestions"], show_name=False),
            pn.pane.Markdown("### Classifier"),
            pn.Param(self.classifier_settings, parameters=["hidden_units", "regularization"], show_name=False),
            width=330,
        )
        find = pn.Column(
            pn.pane.Markdown("#### 1. Pick an example of the call"),
            pn.Param(self, parameters=["query_file", "query_clip"], show_name=False, default_layout=pn.Row),
            pn.pane.Bokeh(self.query_plot.figure, sizing_mode="stretch_width"), self.query_player,
            self.search_button,
            pn.pane.Markdown("#### 2. Label the clips that sound alike"), self.labels_text, self.matches_box,
            pn.pane.Markdown("#### 3. Train, check the scores, label the suggestions"), self.train_button,
            self.train_status, pn.Row(pn.pane.Bokeh(self.histogram, sizing_mode="stretch_width"), self.per_file,
                                      sizing_mode="stretch_width"),
            self.suggestions_box,
            pn.pane.Markdown("#### 4. Save"),
            pn.Param(self, parameters=["threshold"], show_name=False, widgets={"threshold": pn.widgets.FloatSlider}),
            pn.Row(self.save_classifier.panel(), self.save_detections.panel(), sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        species = pn.Column(
            pn.pane.Markdown("BirdNET's own species scores, from the same pass as the embeddings. Set a place and "
                             "a week to keep only the species expected there (BirdNET's location model)."),
            pn.Param(self.species_filter, parameters=["latitude", "longitude", "week", "location_threshold",
                                                      "min_confidence"], show_name=False, default_layout=pn.Row,
                     # empty boxes for "no location": a slider cannot show None
                     widgets={"latitude": pn.widgets.FloatInput, "longitude": pn.widgets.FloatInput}),
            self.species_status,
            pn.pane.Markdown("**Per species**"), self.species_table,
            pn.pane.Markdown("**Per recording**"), self.species_per_file,
            self.save_species.panel(),
            sizing_mode="stretch_width",
        )
        view = pn.Column(self.error, self.notes, self.status, self.progress,
                         pn.Tabs(("Find and label a call", find), ("Species in this folder", species),
                                 dynamic=False, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")
        return pn.Row(controls, view, sizing_mode="stretch_width")
