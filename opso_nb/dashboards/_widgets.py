"""Building blocks shared by the dashboards: spectrogram plot, audio player, file picker.

Nothing here does science; it only draws what :mod:`opso_nb` computes.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure

AUDIO_PATTERNS = ("*.wav", "*.WAV", "*.flac", "*.FLAC", "*.mp3", "*.MP3", "*.ogg", "*.OGG")

#: Most image columns sent to the browser for one spectrogram (time is max-pooled above this).
MAX_IMAGE_COLUMNS = 1600


def _pool_columns(values: np.ndarray, max_columns: int) -> np.ndarray:
    """Max-pool along time so at most ``max_columns`` columns remain (keeps short loud calls visible)."""
    n = values.shape[1]
    if n <= max_columns:
        return values
    factor = int(np.ceil(n / max_columns))
    pad = (-n) % factor
    if pad:
        values = np.pad(values, ((0, 0), (0, pad)), mode="edge")
    return values.reshape(values.shape[0], -1, factor).max(axis=2)


class SpectrogramPlot:
    """A bokeh figure showing one spectrogram, updated in place with :meth:`update`.

    Parameters
    ----------
    height, width : int
        Pixels (width None: stretch to the container).
    palette : str
        Bokeh palette name; "Greys256" draws loud as black.
    title : str, optional
    """

    def __init__(self, height: int = 300, width: int | None = None, palette: str = "Greys256", title=None):
        kwargs = dict(height=height, title=title, x_axis_label="time (s)", y_axis_label="frequency (Hz)",
                      tools="pan,xwheel_zoom,box_zoom,reset,save", toolbar_location="right")
        if width is None:
            kwargs["sizing_mode"] = "stretch_width"
        else:
            kwargs["width"] = width
        self.figure = figure(**kwargs)
        if palette == "Greys256":
            from bokeh.palettes import Greys256

            # Greys256 runs black -> white; reversed, loud (high dB) is drawn black as in field guides
            palette = list(reversed(Greys256))
        self.color_mapper = LinearColorMapper(palette=palette, low=-100, high=-20)
        self.source = ColumnDataSource(data=dict(image=[np.zeros((2, 2), dtype=np.float32)], x=[0], y=[0], dw=[1], dh=[1]))
        self.figure.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source,
                          color_mapper=self.color_mapper)
        self.figure.x_range.range_padding = 0
        self.figure.y_range.range_padding = 0
        #: number of times :meth:`update` drew a spectrogram (tests and apps read it)
        self.n_updates = 0

    def update(self, spectrogram, time_offset: float = 0.0) -> None:
        """Show ``spectrogram``; its times are shifted by ``time_offset`` seconds (segment start in the file)."""
        values = _pool_columns(np.asarray(spectrogram.spectrogram, dtype=np.float32), MAX_IMAGE_COLUMNS)
        times, freqs = spectrogram.times, spectrogram.frequencies
        if len(times) == 0 or len(freqs) == 0:
            return
        step_t = spectrogram.window_step if len(times) > 1 else 1.0
        x0 = float(times[0] - step_t / 2 + time_offset)
        dw = float(times[-1] - times[0] + step_t)
        if type(spectrogram).__name__ == "MelSpectrogram":
            # mel rows are not evenly spaced in Hz: draw rows evenly and label axis in band index
            y0, dh = 0.0, float(len(freqs))
            self.figure.yaxis.axis_label = "mel band"
        else:
            step_f = float(freqs[1] - freqs[0]) if len(freqs) > 1 else 1.0
            y0, dh = float(freqs[0] - step_f / 2), float(freqs[-1] - freqs[0] + step_f)
            self.figure.yaxis.axis_label = "frequency (Hz)"
        limits = spectrogram.decibel_limits or (float(values.min()), float(values.max()))
        self.color_mapper.low, self.color_mapper.high = float(limits[0]), float(limits[1])
        self.source.data = dict(image=[values], x=[x0], y=[y0], dw=[dw], dh=[dh])
        self.figure.x_range.start, self.figure.x_range.end = x0, x0 + dw
        self.figure.y_range.start, self.figure.y_range.end = y0, y0 + dh
        self.n_updates += 1


def spectrogram_figure(spectrogram, height: int = 300, title=None, time_offset: float = 0.0):
    """A bokeh figure of one spectrogram (x: time in s, y: frequency in Hz)."""
    plot = SpectrogramPlot(height=height, title=title)
    plot.update(spectrogram, time_offset=time_offset)
    return plot.figure


def message_alert(alert_type: str = "danger") -> pn.pane.Alert:
    """A hidden, full-width Alert for errors or warnings; see :func:`show_message`."""
    return pn.pane.Alert("", alert_type=alert_type, visible=False, sizing_mode="stretch_width")


def show_message(alert: pn.pane.Alert, message: str | None) -> None:
    """Show ``message`` in ``alert``; an empty message hides the alert."""
    alert.object = message or ""
    alert.visible = bool(message)


def audio_to_wav_bytes(audio) -> bytes:
    """16-bit WAV bytes of an Audio object (peak-normalized so quiet field audio is audible)."""
    import soundfile

    samples = audio.samples if audio.samples.ndim == 1 else audio.samples.mean(axis=0)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 0:
        samples = samples / peak * 0.9
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, audio.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_player(audio, name: str | None = None, max_seconds: float = 120.0, **kwargs) -> pn.pane.Audio:
    """A Panel audio player for one (short) Audio object.

    Refuses more than ``max_seconds`` (default 2 minutes): dashboards send only
    the part being looked at, never a whole recording.
    """
    if audio.duration > max_seconds:
        raise ValueError(f"refusing to send {audio.duration:.0f} s of audio to the browser (max {max_seconds} s)")
    pane = pn.pane.Audio(name=name, **kwargs)
    set_player_audio(pane, audio)
    return pane


def set_player_audio(pane: pn.pane.Audio, audio) -> None:
    """Replace the audio in a player created by :func:`audio_player`."""
    pane.object = audio_to_wav_bytes(audio)  # Panel base64-encodes bytes as a WAV data URL


class FolderFilePicker(param.Parameterized):
    """Pick an audio file inside one folder; the choice can never leave the folder.

    Parameters
    ----------
    folder : str or Path
        Folder to list (not recursive unless ``recursive``).
    patterns : tuple of str
        Glob patterns of files to offer.
    """

    folder = param.String(default="", doc="Folder with recordings")
    file = param.Selector(default=None, objects=[], check_on_set=True, allow_None=True,
                          doc="Recording (relative to the folder)")
    recursive = param.Boolean(default=False, doc="Also list files in sub-folders")

    def __init__(self, folder=None, patterns=AUDIO_PATTERNS, **params):
        self._patterns = tuple(patterns)
        super().__init__(**params)
        if folder is not None:
            self.folder = str(folder)
        self._refresh()

    @param.depends("folder", "recursive", watch=True)
    def _refresh(self):
        root = Path(self.folder).expanduser() if self.folder else None
        names = []
        if root is not None and root.is_dir():
            found = set()
            for pattern in self._patterns:
                found.update(root.rglob(pattern) if self.recursive else root.glob(pattern))
            names = sorted(str(p.relative_to(root)) for p in found if p.is_file())
        self.param.file.objects = names
        if self.file not in names:
            self.file = names[0] if names else None

    @property
    def path(self) -> Path | None:
        """Absolute path of the chosen file (checked to lie inside the folder)."""
        if self.file is None:
            return None
        root = Path(self.folder).expanduser().resolve()
        full = (root / self.file).resolve()
        if root not in full.parents:
            raise ValueError(f"{self.file!r} is outside the folder {root}")
        return full
