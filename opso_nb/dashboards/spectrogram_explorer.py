"""Spectrogram explorer: browse a folder of recordings, look at and listen to any window of time."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import panel as pn
import param
from bokeh.events import Tap
from bokeh.models import BoxAnnotation, ColumnDataSource
from bokeh.plotting import figure

from opso_nb import sample_data
from opso_nb.audio import Audio, AudioLoadError, audio_info, load_envelope
from opso_nb.dashboards._widgets import (
    DrawOnce,
    FolderFilePicker,
    SpectrogramPlot,
    audio_player,
    bokeh_callback,
    clear_player,
    failure_text,
    format_seconds,
    message_alert,
    set_player_audio,
    show_message,
)
from opso_nb.spectrogram import SpectrogramParams
from opso_nb.workspace import Workspace

#: Envelope points drawn in the overview (whatever the recording's length).
OVERVIEW_POINTS = 1500


@lru_cache(maxsize=32)
def _cached_envelope(path: str, size: int, mtime: float):
    # keyed on size and mtime so a re-written file is read again
    return load_envelope(path, n_points=OVERVIEW_POINTS)


class SpectrogramExplorer(pn.viewable.Viewer):
    """Pick a recording, see an overview of the whole file, and inspect one window of time.

    The overview is a min/max envelope computed block by block, so a 10-hour
    file is never held in memory; only the selected window is decoded,
    turned into a spectrogram and sent to the browser (image and audio).

    Parameters
    ----------
    folder : str or Path
        Folder of recordings (default: the workspace's first data folder, else
        the bundled example soundscapes).
    file : str, optional
        Recording to open first (name relative to ``folder``).
    workspace : Workspace, optional
        Folders that may be browsed (default :meth:`Workspace.from_env` plus ``folder``).
    """

    start_time = param.Number(default=0.0, bounds=(0, None), doc="Start of the window (s)")
    window_duration = param.Number(default=10.0, bounds=(0.5, 120.0), step=0.5, doc="Length of the window (s)")

    def __init__(self, folder=None, file=None, workspace: Workspace | None = None, **params):
        super().__init__(**params)
        self.workspace = workspace or Workspace.from_env([folder])
        start = folder or self.workspace.start_folder(sample_data.soundscapes_folder())
        self.picker = FolderFilePicker(folder=str(start), workspace=self.workspace, check_audio=True)
        preferred = file or ("birds_10s.wav" if folder is None else None)
        if preferred in self.picker.param.file.objects:
            self.picker.file = preferred
        self.settings = SpectrogramParams()
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = message_alert("danger")
        self.warning = message_alert("warning")
        self.spectrogram_plot = SpectrogramPlot(height=320)
        self.player = audio_player(Audio.silence(0.1, 8000), name="window audio")
        self._overview_source = ColumnDataSource(data=dict(t=[0.0], lower=[0.0], upper=[0.0]))
        self._selection = BoxAnnotation(left=0, right=1, fill_alpha=0.25, fill_color="orange")
        self.overview = figure(height=130, sizing_mode="stretch_width", tools="tap,reset", toolbar_location=None,
                               x_axis_label="time in file (s) - click to move the window", y_axis_label="amplitude")
        self.overview.varea(x="t", y1="lower", y2="upper", source=self._overview_source, fill_color="#4a6fa5")
        self.overview.add_layout(self._selection)
        self.overview.on_event(Tap, self._on_overview_tap)
        self._duration = 0.0
        self._redraw = DrawOnce(lambda: self._draw_window())
        self.picker.param.watch(lambda *_: self._load_file(), ["file", "folder"])
        self.settings.param.watch(self._redraw, list(self.settings.param)[1:])
        self.param.watch(self._redraw, ["start_time", "window_duration"])
        self._load_file()

    # ------------------------------------------------------------------ callbacks (no science here)

    def _show_failure(self, message: str, status: str = "") -> None:
        """An error replaces everything drawn from the previous file: no stale picture or sound."""
        show_message(self.error, message)
        self._duration = 0.0
        self.spectrogram_plot.clear("see the message above")
        self._overview_source.data = dict(t=[], lower=[], upper=[])
        clear_player(self.player)
        self.status.object = status

    @bokeh_callback
    def _load_file(self):
        show_message(self.warning, failure_text(self.picker.failures, "recording"))
        path = self.picker.path
        if path is None:
            self._show_failure(f"Nothing to show: {self.picker.problem}.",
                               "Type a folder of recordings in the folder box, or pick one under *Browse*.")
            return
        try:
            info = audio_info(path)
            stat = path.stat()
            times, lower, upper = _cached_envelope(str(path), stat.st_size, stat.st_mtime)
        except (AudioLoadError, OSError) as err:
            self._show_failure(str(err), f"**{path.name}** cannot be read; choose another file.")
            return
        show_message(self.error, None)
        self._info = info
        self._duration = info.duration
        self._overview_source.data = dict(t=times, lower=lower, upper=upper)
        nyquist = info.sample_rate / 2
        # bounds and values change with events on, so the page's widgets show them; the drawing waits for all
        self.settings.param.frequency_range.bounds = (0, nyquist)
        self.param.start_time.bounds = (0, max(0.0, info.duration - 0.1))
        with self._redraw.hold():
            low, high = self.settings.frequency_range
            if high > nyquist or (low, high) == (0, 24000):
                self.settings.frequency_range = (0, nyquist)
            self.start_time = 0.0
        self._draw_window()

    def _on_overview_tap(self, event):
        if event.x is not None:
            centre = float(event.x) - self.window_duration / 2
            self.start_time = float(np.clip(centre, 0, max(0.0, self._duration - 0.1)))

    @bokeh_callback
    def _draw_window(self):
        path = self.picker.path
        if path is None or not self._duration:
            return
        duration = min(self.window_duration, self._duration - self.start_time)
        try:
            audio = Audio.from_file(path, offset=self.start_time, duration=duration, out_of_bounds_mode="ignore")
            spec = self.settings.make(audio)
        except (AudioLoadError, ValueError) as err:
            self.spectrogram_plot.clear("see the message above")
            clear_player(self.player)
            show_message(self.error, str(err))
            return
        show_message(self.error, None)
        self.spectrogram_plot.update(spec, time_offset=self.start_time)
        set_player_audio(self.player, audio)
        end = self.start_time + audio.duration
        self._selection.left, self._selection.right = self.start_time, end
        step_ms = 1000 * spec.window_step
        bin_hz = self._info.sample_rate / self.settings.window_samples
        meta = audio.metadata.get("recording_start_time")
        # about 1000 pixels across the window: more decimals than that would be noise
        resolution = max(self.window_duration / 1000, spec.window_step)
        self.status.object = (
            f"**{path.name}**: {self._info.duration:.1f} s, {self._info.sample_rate} Hz, "
            f"{self._info.channels} channel(s){f', recorded {meta:%Y-%m-%d %H:%M:%S %Z}' if meta else ''}  \n"
            f"Showing {format_seconds(self.start_time, resolution)}-{format_seconds(end, resolution)} s · "
            f"window {self.settings.window_samples} samples "
            f"({1000 * self.settings.window_samples / self._info.sample_rate:.1f} ms, {bin_hz:.1f} Hz per bin, "
            f"one column every {step_ms:.1f} ms) · {self.settings.scale} scale"
        )

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        controls = pn.Column(
            self.picker.widgets(),
            pn.Param(self, parameters=["start_time", "window_duration"], show_name=False,
                     widgets={"start_time": pn.widgets.FloatInput, "window_duration": pn.widgets.FloatSlider}),
            pn.Param(self.settings, show_name=False,
                     widgets={"decibel_limits": pn.widgets.RangeSlider, "frequency_range": pn.widgets.RangeSlider,
                              "overlap_fraction": pn.widgets.FloatSlider}),
            width=320,
        )
        view = pn.Column(
            self.error, self.warning, self.status,
            pn.pane.Bokeh(self.overview, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.spectrogram_plot.figure, sizing_mode="stretch_width"),
            self.player,
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, view, sizing_mode="stretch_width")
