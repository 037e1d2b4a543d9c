"""Annotation viewer: a recording's spectrogram with its labelled boxes, box audio, and clip labels."""
from __future__ import annotations

import contextlib
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.events import Tap
from bokeh.models import ColumnDataSource, FixedTicker, LabelSet, Range1d
from bokeh.plotting import figure

from opso_nb import sample_data
from opso_nb.annotations import (
    AnnotationTableError,
    BoxedAnnotations,
    label_colors,
    load_table,
    pair_audio_and_tables,
)
from opso_nb.audio import Audio, AudioLoadError, audio_info
from opso_nb.dashboards._widgets import (
    FolderBox,
    SpectrogramPlot,
    audio_player,
    clear_player,
    failure_text,
    message_alert,
    name_list,
    set_player_audio,
    show_message,
)
from opso_nb.spectrogram import Spectrogram
from opso_nb.workspace import Workspace, check_recordings

#: Grey drawn for clip-grid cells labelled 0.
_ABSENT = "#e6e6e6"


@lru_cache(maxsize=32)
def _cached_table(table: str, audio: str, mtime: float) -> BoxedAnnotations:
    # keyed on mtime so an edited table is read again; errors="skip": a bad row must
    # not hide the others, the skipped rows are shown in the dashboard
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_table(table, audio_file=audio, errors="skip")


def _box_name(i: int, row) -> str:
    label = "(no label)" if pd.isna(row.annotation) else str(row.annotation)
    return f"{i + 1}: {label} {row.start_time:.2f}-{row.end_time:.2f} s"


