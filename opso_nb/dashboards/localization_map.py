"""Localization map: localized calls and recorders on a map in metres, with filters and per-event review."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.palettes import Category10
from bokeh.plotting import figure

from opso_nb.dashboards._widgets import SpectrogramPlot, audio_player
from opso_nb.localization import demo_array, events_to_df, filter_events
from opso_nb.spectrogram import Spectrogram


class LocalizationMap(pn.viewable.Viewer):
    """Review localized events: filter by class, time, cross-correlation and residual; inspect one event.

    Parameters
    ----------
    events : list of SpatialEvent, optional
        Localized events (e.g. from ``SynchronizedRecorderArray.localize_detections``
        with ``residual_threshold=np.inf``, so the slider can do the filtering).
        Default: a simulated demo array (:func:`opso_nb.localization.demo_array`),
        whose true source positions are drawn as crosses.
    file_coords : DataFrame, optional
        Recorder positions (indexed by file, columns x, y[, z]).
    """

    residual_threshold = param.Number(default=2.0, bounds=(0, 20), step=0.25,
                                      doc="Largest residual RMS (m) of events shown")
    cc_threshold = param.Number(default=0.0, bounds=(0, 1), step=0.005,
                                doc="Smallest cross-correlation peak required at every receiver "
                                    "(range set from the data: PHAT peaks are often a few hundredths)")
    classes = param.ListSelector(default=[], objects=[], doc="Classes shown")
    time_range = param.Range(default=(0, 1), bounds=(0, 1), doc="Event start times shown (s)")

    def __init__(self, events=None, file_coords=None, truth=None, **params):
        super().__init__(**params)
        if events is None:
            self._workdir = tempfile.mkdtemp(prefix="opso_nb_localization_demo_")
            demo = demo_array(self._workdir)
            events, file_coords, truth = demo["events"], demo["file_coords"], demo["truth"]
        self.events = list(events)
        self.table = events_to_df(self.events)
        self.file_coords = file_coords
        self.truth = truth
        names = sorted(self.table["class"].dropna().unique())
        self.param.classes.objects = names
        start_max = float(self.table["start_time"].max() + 1) if len(self.table) else 1.0
        self.param.time_range.bounds = (0, start_max)
        if len(self.table) and self.table["min_cc"].notna().any():
            self.param.cc_threshold.bounds = (0, float(np.ceil(self.table["min_cc"].max() * 100) / 100))
        with param.parameterized.discard_events(self):
            self.classes = names
            self.time_range = (0, start_max)
        self.count = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.detail_title = pn.pane.Markdown("Click a position on the map to review that event.")
        self._build_map()
        self.detail = pn.Column(sizing_mode="stretch_width")
        self.param.watch(lambda *_: self._update_points(), ["residual_threshold", "cc_threshold", "classes", "time_range"])
        self._update_points()

    # ------------------------------------------------------------------ map
    def _build_map(self):
        self.map = figure(height=480, match_aspect=True, sizing_mode="stretch_width", x_axis_label="x (m, east)",
                          y_axis_label="y (m, north)", tools="pan,wheel_zoom,box_zoom,reset,tap,save",
                          title="Recorders (triangles) and localized calls")
        if self.file_coords is not None:
            rec = ColumnDataSource(dict(x=self.file_coords["x"], y=self.file_coords["y"],
                                        name=[Path(f).name for f in self.file_coords.index]))
            self.map.scatter("x", "y", source=rec, marker="triangle", size=14, color="black", legend_label="recorder")
            self.map.text("x", "y", text="name", source=rec, x_offset=8, y_offset=-4, text_font_size="8pt")
        if self.truth is not None:
            self.map.scatter(self.truth["x"], self.truth["y"], marker="x", size=12, line_width=2, color="#888888",
                             legend_label="true source (simulation)")
        palette = Category10[10]
        self._class_colors = {c: palette[i % 10] for i, c in enumerate(self.param.classes.objects)}
        self._points = ColumnDataSource(dict(x=[], y=[], color=[], cls=[], residual=[], start=[], row=[], alpha=[]))
        glyph = self.map.scatter("x", "y", source=self._points, size=11, color="color", fill_alpha="alpha",
                                 line_color="black", legend_field="cls")
        self.map.add_tools(HoverTool(renderers=[glyph], tooltips=[("class", "@cls"), ("start", "@start s"),
                                                                  ("residual RMS", "@residual{0.00} m")]))
        self.map.legend.location = "top_left"
        self.map.legend.click_policy = "hide"
        self._points.selected.on_change("indices", self._on_select)

    def _visible(self):
        return filter_events(self.table, self.residual_threshold, self.cc_threshold or None, self.classes,
                             self.time_range)

    def _update_points(self):
        mask = self._visible()
        shown = self.table[mask]
        worst = max(float(self.residual_threshold), 1e-6)
        self._points.selected.indices = []
        self._points.data = dict(
            x=shown["x"].tolist(), y=shown["y"].tolist(), cls=shown["class"].tolist(),
            color=[self._class_colors.get(c, "gray") for c in shown["class"]],
            residual=shown["residual_rms"].tolist(), start=shown["start_time"].tolist(),
            row=shown.index.tolist(),
            # well-fitting events are drawn solid, poorer ones fainter
            alpha=np.clip(1 - shown["residual_rms"].to_numpy() / (2 * worst), 0.25, 1).tolist(),
        )
        self.count.object = (f"**{int(mask.sum())} of {len(self.table)} events shown** "
                             f"(residual ≤ {self.residual_threshold:g} m, cc ≥ {self.cc_threshold:g})")

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
        controls = pn.Column(
            pn.Param(self, parameters=["residual_threshold", "cc_threshold", "classes", "time_range"], show_name=False,
                     widgets={"classes": pn.widgets.CheckBoxGroup, "time_range": pn.widgets.RangeSlider,
                              "residual_threshold": pn.widgets.FloatSlider, "cc_threshold": pn.widgets.FloatSlider}),
            width=300,
        )
        return pn.Column(
            pn.Row(controls, pn.Column(self.count, pn.pane.Bokeh(self.map, sizing_mode="stretch_width"),
                                       sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            self.detail_title, self.detail, sizing_mode="stretch_width")
