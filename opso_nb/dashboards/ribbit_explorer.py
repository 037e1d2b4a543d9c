"""RIBBIT explorer: tune RIBBIT's parameters on a recording and watch the scores change."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import panel as pn
import param
from bokeh.events import Tap
from bokeh.models import BoxAnnotation, ColumnDataSource, Span
from bokeh.plotting import figure

from opso_nb import sample_data
from opso_nb.audio import Audio, AudioLoadError, audio_info
from opso_nb.dashboards._widgets import (
    FolderFilePicker,
    SaveBox,
    SpectrogramPlot,
    audio_player,
    bokeh_callback,
    clear_player,
    failure_text,
    help_widget,
    message_alert,
    set_player_audio,
    show_message,
)
from opso_nb.ribbit import RibbitParams, ribbit, ribbit_detail
from opso_nb.spectrogram import Spectrogram
from opso_nb.workspace import Workspace

#: Plain-language labels and tooltips of the RIBBIT settings shown (the parameters keep their names).
PARAMETER_HELP = {
    "signal_band": ("Call frequency band (Hz)",
                    "Lowest and highest frequency of the call: RIBBIT looks for pulses in this band (green)."),
    "pulse_rate_range": ("Pulse rate (pulses/s)",
                         "How many pulses per second the call repeats: the trill's slowest and fastest rate. "
                         "Great Plains toads trill at about 15-20 pulses per second."),
    "clip_duration": ("Clip length (s)", "Each clip gets one score; use a few pulse periods or more."),
    "clip_overlap": ("Clip overlap (s)", "Seconds shared by consecutive clips."),
    "spec_clip_range": ("Loudness range (dB)",
                        "Spectrogram values are clipped to this range before the band levels are computed; "
                        "raise the lower end to ignore faint background sound."),
}

#: Longest stretch of a recording loaded (and shown) at once, in seconds.
MAX_WINDOW_SECONDS = 120.0


class RibbitExplorer(pn.viewable.Viewer):
    """Choose RIBBIT parameters by eye and ear.

    The spectrogram of the recording (or of a window of a long one) shows the
    signal band (green) and noise bands (red). Every slider change re-runs
    :func:`opso_nb.ribbit.ribbit`; the score-per-clip curve, the detail view
    of the selected clip (band amplitudes and their pulse-rate spectrum) and
    the player follow. *Save parameters* writes a JSON file that
    :meth:`opso_nb.ribbit.RibbitParams.load` reads in a notebook.

    Parameters
    ----------
    folder : str or Path, optional
        Folder of recordings (default: the workspace's first data folder, else
        the bundled Great Plains toad MP3s).
    file : str, optional
        Recording to open first (relative to ``folder``).
    params : RibbitParams, optional
        Starting parameters (default: the Great Plains toad settings).
    save_path : str, optional
        Where *Save parameters* writes, relative to the workspace's output folder
        (default ``ribbit_params.json``).
    workspace : Workspace, optional
        Folders that may be browsed and the output folder (default
        :meth:`Workspace.from_env` plus ``folder``).
    """

    start_time = param.Number(default=0.0, bounds=(0, None), doc="Start of the analysed window in the file (s)")
    window_duration = param.Number(default=30.0, bounds=(1.0, MAX_WINDOW_SECONDS), step=1.0,
                                   doc="Seconds of the recording analysed and shown")
    use_noise_band_1 = param.Boolean(default=True, label="Subtract noise band 1",
                                     doc="Remove the sound level of noise band 1 from the call band")
    noise_band_1 = param.Range(default=(0.0, 1500.0), bounds=(0, 24000), label="Noise band 1 (Hz)",
                               doc="A band without the call (red): loud sound here, such as wind or rain, is "
                                   "subtracted so it does not look like pulses")
    use_noise_band_2 = param.Boolean(default=True, label="Subtract noise band 2",
                                     doc="Remove the sound level of noise band 2 from the call band")
    noise_band_2 = param.Range(default=(2500.0, 3500.0), bounds=(0, 24000), label="Noise band 2 (Hz)",
                               doc="A second band without the call (red)")
    selected_clip = param.Integer(default=0, bounds=(0, None), doc="Clip shown in the detail view (or click the curve)")

    def __init__(self, folder=None, file=None, params: RibbitParams | None = None, save_path=None,
                 workspace: Workspace | None = None, **kwargs):
        super().__init__(**kwargs)
        self.workspace = workspace or Workspace.from_env([folder])
        self.ribbit_params = params if params is not None else RibbitParams()
        start = folder or self.workspace.start_folder(sample_data.toads_folder())
        self.picker = FolderFilePicker(folder=str(start), workspace=self.workspace, check_audio=True)
        preferred = file or ("gpt3.mp3" if folder is None else None)
        if preferred in self.picker.param.file.objects:
            self.picker.file = preferred
        self._sync_noise_widgets_from_params()

        self.error = message_alert("danger")
        self.warning = message_alert("warning")
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.clip_status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.save_box = SaveBox(self.workspace, self._write_params, default=str(save_path or "ribbit_params.json"),
                                label="Save parameters")

        # spectrogram with bands and the selected clip
        self.spectrogram_plot = SpectrogramPlot(height=280, title="Spectrogram: signal band (green), noise bands (red)")
        self._signal_box = BoxAnnotation(fill_color="green", fill_alpha=0.25, line_color="green")
        self._noise_boxes = [BoxAnnotation(fill_color="red", fill_alpha=0.18, line_color="red") for _ in range(2)]
        self._clip_box = BoxAnnotation(fill_color="orange", fill_alpha=0.12, line_color="orange", line_width=2)
        for box in [self._signal_box, *self._noise_boxes, self._clip_box]:
            self.spectrogram_plot.figure.add_layout(box)

        # score per clip
        self._score_source = ColumnDataSource(data=dict(t=[], score=[], start=[], end=[]))
        self._selected_source = ColumnDataSource(data=dict(t=[], score=[]))
        self.score_plot = figure(height=200, sizing_mode="stretch_width", tools="tap,reset,save",
                                 toolbar_location="right", title="RIBBIT score per clip (click a clip)",
                                 x_axis_label="clip centre (s)", y_axis_label="score")
        self.score_plot.line("t", "score", source=self._score_source, line_width=2)
        self.score_plot.scatter("t", "score", source=self._score_source, size=7)
        self.score_plot.scatter("t", "score", source=self._selected_source, size=14, color="orange",
                                fill_alpha=0.6)
        self.score_plot.on_event(Tap, self._on_score_tap)

        # detail view: band amplitudes and their spectrum
        self._amp_source = ColumnDataSource(data=dict(t=[], signal=[], noise=[], net=[]))
        self.amplitude_plot = figure(height=200, sizing_mode="stretch_width", tools="xwheel_zoom,reset",
                                     title="Selected clip: band levels", x_axis_label="time (s)",
                                     y_axis_label="band level")
        self.amplitude_plot.line("t", "signal", source=self._amp_source, color="green", legend_label="signal band")
        self.amplitude_plot.line("t", "noise", source=self._amp_source, color="red", legend_label="noise bands")
        self.amplitude_plot.line("t", "net", source=self._amp_source, color="black", legend_label="net (analysed)")
        self.amplitude_plot.legend.location = "top_right"
        self.amplitude_plot.legend.label_text_font_size = "8pt"
        self._psd_source = ColumnDataSource(data=dict(rate=[], psd=[]))
        self._peak_source = ColumnDataSource(data=dict(rate=[], psd=[]))
        self.psd_plot = figure(height=200, sizing_mode="stretch_width", tools="reset",
                               title="Selected clip: pulse-rate spectrum (blue: pulse_rate_range)",
                               x_axis_label="pulse rate (pulses/s)", y_axis_label="PSD")
        self._prr_box = BoxAnnotation(fill_color="steelblue", fill_alpha=0.15)
        self.psd_plot.add_layout(self._prr_box)
        self.psd_plot.line("rate", "psd", source=self._psd_source, color="black")
        self.psd_plot.scatter("rate", "psd", source=self._peak_source, size=10, color="steelblue")
        self._peak_span = Span(location=0, dimension="height", line_color="steelblue", line_dash="dashed")
        self.psd_plot.add_layout(self._peak_span)

        self.player = audio_player(Audio.silence(0.1, 8000), name="selected clip")

        self._audio = None
        self._spec = None
        self._scores = None
        self._duration = 0.0
        self.picker.param.watch(lambda *_: self._load_file(), ["file", "folder"])
        self.param.watch(lambda *_: self._load_window(), ["start_time", "window_duration"])
        self.param.watch(self._on_noise_widgets, ["use_noise_band_1", "noise_band_1", "use_noise_band_2",
                                                  "noise_band_2"])
        self.param.watch(lambda *_: self._show_clip(), ["selected_clip"])
        self.ribbit_params.param.watch(lambda *_: self._load_window(), ["window_samples", "overlap_samples"])
        self.ribbit_params.param.watch(
            lambda *_: self._rescore(),
            ["signal_band", "noise_bands", "pulse_rate_range", "clip_duration", "clip_overlap", "final_clip",
             "spec_clip_range", "nfft"],
        )
        self._load_file()

    # ------------------------------------------------------------------ glue between widgets and parameters
    def _sync_noise_widgets_from_params(self):
        bands = list(self.ribbit_params.noise_bands)
        with param.parameterized.discard_events(self):
            self.use_noise_band_1 = len(bands) > 0
            self.use_noise_band_2 = len(bands) > 1
            if len(bands) > 0:
                self.noise_band_1 = tuple(bands[0])
            if len(bands) > 1:
                self.noise_band_2 = tuple(bands[1])

    def _on_noise_widgets(self, *_):
        bands = []
        if self.use_noise_band_1:
            bands.append(tuple(self.noise_band_1))
        if self.use_noise_band_2:
            bands.append(tuple(self.noise_band_2))
        self.ribbit_params.noise_bands = bands

    # ------------------------------------------------------------------ callbacks (no science here)
    def _clear(self, message: str, status: str = "") -> None:
        """Show ``message`` as an error and remove every plot and sound of the previous recording."""
        show_message(self.error, message)
        self._audio, self._spec, self._scores, self._duration = None, None, None, 0.0
        self.spectrogram_plot.clear("see the message above")
        for source in (self._score_source, self._selected_source, self._amp_source, self._psd_source,
                       self._peak_source):
            source.data = {k: [] for k in source.data}
        clear_player(self.player)
        self.status.object = status
        self.clip_status.object = ""

    @bokeh_callback
    def _load_file(self):
        show_message(self.warning, failure_text(self.picker.failures, "recording"))
        path = self.picker.path
        if path is None:
            self._clear(f"Nothing to show: {self.picker.problem}.",
                        "Type a folder of recordings in the folder box, or pick one under *Browse*.")
            return
        try:
            info = audio_info(path)
        except AudioLoadError as err:
            self._clear(str(err), f"**{path.name}** cannot be read; choose another file.")
            return
        self._info = info
        self._duration = info.duration
        nyquist = info.sample_rate / 2
        with param.parameterized.discard_events(self), param.parameterized.discard_events(self.ribbit_params):
            for name in ("noise_band_1", "noise_band_2"):
                self.param[name].bounds = (0, nyquist)
                low, high = getattr(self, name)
                setattr(self, name, (min(low, nyquist - 50), min(high, nyquist)))
            self.ribbit_params.param.signal_band.bounds = (0, nyquist)
            low, high = self.ribbit_params.signal_band
            if high > nyquist:
                self.ribbit_params.signal_band = (min(low, nyquist / 2), nyquist)
            self.param.start_time.bounds = (0, max(0.0, info.duration - 1.0))
            self.start_time = 0.0
        self._on_noise_widgets()
        self._load_window()

    @bokeh_callback
    def _load_window(self):
        path = self.picker.path
        if path is None or not self._duration:
            return
        duration = min(self.window_duration, self._duration - self.start_time)
        p = self.ribbit_params
        try:
            audio = Audio.from_file(path, offset=self.start_time, duration=duration, out_of_bounds_mode="ignore")
            # wide dB limits here: RIBBIT clips to spec_clip_range itself, so the dB slider works both ways
            spec = Spectrogram.from_audio(audio, window_samples=p.window_samples, overlap_samples=p.overlap_samples,
                                          decibel_limits=(-200, 0))
        except (AudioLoadError, ValueError) as err:
            self._clear(str(err), f"**{path.name}**: this part of the recording cannot be read.")
            return
        self._audio, self._spec = audio, spec
        amp_rate = 1 / spec.window_step
        with param.parameterized.discard_events(p):
            p.param.pulse_rate_range.bounds = (0, float(np.floor(amp_rate / 2)))
            low, high = p.pulse_rate_range
            if high > amp_rate / 2:
                p.pulse_rate_range = (min(low, amp_rate / 4), float(np.floor(amp_rate / 2)))
        self.status.object = (
            f"**{path.name}**: {self._info.duration:.1f} s, {self._info.sample_rate} Hz · analysing "
            f"{self.start_time:.1f}-{self.start_time + audio.duration:.1f} s · spectrogram columns every "
            f"{1000 * spec.window_step:.1f} ms (pulse rates up to {amp_rate / 2:.0f}/s)"
        )
        self._rescore()

    @bokeh_callback
    def _rescore(self):
        if self._spec is None:
            return
        p = self.ribbit_params
        try:
            scores = ribbit(self._spec, **p.ribbit_kwargs())
        except ValueError as err:
            show_message(self.error, f"RIBBIT: {err}")
            self._scores = None  # scores of the previous settings would be wrong now: remove them
            for source in (self._score_source, self._selected_source, self._amp_source, self._psd_source,
                           self._peak_source):
                source.data = {k: [] for k in source.data}
            self.clip_status.object = "No scores: fix the setting named in the message above."
            return
        show_message(self.error, None)
        self._scores = scores
        self._draw_spectrogram()
        offset = self.start_time
        centres = (scores.start_time + scores.end_time) / 2 + offset
        self._score_source.data = dict(t=centres.tolist(), score=scores.score.fillna(0).tolist(),
                                       start=(scores.start_time + offset).tolist(),
                                       end=(scores.end_time + offset).tolist())
        n = len(scores)
        self.param.selected_clip.bounds = (0, max(0, n - 1))  # with events: the page's slider must see them
        with param.parameterized.discard_events(self):
            if self.selected_clip > n - 1:
                self.selected_clip = max(0, n - 1)
        if n:
            best = scores.loc[scores.score.idxmax()] if scores.score.notna().any() else scores.iloc[0]
            self.score_summary = (f"{n} clips · highest score {best.score:.3g} in clip "
                                  f"{best.start_time + offset:.2f}-{best.end_time + offset:.2f} s")
        else:
            self.score_summary = "no complete clip in this window: shorten clip_duration"
        self._show_clip()

    def _draw_spectrogram(self):
        p = self.ribbit_params
        tops = [p.signal_band[1]] + [b[1] for b in p.noise_bands]
        top = min(float(self._spec.frequencies[-1]), max(4000.0, 1.5 * max(tops)))
        shown = self._spec.bandpass(0, top).limit_range(*p.spec_clip_range)
        self.spectrogram_plot.update(shown, time_offset=self.start_time)
        self._signal_box.bottom, self._signal_box.top = p.signal_band
        for i, box in enumerate(self._noise_boxes):
            if i < len(p.noise_bands):
                box.bottom, box.top = p.noise_bands[i]
                box.visible = True
            else:
                box.visible = False

    def _on_score_tap(self, event):
        if event.x is None or self._scores is None or not len(self._scores):
            return
        centres = np.asarray(self._score_source.data["t"])
        self.selected_clip = int(np.argmin(np.abs(centres - float(event.x))))

    def _show_clip(self):
        scores = self._scores
        if scores is None or not len(scores):
            self.clip_status.object = getattr(self, "score_summary", "")
            return
        i = min(self.selected_clip, len(scores) - 1)
        start, end = float(scores.start_time.iloc[i]), float(scores.end_time.iloc[i])
        offset = self.start_time
        self._clip_box.left, self._clip_box.right = start + offset, end + offset
        self._selected_source.data = dict(t=[self._score_source.data["t"][i]],
                                          score=[self._score_source.data["score"][i]])
        try:
            d = ribbit_detail(self._spec, self.ribbit_params, start, end)
        except ValueError as err:
            self.clip_status.object = f"{self.score_summary}  \nClip {start + offset:.2f}-{end + offset:.2f} s: {err}"
            return
        self._amp_source.data = dict(t=(d["times"] + offset).tolist(), signal=d["signal"].tolist(),
                                     noise=d["noise"].tolist(), net=d["net"].tolist())
        xmax = min(d["amplitude_sample_rate"] / 2, 3 * d["pulse_rate_range"][1])
        keep = d["pulse_rates"] <= xmax
        self._psd_source.data = dict(rate=d["pulse_rates"][keep].tolist(), psd=d["psd"][keep].tolist())
        self._prr_box.left, self._prr_box.right = d["pulse_rate_range"]
        if np.isfinite(d["peak_rate"]):
            self._peak_source.data = dict(rate=[d["peak_rate"]], psd=[d["score"]])
            self._peak_span.location = d["peak_rate"]
        self.clip_status.object = (
            f"{self.score_summary}  \n"
            f"**Clip {i + 1}: {start + offset:.2f}-{end + offset:.2f} s · score {d['score']:.3g} · "
            f"strongest pulse rate in range {d['peak_rate']:.1f}/s**"
        )
        set_player_audio(self.player, self._audio.trim(start, min(end, self._audio.duration)))

    # ------------------------------------------------------------------ actions
    def _write_params(self, path: Path) -> Path:
        return self.ribbit_params.validate().save(path)

    def save(self) -> Path | None:
        """Write the current parameters (JSON, atomically) under the output folder; returns the absolute path.

        A name that escapes the output folder is refused (shown next to the button) and nothing is written.
        """
        path = self.save_box.save()
        if path is not None:
            self.save_box.status.object += " (read it with `RibbitParams.load(path)`)"
        return path

    # ------------------------------------------------------------------ layout
    def __panel__(self):
        p = self.ribbit_params

        def helped(obj, name, widget_type, **kwargs):
            label, text = PARAMETER_HELP.get(name, (None, None))
            return help_widget(obj, name, widget_type, label=label, help_text=text, **kwargs)

        range_slider = pn.widgets.RangeSlider
        controls = pn.Column(
            self.picker.widgets(),
            pn.Param(self, parameters=["start_time", "window_duration"], show_name=False,
                     widgets={"start_time": pn.widgets.FloatInput, "window_duration": pn.widgets.FloatSlider}),
            helped(p, "signal_band", range_slider, step=50),
            helped(p, "pulse_rate_range", range_slider, step=0.5),
            pn.Param(self, parameters=["use_noise_band_1"], show_name=False),
            helped(self, "noise_band_1", range_slider, step=50),
            pn.Param(self, parameters=["use_noise_band_2"], show_name=False),
            helped(self, "noise_band_2", range_slider, step=50),
            helped(p, "clip_duration", pn.widgets.FloatSlider, start=0.25, end=10, step=0.25),
            helped(p, "clip_overlap", pn.widgets.FloatSlider, start=0, end=5, step=0.25),
            helped(p, "spec_clip_range", range_slider, start=-160, end=0, step=1),
            pn.Param(self, parameters=["selected_clip"], show_name=False,
                     widgets={"selected_clip": pn.widgets.IntInput}),
            self.save_box.panel(),
            width=330,
        )
        view = pn.Column(
            self.error, self.warning, self.status,
            pn.pane.Bokeh(self.spectrogram_plot.figure, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.score_plot, sizing_mode="stretch_width"),
            self.clip_status,
            pn.Row(pn.pane.Bokeh(self.amplitude_plot, sizing_mode="stretch_width"),
                   pn.pane.Bokeh(self.psd_plot, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            self.player,
            sizing_mode="stretch_width",
        )
        return pn.Row(controls, view, sizing_mode="stretch_width")