class AnnotationViewer(pn.viewable.Viewer):
    """Browse annotated recordings: spectrogram with labelled boxes, box audio, clip-label grid.

    Scroll with *start time* or the previous/next buttons; pick a box to play
    from the list or by clicking it on the spectrogram.

    Recordings are paired with their annotation tables by name
    (:func:`opso_nb.annotations.pair_audio_and_tables`); unpaired files are
    listed. Only the displayed window is decoded and sent to the browser.

    Parameters
    ----------
    folder : str or Path
        Folder with recordings and their Raven (or Audacity) tables; default:
        the workspace's first data folder, else the bundled annotated example.
    recording : str, optional
        Name (stem) of the recording to open first.
    workspace : Workspace, optional
        Folders that may be browsed (default :meth:`Workspace.from_env` plus ``folder``).
    """

    recording = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                               doc="Recording (paired with its table by name)")
    start_time = param.Number(default=0.0, bounds=(0, None), step=1.0, doc="Start of the window (s)")
    window_duration = param.Number(default=10.0, bounds=(1.0, 60.0), step=1.0, doc="Length of the window (s)")
    max_frequency = param.Number(default=10000.0, bounds=(500.0, None), step=500.0, doc="Top of the spectrogram (Hz)")
    classes = param.ListSelector(default=[], objects=[], doc="Classes to show")
    box = param.Selector(default=None, objects=[], allow_None=True, check_on_set=True,
                         doc="Box to listen to (or click it on the spectrogram)")
    bandpass_box_audio = param.Boolean(default=False, doc="Filter the box audio to the box's frequencies")
    clip_duration = param.Number(default=3.0, bounds=(0.1, 60.0), step=0.5, doc="Clip length (s)")
    clip_overlap = param.Number(default=0.0, bounds=(0.0, None), step=0.5, doc="Overlap of consecutive clips (s)")
    min_label_overlap = param.Number(default=0.25, bounds=(0.0, None), step=0.05,
                                     doc="Seconds of a box inside a clip for a label of 1")

    def __init__(self, folder=None, recording=None, workspace: Workspace | None = None, **params):
        super().__init__(**params)
        self.workspace = workspace or Workspace.from_env([folder])
        self.error = message_alert("danger")
        self.warning = message_alert("warning")
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.spectrogram_plot = SpectrogramPlot(height=330)
        fig = self.spectrogram_plot.figure
        self._box_source = ColumnDataSource(data=dict(left=[], right=[], bottom=[], top=[], color=[], label=[], width=[]))
        fig.quad(left="left", right="right", bottom="bottom", top="top", source=self._box_source,
                 fill_color="color", fill_alpha=0.08, line_color="color", line_width="width")
        fig.add_layout(LabelSet(x="left", y="top", text="label", source=self._box_source, text_color="color",
                                text_font_size="11px", y_offset=1, background_fill_color="white",
                                background_fill_alpha=0.6))
        self._grid_source = ColumnDataSource(data=dict(x=[], y=[], w=[], h=[], color=[], value=[], clip=[]))
        self.grid = figure(height=170, sizing_mode="stretch_width", x_range=fig.x_range, y_range=Range1d(-0.5, 0.5),
                           tools="hover", toolbar_location=None, x_axis_label="clips (s): coloured = label 1",
                           tooltips=[("clip", "@clip"), ("label", "@value")])
        self.grid.rect(x="x", y="y", width="w", height="h", source=self._grid_source, fill_color="color",
                       line_color="white")
        self.grid.ygrid.visible = False
        self.labels_table = pn.pane.DataFrame(pd.DataFrame(), sizing_mode="stretch_width", max_height=260,
                                              name="clip labels")
        fig.on_event(Tap, self._on_tap)
        self.previous_button = pn.widgets.Button(label="◀ previous window", width=140)
        self.next_button = pn.widgets.Button(label="next window ▶", width=140)
        self.previous_button.on_click(lambda *_: self.move_window(-1))
        self.next_button.on_click(lambda *_: self.move_window(+1))
        self.player = audio_player(Audio.silence(0.1, 8000), name="box audio")
        self._annotations = BoxedAnnotations()
        self._audio_path = None
        self._duration = 0.0
        self._window_boxes = pd.DataFrame()
        self.pairing = None
        self._unpaired_note = ""
        #: Paired recordings whose header cannot be read (failures table).
        self.failures = pd.DataFrame(columns=["file", "start_time", "end_time", "stage", "error"])
        # While a callback sets several parameters at once, the watchers below stay quiet
        # (the widgets still follow) and the callback redraws once at the end.
        self._quiet = True
        start = folder or self.workspace.start_folder(sample_data.DATA_DIR / "annotated")
        self.folder_box = FolderBox(folder=str(start), workspace=self.workspace)
        self.folder_box.param.watch(lambda *_: self._scan_folder(), ["folder"])
        self._watch(self._load_recording, ["recording"])
        self._watch(self._draw, ["start_time", "window_duration", "max_frequency", "classes"])
        self._watch(self._draw_boxes, ["box"])
        self._watch(self._play_box, ["box", "bandpass_box_audio"])
        self._watch(self._draw_clip_labels, ["clip_duration", "clip_overlap", "min_label_overlap"])
        self._quiet = False
        self._scan_folder(prefer=recording or ("Recording_1_Segment_07-snippet" if folder is None else None))

    @property
    def folder(self) -> str:
        """The folder box's text (set it to open another folder)."""
        return self.folder_box.folder

    @folder.setter
    def folder(self, value) -> None:
        self.folder_box.folder = str(value)

    # ------------------------------------------------------------------ callbacks (no science here)
    def _watch(self, method, names):
        def callback(*_):
            if not self._quiet:
                method()

        self.param.watch(callback, names)

    @contextlib.contextmanager
    def _batch(self):
        previous, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = previous

    def move_window(self, direction: int) -> None:
        """Scroll one window length back (-1) or forward (+1), staying inside the recording."""
        last = max(0.0, self._duration - self.window_duration)
        self.start_time = float(np.clip(self.start_time + direction * self.window_duration, 0, last))

    def _on_tap(self, event):
        """Clicking inside a box picks it for listening (the smallest box wins where they overlap)."""
        if event.x is None or event.y is None or not len(self._window_boxes):
            return
        data = self._box_source.data
        inside = [i for i in range(len(data["left"]))
                  if data["left"][i] <= event.x <= data["right"][i] and data["bottom"][i] <= event.y <= data["top"][i]]
        if inside:
            area = [(data["right"][i] - data["left"][i]) * (data["top"][i] - data["bottom"][i]) for i in inside]
            self.box = self.param.box.objects[inside[int(np.argmin(area))]]

    def _clear(self, message: str, status: str = "", keep_recordings: bool = False) -> None:
        """Show ``message`` as an error and remove everything drawn from the previous recording."""
        show_message(self.error, message)
        show_message(self.warning, None)
        self._audio_path = None
        self._annotations = BoxedAnnotations()
        self._window_boxes = pd.DataFrame()
        self.spectrogram_plot.clear("see the message above")
        self._box_source.data = {k: [] for k in self._box_source.data}
        self._grid_source.data = {k: [] for k in self._grid_source.data}
        self.labels_table.object = pd.DataFrame()
        clear_player(self.player)
        with self._batch():
            if not keep_recordings:
                self.param.recording.objects = []
                self.recording = None
            self.param.box.objects = []
            self.box = None
            self.param.classes.objects = []
            self.classes = []
        self.status.object = status

    def _scan_folder(self, prefer=None):
        folder = self.folder_box.root
        if folder is None:
            self.pairing = None
            self._clear(f"Nothing to show: {self.folder_box.problem}.",
                        "Type a folder that holds recordings and their Raven selection tables, "
                        "or pick one under *Browse*.")
            return
        self.pairing = pair_audio_and_tables(folder)
        stems = list(self.pairing.pairs.index)
        _, self.failures = check_recordings(self.pairing.pairs["audio_file"])
        unpaired = []
        if self.pairing.audio_without_table:
            unpaired.append(f"{len(self.pairing.audio_without_table)} recording(s) without a table: "
                            + name_list(self.pairing.audio_without_table))
        if self.pairing.tables_without_audio:
            unpaired.append(f"{len(self.pairing.tables_without_audio)} table(s) without a recording: "
                            + name_list(self.pairing.tables_without_audio))
        if len(self.pairing.ambiguous):
            unpaired.append("names shared by several files: " + name_list(sorted(set(self.pairing.ambiguous.stem))))
        self._unpaired_note = ("  \n".join(unpaired))
        if not stems:
            self._clear(f"No recording in {folder} has a matching annotation table.",
                        "Each recording needs a Raven selection table (or Audacity label file) with the same "
                        "name, e.g. `site1.wav` and `site1.Table.1.selections.txt`."
                        + (f"  \n{self._unpaired_note}" if self._unpaired_note else ""))
            return
        show_message(self.error, None)
        choice = prefer if prefer in stems else (self.recording if self.recording in stems else stems[0])
        with self._batch():
            self.param.recording.objects = stems
        if self.recording == choice:
            self._load_recording()
        else:
            self.recording = choice

    def _load_recording(self):
        if self.recording is None or self.pairing is None:
            return
        audio_path = self.pairing.pairs.loc[self.recording, "audio_file"]
        table = self.pairing.pairs.loc[self.recording, "annotation_file"]
        problems = []
        try:
            info = audio_info(audio_path)
        except AudioLoadError as err:
            self._clear(str(err), f"**{Path(audio_path).name}** cannot be read; choose another recording.",
                        keep_recordings=True)
            return
        try:
            annotations = _cached_table(table, audio_path, os.path.getmtime(table))
        except AnnotationTableError as err:
            annotations = BoxedAnnotations(audio_files=[audio_path])
            problems.append(f"Table not loaded: {err}")
        for r in annotations.report.itertuples():
            where = f"line {int(r.line)}" if not pd.isna(r.line) else Path(r.annotation_file).name
            problems.append(f"{where}: {r.action}: {r.problem}")
        show_message(self.error, None)
        unreadable = failure_text(self.failures, "recording")
        show_message(self.warning, "  \n".join(([unreadable] if unreadable else []) + problems[:8])
                     + (f"  \n... and {len(problems) - 8} more" if len(problems) > 8 else ""))
        self._annotations = annotations
        self._audio_path = audio_path
        self._info = info
        self._duration = info.duration
        self._colors = label_colors(annotations.unique_labels())
        labels = annotations.unique_labels()
        with self._batch():
            self.param.classes.objects = labels
            self.classes = list(labels)
            self.param.start_time.bounds = (0, max(0.0, info.duration - 0.1))
            self.start_time = 0.0
            self.param.max_frequency.bounds = (500.0, info.sample_rate / 2)
            self.max_frequency = min(10000.0, info.sample_rate / 2)
        self._draw()

    def _draw(self):
        if self._audio_path is None:
            return
        start = float(self.start_time)
        duration = max(0.05, min(self.window_duration, self._duration - start))
        try:
            audio = Audio.from_file(self._audio_path, offset=start, duration=duration, out_of_bounds_mode="ignore")
            spec = Spectrogram.from_audio(audio).bandpass(0, self.max_frequency)
        except (AudioLoadError, ValueError) as err:
            self._clear(str(err), keep_recordings=True)
            return
        self.spectrogram_plot.update(spec, time_offset=start)
        end = start + audio.duration
        shown = self._annotations.subset(self.classes).boxes_overlapping(start, end, self._audio_path)
        self._window_boxes = shown.df
        names = [_box_name(i, r) for i, r in enumerate(shown.df.itertuples())]
        with self._batch():
            self.param.box.objects = names
            self.box = names[0] if names else None
        n_total = len(self._annotations.boxes_overlapping(0, self._duration, self._audio_path))
        self.status.object = (
            f"**{Path(self._audio_path).name}**: {self._duration:.1f} s, {self._info.sample_rate} Hz · "
            f"{n_total} box(es) in the recording, {len(shown)} shown in {start:.1f}-{end:.1f} s"
            + (f" · {len(self._annotations) - n_total} box(es) lie beyond the end of the audio"
               if len(self._annotations) > n_total else "")
            + (f"  \n{self._unpaired_note}" if self._unpaired_note else "")
        )
        self._draw_boxes()
        self._play_box()
        self._draw_clip_labels()

    def _draw_boxes(self):
        df = self._window_boxes
        top_default = float(self.max_frequency)
        selected = self.param.box.objects.index(self.box) if self.box in self.param.box.objects else -1
        self._box_source.data = dict(
            left=df["start_time"].tolist(),
            right=df["end_time"].tolist(),
            bottom=df["low_f"].fillna(0).tolist(),
            top=df["high_f"].fillna(top_default).clip(upper=top_default).tolist(),
            color=[self._colors.get(a, "black") for a in df["annotation"]],
            label=["" if pd.isna(a) else str(a) for a in df["annotation"]],
            width=[4 if i == selected else 2 for i in range(len(df))],
        )

    def _play_box(self):
        if self.box is None or self.box not in self.param.box.objects or self._audio_path is None:
            return
        row = self._window_boxes.iloc[self.param.box.objects.index(self.box)]
        length = max(0.05, min(row.end_time - row.start_time, 60.0))
        try:
            clip = Audio.from_file(self._audio_path, offset=row.start_time, duration=length,
                                   out_of_bounds_mode="ignore")
            if self.bandpass_box_audio and not (pd.isna(row.low_f) or pd.isna(row.high_f)):
                low = max(row.low_f, 1.0)
                high = min(row.high_f, clip.sample_rate / 2 - 1)
                if high > low:
                    clip = clip.bandpass(low, high, order=8)
        except (AudioLoadError, ValueError) as err:
            show_message(self.error, str(err))
            return
        set_player_audio(self.player, clip)

    def _draw_clip_labels(self):
        if self._audio_path is None:
            return
        if self.clip_overlap >= self.clip_duration:
            show_message(self.warning, "clip overlap must be shorter than the clip")
            return
        classes = list(self.classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # boxes past the end are counted in the status line
            labels = self._annotations.one_hot_clip_labels(
                clip_duration=self.clip_duration, clip_overlap=self.clip_overlap,
                min_label_overlap=self.min_label_overlap, min_label_fraction=None, class_subset=classes,
                audio_files=[self._audio_path], full_duration=self._duration,
            )
        start, end = float(self.start_time), float(self.start_time) + float(self.window_duration)
        t0 = labels.index.get_level_values("start_time").to_numpy()
        t1 = labels.index.get_level_values("end_time").to_numpy()
        window = labels[(t0 < end) & (t1 > start)]
        self.labels_table.object = window.reset_index(level="file", drop=True).astype(int)
        # overlapping clips are drawn in staggered sub-rows so each stays visible
        step = self.clip_duration - self.clip_overlap
        n_sub = int(np.ceil(self.clip_duration / step - 1e-9))
        xs, ys, ws, hs, colors, values, names = [], [], [], [], [], [], []
        n_cls = len(classes)
        for k, ((_, a, b), row) in enumerate(window.iterrows()):
            sub = k % n_sub
            for j, cls in enumerate(classes):
                xs.append((a + b) / 2)
                ws.append(b - a)
                # first class on top; sub-rows of one class stacked within its band
                ys.append(n_cls - 1 - j + (sub + 0.5) / n_sub - 0.5)
                hs.append(0.9 / n_sub)
                colors.append(self._colors.get(cls, "black") if row[cls] else _ABSENT)
                values.append(int(row[cls]))
                names.append(f"{a:g}-{b:g} s")
        self.grid.y_range.start, self.grid.y_range.end = -0.5, max(n_cls, 1) - 0.5
        self.grid.yaxis.ticker = FixedTicker(ticks=list(range(n_cls)))
        self.grid.yaxis.major_label_overrides = {n_cls - 1 - j: str(c) for j, c in enumerate(classes)}
        self._grid_source.data = dict(x=xs, y=ys, w=ws, h=hs, color=colors, value=values, clip=names)

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        controls = pn.Column(
            self.folder_box.widgets(),
            pn.Param(self, parameters=["recording", "start_time", "window_duration", "max_frequency"],
                     show_name=False, widgets={"start_time": pn.widgets.FloatInput,
                                               "window_duration": pn.widgets.FloatSlider}),
            pn.Row(self.previous_button, self.next_button),
            pn.pane.Markdown("**Classes**"),
            pn.Param(self, parameters=["classes"], show_name=False,
                     widgets={"classes": pn.widgets.CheckBoxGroup}),
            pn.pane.Markdown("**Listen to a box**"),
            pn.Param(self, parameters=["box", "bandpass_box_audio"], show_name=False),
            self.player,
            pn.pane.Markdown("**Clip labels**"),
            pn.Param(self, parameters=["clip_duration", "clip_overlap", "min_label_overlap"], show_name=False),
            width=320,
        )
        view = pn.Column(
            self.error, self.warning, self.status,
            pn.pane.Bokeh(self.spectrogram_plot.figure, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.grid, sizing_mode="stretch_width"),
            pn.pane.Markdown("Clip labels in the window (1 = class present):"),
            self.labels_table,
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, view, sizing_mode="stretch_width")
