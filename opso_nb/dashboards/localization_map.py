"""Localization map: localized calls and recorders on a map in metres, with filters and per-event review."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.palettes import Category10
from bokeh.plotting import figure

from opso_nb.dashboards._widgets import (
    DrawOnce,
    FolderBox,
    SpectrogramPlot,
    audio_player,
    bokeh_callback,
    failure_text,
    help_widget,
    message_alert,
    name_list,
    show_message,
)
from opso_nb.localization import (
    LocalizationSettings,
    SynchronizedRecorderArray,
    demo_array,
    events_to_df,
    filter_events,
)
from opso_nb.spectrogram import Spectrogram
from opso_nb.workspace import PathRefused, Workspace, array_tables, read_array_folder

#: Shown in the detections selector when every clip is a candidate event.
EVERY_CLIP = "(every clip: no detections table)"

#: Sub-folder of the workspace's output folder that holds the simulated demo array's recordings.
DEMO_FOLDER = "localization_demo"
_DEMO_NOTE = "Showing the **simulated demo array**"

#: Plain-language labels and tooltips of the library's localization settings.
SETTING_HELP = {
    "max_receiver_dist": ("Recorders within (m)", "Recorders farther than this from the reference recorder do "
                                                  "not join its events"),
    "min_n_receivers": ("Fewest recorders per call", "A call heard by fewer recorders is not localized"),
    "localization_algorithm": ("Position solver", "gillette and soundfinder solve the delay equations directly; "
                                                  "least_squares fits them iteratively"),
    "cc_filter": ("Cross-correlation weighting",
                  "How recordings are compared to measure delays. 'phat' (phase transform) keeps only the timing "
                  "information of every frequency, which gives sharp peaks in echoing forests; 'cc' is plain "
                  "cross-correlation."),
}


@functools.lru_cache(maxsize=4)
def _demo(folder: Path) -> dict:
    """The simulated demo array, written to ``folder`` once per process (and folder).

    Every page of a ``panel serve`` process shares it, so visits neither repeat the
    simulation nor write its recordings again. The simulation is seeded and each file
    is written whole under a temporary name, then renamed: a later process, or another
    server on the same output folder, replaces the files with the same recordings, and
    a page reading them never meets a half-written file.
    """
    return demo_array(folder)


class LocalizationMap(pn.viewable.Viewer):
    """Review localized events: filter by class, time, cross-correlation and residual; inspect one event.

    Events come from the Python caller, from a folder of synchronized recordings
    with a recorder-position CSV (and optionally a detections CSV; see
    :func:`opso_nb.workspace.read_array_folder`), or from the simulated demo array.
    Events of one call localized from several reference recorders land at
    (nearly) the same place: they are drawn as one point, sized by their count.

    Parameters
    ----------
    events : list of SpatialEvent, optional
        Localized events (e.g. from ``SynchronizedRecorderArray.localize_detections``
        with ``residual_threshold=np.inf``, so the slider can do the filtering).
        Default: the workspace's first data folder if it holds a recorder-position
        CSV, else a simulated demo array (:func:`opso_nb.localization.demo_array`),
        whose true source positions are drawn as crosses; its recordings are
        written to ``localization_demo`` in the workspace's output folder.
    file_coords : DataFrame, optional
        Recorder positions (indexed by file, columns x, y[, z]).
    truth : DataFrame, optional
        True source positions (x, y) drawn as crosses.
    folder : str or Path, optional
        Folder of synchronized recordings to localize on opening.
    workspace : Workspace, optional
        Default :meth:`Workspace.from_env` plus ``folder``.
    """

    residual_threshold = param.Number(default=2.0, bounds=(0, 20), step=0.25, label="Largest position error (m)",
                                      doc="Residual RMS: how far, in metres, the measured delays disagree with the "
                                          "position found. Large values mean an unreliable position (echoes, a "
                                          "second animal, a wrong delay); lower this to hide them.")
    cc_threshold = param.Number(default=0.0, bounds=(0, 1), step=0.005, label="Smallest call match (0-1)",
                                doc="Cross-correlation peak: how clearly the call matched between recordings, "
                                    "required at every recorder used. With PHAT weighting good matches are often "
                                    "only a few hundredths, so the slider's range is set from the data.")
    classes = param.ListSelector(default=[], objects=[], doc="Classes shown")
    time_range = param.Range(default=(0, 1), bounds=(0, 1), label="Call start times (s)",
                             doc="Show only calls starting in this part of the recordings (s)")
    merge_distance = param.Number(default=1.0, bounds=(0.01, 20), step=0.1, label="Merge points closer than (m)",
                                  doc="Events of the same call and class whose positions round to the same "
                                      "square of this size are drawn as one point, sized by their count")
    positions_csv = param.Selector(default=None, objects=[], allow_None=True, label="Recorder positions (CSV)",
                                   doc="CSV with a file column and x, y[, z] in metres (or lat, lon in degrees)")
    detections_csv = param.Selector(default=EVERY_CLIP, objects=[EVERY_CLIP], label="Detections (CSV)",
                                    doc="Clip table (file, start_time, end_time, one 0/1 column per class) of the "
                                        "calls to localize; without one, every clip is tried")
    clip_duration = param.Number(default=1.0, bounds=(0.05, 60), step=0.1, label="Clip length (s)",
                                 doc="Length of the clips tried when there is no detections table")

    def __init__(self, events=None, file_coords=None, truth=None, folder=None, workspace: Workspace | None = None,
                 **params):
        super().__init__(**params)
        self.workspace = workspace or Workspace.from_env([folder])
        self.settings = LocalizationSettings(max_receiver_dist=100.0, min_n_receivers=3)
        self.error = message_alert("danger")
        self.warning = message_alert("warning")
        self.source_note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.count = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.detail_title = pn.pane.Markdown("Click a position on the map to review that event.")
        self.detail = pn.Column(sizing_mode="stretch_width")
        self.localize_button = pn.widgets.Button(label="Localize", color="primary",
                                                 description="Localize the calls of the folder with these settings")
        self.demo_button = pn.widgets.Button(label="Simulated demo array", color="light",
                                             description="A simulated 6-recorder array whose true call positions "
                                                         "are known (grey crosses)")
        self.localize_button.on_click(lambda *_: self.localize_folder())
        self.demo_button.on_click(lambda *_: self.load_demo())
        self.events, self.table, self.file_coords, self.truth = [], events_to_df([]), None, None
        self._build_map()
        start = folder or (self.workspace.start_folder("") if self.workspace.user_dirs else "")
        self.folder_box = FolderBox(folder=str(start) if start else "", workspace=self.workspace)
        self.folder_box.param.watch(lambda *_: self._scan(), ["folder"])
        self._redraw = DrawOnce(lambda: self._update_points())
        self.param.watch(self._redraw, ["residual_threshold", "cc_threshold", "classes", "time_range",
                                        "merge_distance"])
        self._scan()
        if events is not None:
            self.set_events(events, file_coords, truth)
        elif self.positions_csv is not None:
            self.localize_folder()
        else:
            self.load_demo()

    # ------------------------------------------------------------------ data
    def _scan(self):
        root = self.folder_box.root
        positions, detections = array_tables(root) if root is not None else ([], [])
        self.param.positions_csv.objects = positions
        self.param.detections_csv.objects = [EVERY_CLIP] + detections
        # with events: nothing here watches them but the page's selects, which must show the new choice
        self.positions_csv = positions[0] if positions else None
        self.detections_csv = detections[0] if detections else EVERY_CLIP
        if root is None:
            self.source_note.object = f"**No folder:** {self.folder_box.problem}."
        elif not positions:
            self.source_note.object = (f"**No recorder positions in `{root}`.** Add a CSV with columns file, x, y "
                                       "(metres) or file, lat, lon next to the synchronized recordings.")
        else:
            self.source_note.object = f"Press **Localize** to localize the calls in `{root}`."

    def _clear(self, message: str) -> None:
        """Show ``message`` as an error; no points, recorders, warnings or event detail of earlier data remain."""
        show_message(self.error, message)
        show_message(self.warning, None)
        self.set_events([], None, None)

    @bokeh_callback
    def load_demo(self):
        """Show the simulated demo array's localized events (simulated once per process).

        Its recordings and tables are written to ``localization_demo`` in the
        workspace's output folder; a folder that cannot be written is reported.
        """
        try:
            folder = self.workspace.prepare_output(DEMO_FOLDER, folder=True)
            demo = _demo(folder)
            if not all(Path(f).is_file() for f in demo["file_coords"].index):  # deleted since: simulate again
                _demo.cache_clear()
                demo = _demo(folder)
        except (PathRefused, OSError) as err:
            self._clear(f"Cannot write the simulated demo array under the output folder: {err}")
            if self.source_note.object.startswith(_DEMO_NOTE):  # the demo shown before is gone
                self.source_note.object = ""
            return
        show_message(self.error, None)
        show_message(self.warning, None)
        self.set_events(demo["events"], demo["file_coords"], demo["truth"])
        self.source_note.object = f"{_DEMO_NOTE} (true call positions: grey crosses); its recordings are in `{folder}`."

    @bokeh_callback
    def localize_folder(self):
        """Localize the folder's calls with the chosen tables and settings; errors are shown, not raised."""
        root = self.folder_box.root
        if root is None or self.positions_csv is None:
            self._clear(self.source_note.object.replace("**", "") or "choose a folder first")
            return
        detections = None if self.detections_csv == EVERY_CLIP else self.detections_csv
        try:
            data = read_array_folder(root, self.positions_csv, detections, self.clip_duration)
            array = SynchronizedRecorderArray(data["file_coords"])
            localized, unlocalized = self.settings.localize(array, data["detections"], residual_threshold=np.inf)
            self.set_events(localized + unlocalized, data["file_coords"], None)
        except Exception as err:  # a page callback: any failure must reach the page, not the server log
            reason = str(err) if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {err}"
            self._clear(f"Cannot localize with {self.positions_csv} and {self.detections_csv}: {reason}")
            return
        show_message(self.error, None)
        notes = [failure_text(data["failures"], "recording")]
        if data["missing"]:
            notes.append(f"{len(data['missing'])} file(s) named in the tables are not in the folder: "
                         + name_list(data["missing"]))
        failed = [e for e in unlocalized if e.error and "residual RMS" not in str(e.error)]
        if failed:
            reasons = pd.Series([str(e.error).split(":")[0] for e in failed]).value_counts()
            notes.append(f"{len(failed)} event(s) could not be localized: "
                         + "; ".join(f"{n} × {reason}" for reason, n in reasons.items()))
        show_message(self.warning, "  \n".join(n for n in notes if n))
        where = ""
        if data["geo_reference"] is not None:
            where = (" Positions were given in degrees: x and y are metres east and north of "
                     "({:.6f}, {:.6f}), the recorders' mean position.".format(*data["geo_reference"]))
        self.source_note.object = (f"Localized {len(localized) + len(unlocalized)} candidate event(s) from "
                                   f"`{root}` ({self.positions_csv}, {self.detections_csv}).{where}")

    @staticmethod
    def _recorder_xy(file_coords) -> pd.DataFrame:
        """Recorder positions in metres (columns x, y): as given, or converted from lat/lon degrees.

        Degrees are converted as :class:`SynchronizedRecorderArray` converts them (around their
        mean), so recorders land where events localized with such an array are drawn.

        Raises
        ------
        ValueError
            The table has neither x, y nor lat, lon, or holds non-numeric values.
        """
        if {"x", "y"} <= set(file_coords.columns):
            return file_coords[["x", "y"]].apply(pd.to_numeric, errors="raise")
        return SynchronizedRecorderArray(file_coords).file_coords[["x", "y"]]

    @bokeh_callback
    def set_events(self, events, file_coords=None, truth=None):
        """Show ``events`` (and the recorders and true positions) on the map; filters are reset to fit them.

        Parameters
        ----------
        events : list of SpatialEvent
        file_coords : DataFrame, optional
            Recorder positions indexed by file: columns x, y (metres) or lat, lon (degrees).
        truth : DataFrame, optional
            True source positions, columns x, y (metres).

        Raises
        ------
        ValueError
            ``file_coords`` has no usable positions; nothing on the map has changed then.
        """
        # checked first, so a bad table leaves the map as it was rather than half-updated
        recorders = self._recorder_xy(file_coords) if file_coords is not None else None
        self.events = list(events)
        self.table = events_to_df(self.events)
        self.file_coords, self.truth = file_coords, truth
        names = sorted(self.table["class"].dropna().unique()) if len(self.table) else []
        self._class_colors = {c: Category10[10][i % 10] for i, c in enumerate(names)}
        start_max = float(self.table["start_time"].max() + 1) if len(self.table) else 1.0
        cc_max = 1.0
        if len(self.table) and self.table["min_cc"].notna().any():
            cc_max = max(0.01, float(np.ceil(self.table["min_cc"].max() * 100) / 100))
        # choices, bounds and values with events on (the page's widgets must show them); points drawn once, below
        self.param.classes.objects = names
        self.param.time_range.bounds = (0, start_max)
        self.param.cc_threshold.bounds = (0, cc_max)
        with self._redraw.hold():
            self.classes = names
            self.time_range = (0, start_max)
            self.cc_threshold = min(self.cc_threshold, cc_max)
        if recorders is not None:
            self._recorders.data = dict(x=recorders["x"].tolist(), y=recorders["y"].tolist(),
                                        name=[Path(f).name for f in recorders.index])
        else:
            self._recorders.data = dict(x=[], y=[], name=[])
        self._truth.data = dict(x=truth["x"].tolist(), y=truth["y"].tolist()) if truth is not None \
            else dict(x=[], y=[])
        self.detail_title.object = "Click a position on the map to review that event."
        self.detail[:] = []
        self._update_points()

    # ------------------------------------------------------------------ map
    def _build_map(self):
        self.map = figure(height=480, match_aspect=True, sizing_mode="stretch_width", x_axis_label="x (m, east)",
                          y_axis_label="y (m, north)", tools="pan,wheel_zoom,box_zoom,reset,tap,save",
                          title="Recorders (triangles) and localized calls (size: number of events)")
        self._recorders = ColumnDataSource(dict(x=[], y=[], name=[]))
        self.map.scatter("x", "y", source=self._recorders, marker="triangle", size=14, color="black",
                         legend_label="recorder")
        self.map.text("x", "y", text="name", source=self._recorders, x_offset=8, y_offset=-4, text_font_size="8pt")
        self._truth = ColumnDataSource(dict(x=[], y=[]))
        self.map.scatter("x", "y", source=self._truth, marker="x", size=12, line_width=2, color="#888888",
                         legend_label="true source (simulation)")
        self._class_colors = {}
        self._points = ColumnDataSource(dict(x=[], y=[], color=[], cls=[], residual=[], start=[], row=[], alpha=[],
                                             count=[], size=[]))
        glyph = self.map.scatter("x", "y", source=self._points, size="size", color="color", fill_alpha="alpha",
                                 line_color="black", legend_field="cls")
        self.map.add_tools(HoverTool(renderers=[glyph], tooltips=[
            ("class", "@cls"), ("start", "@start{0.00} s"), ("events here", "@count"),
            ("residual RMS", "@residual{0.00} m")]))
        self.map.legend.location = "top_left"
        self.map.legend.click_policy = "hide"
        self._points.selected.on_change("indices", self._on_select)

    def _visible(self):
        if not len(self.table):
            return pd.Series([], dtype=bool)
        return filter_events(self.table, self.residual_threshold, self.cc_threshold or None, self.classes,
                             self.time_range)

    def _grouped(self, shown: pd.DataFrame) -> pd.DataFrame:
        """One row per drawn point: events of a class and start time at the same rounded place, best fit first."""
        if not len(shown):
            return pd.DataFrame(columns=["x", "y", "class", "residual_rms", "start_time", "row", "count"])
        cell = float(self.merge_distance)
        keyed = shown.assign(row=shown.index, _gx=np.round(shown["x"] / cell), _gy=np.round(shown["y"] / cell))
        keys = ["class", "start_time", "_gx", "_gy"]
        keyed["count"] = keyed.groupby(keys, sort=False)["row"].transform("size")
        points = keyed.sort_values("residual_rms", kind="stable").drop_duplicates(subset=keys)
        return points.sort_values("row").reset_index(drop=True)

    def _update_points(self):
        mask = self._visible()
        shown = self.table[mask] if len(self.table) else self.table
        points = self._grouped(shown)
        worst = max(float(self.residual_threshold), 1e-6)
        self._points.selected.indices = []
        counts = points["count"].to_numpy(dtype=float)
        self._points.data = dict(
            x=points["x"].tolist(), y=points["y"].tolist(), cls=points["class"].tolist(),
            color=[self._class_colors.get(c, "gray") for c in points["class"]],
            residual=points["residual_rms"].tolist(), start=points["start_time"].tolist(),
            row=[int(r) for r in points["row"]], count=[int(c) for c in counts],
            size=(9 + 4 * np.sqrt(counts)).tolist(),
            # well-fitting events are drawn solid, poorer ones fainter
            alpha=np.clip(1 - points["residual_rms"].to_numpy(dtype=float) / (2 * worst), 0.25, 1).tolist(),
        )
        n_shown = int(mask.sum()) if len(mask) else 0
        if not len(self.table):
            hint = ": no events. Choose a folder and press **Localize**, or open the **simulated demo array**."
        elif n_shown == 0:
            hint = ". " + self._relax_hint()
        else:
            hint = ""
        self.count.object = (f"**{n_shown} of {len(self.table)} events shown** as {len(points)} point(s) "
                             f"(residual ≤ {self.residual_threshold:g} m, call match ≥ {self.cc_threshold:g})"
                             + hint)

    def _relax_hint(self) -> str:
        """What to change when events exist but none pass the filters: each filter that alone hides them all.

        For the two thresholds it names the least change (to the slider's step) that shows events,
        and how many; unticked classes and a narrow time range are named too.
        """
        table = self.table
        located = table["x"].notna()
        if not located.any():
            return (f"None of the {len(table)} events could be given a position (see the warning above): "
                    "try other settings under *Recordings* and press **Localize** again.")
        everything = pd.Series(True, index=table.index)
        passes = {
            "residual": table["residual_rms"] <= self.residual_threshold,
            "cc": table["min_cc"] >= self.cc_threshold if self.cc_threshold else everything,
            "classes": table["class"].isin(list(self.classes)),
            "time": table["start_time"].between(*self.time_range),
        }

        def passing_all_but(name):
            keep = located.copy()
            for other, ok in passes.items():
                if other != name:
                    keep &= ok
            return keep

        def label(name):
            return f"*{self.param[name].label}*"

        hints = []
        others = passing_all_but("residual")
        if others.any():
            step = self.param.residual_threshold.step
            needed = round(math.ceil(table.loc[others, "residual_rms"].min() / step - 1e-9) * step, 6)
            if needed <= self.param.residual_threshold.bounds[1]:
                n = int((others & (table["residual_rms"] <= needed)).sum())
                hints.append(f"raise {label('residual_threshold')} to {needed:g} or more ({n} event(s))")
        others = passing_all_but("cc")
        if others.any():
            best = table.loc[others, "min_cc"].max()
            step = self.param.cc_threshold.step
            needed = 0.0 if not np.isfinite(best) else round(math.floor(best / step + 1e-9) * step, 6)
            n = int((others & ((table["min_cc"] >= needed) if needed else everything)).sum())
            hints.append(f"lower {label('cc_threshold')} to {needed:g} or less ({n} event(s))")
        if not self.classes:
            hints.append(f"tick at least one class under {label('classes')}")
        else:
            others = passing_all_but("classes")
            if others.any():
                hidden = sorted(set(table.loc[others, "class"]))
                hints.append(f"tick the class(es) {', '.join(map(str, hidden))} ({int(others.sum())} event(s))")
        others = passing_all_but("time")
        if others.any():
            hints.append(f"widen {label('time_range')} ({int(others.sum())} event(s) start outside it)")
        if not hints:
            return ("**No event passes the filters**, and relaxing any one of them is not enough: relax several, "
                    f"starting with {label('residual_threshold')}.")
        return "**No event passes the filters.** To see some, " + "; or ".join(hints) + "."

    # ------------------------------------------------------------------ event review
    def _on_select(self, attr, old, new):
        if new:
            self.show_event(self._points.data["row"][new[0]])

    def show_event(self, row: int):
        """Show aligned spectrograms and players of event ``row`` (index into ``table``) at every receiver."""
        event = self.events[row]
        record = self.table.loc[row]
        self.detail_title.object = (
            f"**Event {row}**: {record['class']} at {record['start_time']:.2f} s, position "
            f"({record['x']:.1f}, {record['y']:.1f}) m, residual RMS {record['residual_rms']:.2f} m, "
            f"{int(record['n_receivers'])} receivers. Spectrograms are shifted by each receiver's delay, "
            "so the call lines up when the delays are right.")
        panels = []
        try:
            clips = event.aligned_audio()
        except Exception as err:  # e.g. a file moved since localization
            self.detail[:] = [pn.pane.Alert(f"Could not load the event's audio: {err}", alert_type="danger")]
            return
        for file, clip, delay in zip(event.receiver_files, clips, event.tdoas if event.tdoas is not None else []):
            plot = SpectrogramPlot(height=150, title=f"{Path(file).name} (delay {1000 * delay:+.1f} ms)")
            plot.update(Spectrogram.from_audio(clip, window_samples=256).bandpass(0, 8000))
            panels.append(pn.Column(pn.pane.Bokeh(plot.figure, sizing_mode="stretch_width"),
                                    audio_player(clip, name=Path(file).name), sizing_mode="stretch_width"))
        self.detail[:] = [pn.GridBox(*panels, ncols=2, sizing_mode="stretch_width")]

    def __panel__(self):
        labelled = {name: {"name": label, "description": text} for name, (label, text) in SETTING_HELP.items()}
        source = pn.Column(
            "### Recordings",
            self.folder_box.widgets(),
            pn.Param(self, parameters=["positions_csv", "detections_csv", "clip_duration"], show_name=False),
            pn.Param(self.settings, parameters=list(SETTING_HELP), show_name=False, widgets=labelled),
            pn.Row(self.localize_button, self.demo_button),
            self.source_note,
        )
        # data first, then filters: the order keyboard focus follows
        controls = pn.Column(
            source,
            "### Filters",
            help_widget(self, "residual_threshold", pn.widgets.FloatSlider),
            help_widget(self, "cc_threshold", pn.widgets.FloatSlider),
            pn.Param(self, parameters=["classes"], show_name=False, widgets={"classes": pn.widgets.CheckBoxGroup}),
            help_widget(self, "time_range", pn.widgets.RangeSlider),
            help_widget(self, "merge_distance", pn.widgets.FloatSlider),
            width=320,
        )
        return pn.Column(
            pn.Row(controls, pn.Column(self.error, self.warning, self.count,
                                       pn.pane.Bokeh(self.map, sizing_mode="stretch_width"),
                                       sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            self.detail_title, self.detail, sizing_mode="stretch_width")
