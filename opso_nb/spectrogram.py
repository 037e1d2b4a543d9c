"""Spectrograms: time-frequency images of audio.

:class:`Spectrogram` holds power in dB (rows = frequency bins, columns = time
windows). Window length trades time resolution against frequency resolution:
at 32 kHz a 512-sample window is 16 ms long and its bins are 62.5 Hz apart;
doubling the window halves the bin spacing and doubles the smearing in time.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.fft
import scipy.signal

from opso_nb.utils import rescale

__all__ = ["Spectrogram", "MelSpectrogram", "stft_power"]


def _resolve_window(sample_rate, window_samples, window_length_sec, overlap_samples, overlap_fraction, hop_samples):
    if window_samples is not None and window_length_sec is not None:
        raise ValueError("give window_samples or window_length_sec, not both")
    if window_length_sec is not None:
        window_samples = int(round(window_length_sec * sample_rate))
        if window_samples & (window_samples - 1):
            warnings.warn(
                f"window_length_sec={window_length_sec} gives {window_samples} samples, not a power of 2: "
                "the FFT is slower", stacklevel=3,
            )
    if window_samples is None:
        window_samples = 512
    window_samples = int(window_samples)
    if window_samples < 2:
        raise ValueError(f"window_samples must be >= 2, got {window_samples}")
    given = [x is not None for x in (overlap_samples, overlap_fraction, hop_samples)]
    if sum(given) > 1:
        raise ValueError("give only one of overlap_samples, overlap_fraction, hop_samples")
    if hop_samples is not None:
        overlap_samples = window_samples - int(hop_samples)
    elif overlap_fraction is not None:
        if not 0 <= overlap_fraction < 1:
            raise ValueError(f"overlap_fraction must be in [0, 1), got {overlap_fraction}")
        overlap_samples = int(round(window_samples * overlap_fraction))
    elif overlap_samples is None:
        overlap_samples = window_samples // 2
    overlap_samples = int(overlap_samples)
    if not 0 <= overlap_samples < window_samples:
        raise ValueError(
            f"overlap_samples must be >= 0 and < window_samples ({window_samples}), got {overlap_samples}"
        )
    return window_samples, overlap_samples


def stft_power(samples, sample_rate, window_samples=512, overlap_samples=256, window_type="hann",
               fft_size=None, scaling="spectrum"):
    """One-sided power spectrogram of a 1-D signal (same values as ``scipy.signal.spectrogram``).

    Each window has its mean removed (constant detrend) and is tapered by
    ``window_type`` before the FFT. Computed in blocks of windows so memory
    stays bounded for long signals.

    Returns
    -------
    power : numpy.ndarray, float32, shape (n_freqs, n_windows)
    frequencies : numpy.ndarray (Hz)
    times : numpy.ndarray
        Centre of each window (s).
    """
    samples = np.asarray(samples, dtype=np.float32)
    nfft = int(fft_size) if fft_size else window_samples
    if nfft < window_samples:
        raise ValueError(f"fft_size ({nfft}) must be >= window_samples ({window_samples})")
    hop = window_samples - overlap_samples
    window = scipy.signal.get_window(window_type, window_samples).astype(np.float32)
    if scaling == "spectrum":
        scale = 1.0 / window.sum() ** 2
    elif scaling == "density":
        scale = 1.0 / (sample_rate * (window**2).sum())
    else:
        raise ValueError(f"scaling must be 'spectrum' or 'density', got {scaling!r}")
    n_windows = 0 if len(samples) < window_samples else 1 + (len(samples) - window_samples) // hop
    n_freqs = nfft // 2 + 1
    power = np.empty((n_freqs, n_windows), dtype=np.float32)
    if n_windows:
        frames = np.lib.stride_tricks.sliding_window_view(samples, window_samples)[::hop]
        block = max(1, 2**22 // nfft)  # ~16 MB of complex values per block
        for b in range(0, n_windows, block):
            chunk = frames[b:b + block]
            chunk = (chunk - chunk.mean(axis=1, keepdims=True)) * window
            spec = scipy.fft.rfft(chunk, n=nfft, axis=1)
            p = (spec.real**2 + spec.imag**2) * scale
            # one-sided: double every bin except DC (and Nyquist for even nfft)
            p[:, 1:(n_freqs - 1 if nfft % 2 == 0 else n_freqs)] *= 2
            power[:, b:b + block] = p.T
    frequencies = np.fft.rfftfreq(nfft, 1 / sample_rate)
    times = (np.arange(n_windows) * hop + window_samples / 2) / sample_rate
    return power, frequencies, times


class Spectrogram:
    """Power over time and frequency, in dB by default.

    Parameters
    ----------
    spectrogram : numpy.ndarray
        2-D, shape (n_frequencies, n_times).
    frequencies : numpy.ndarray
        Frequency (Hz) of each row.
    times : numpy.ndarray
        Centre time (s) of each column.
    decibel_limits : tuple
        (min, max) dB range the values were clipped to; also the range
        :meth:`to_image` and :meth:`linear_scale` map from.
    window_samples, overlap_samples, window_type, audio_sample_rate, scaling, dB_scale
        How the spectrogram was made (for reference and resolution arithmetic).
    """

    def __init__(self, spectrogram, frequencies, times, window_samples=None, overlap_samples=None,
                 window_type=None, audio_sample_rate=None, scaling=None, decibel_limits=(-100, -20),
                 dB_scale=True):
        spectrogram = np.asarray(spectrogram)
        frequencies = np.asarray(frequencies)
        times = np.asarray(times)
        if spectrogram.ndim != 2:
            raise ValueError(f"spectrogram must be 2-D (frequencies, times), got shape {spectrogram.shape}")
        if spectrogram.shape != (len(frequencies), len(times)):
            raise ValueError(
                f"spectrogram shape {spectrogram.shape} does not match "
                f"{len(frequencies)} frequencies x {len(times)} times"
            )
        self.spectrogram = spectrogram
        self.frequencies = frequencies
        self.times = times
        self.window_samples = window_samples
        self.overlap_samples = overlap_samples
        self.window_type = window_type
        self.audio_sample_rate = audio_sample_rate
        self.scaling = scaling
        self.decibel_limits = tuple(decibel_limits) if decibel_limits is not None else None
        self.dB_scale = dB_scale

    _default_plot_scale = "linear"

    def _replace(self, **changes):
        fields = dict(
            spectrogram=self.spectrogram, frequencies=self.frequencies, times=self.times,
            window_samples=self.window_samples, overlap_samples=self.overlap_samples,
            window_type=self.window_type, audio_sample_rate=self.audio_sample_rate,
            scaling=self.scaling, decibel_limits=self.decibel_limits, dB_scale=self.dB_scale,
        )
        fields.update(changes)
        return type(self)(**fields)

    @classmethod
    def from_audio(cls, audio, window_type="hann", window_samples=None, window_length_sec=None,
                   overlap_samples=None, overlap_fraction=None, fft_size=None, decibel_limits=(-100, -20),
                   dB_scale=True, scaling="spectrum", hop_samples=None):
        """Spectrogram of an :class:`~opso_nb.audio.Audio` object.

        Parameters
        ----------
        audio : Audio
        window_type : str
            Taper applied to each window (any ``scipy.signal.get_window`` name).
        window_samples : int, optional
            Samples per FFT window (default 512 when ``window_length_sec`` is not given).
        window_length_sec : float, optional
            Window length in seconds instead of samples.
        overlap_samples : int, optional
            Samples shared by consecutive windows.
        overlap_fraction : float, optional
            Overlap as a fraction of the window (default 0.5).
        hop_samples : int, optional
            Samples between window starts (newer spelling; = window - overlap).
        fft_size : int, optional
            FFT length (zero-padded), default = window_samples.
        decibel_limits : tuple
            (min, max) dB; values are clipped to this range when ``dB_scale``.
        dB_scale : bool
            Store 10*log10(power); False keeps linear power and ignores the limits.
        scaling : {"spectrum", "density"}
            Power spectrum (V**2) or power spectral density (V**2/Hz).
        """
        if audio.samples.ndim != 1:
            raise ValueError("Spectrogram.from_audio needs mono audio (load with mono=True)")
        window_samples, overlap_samples = _resolve_window(
            audio.sample_rate, window_samples, window_length_sec, overlap_samples, overlap_fraction, hop_samples
        )
        if audio.n_samples < window_samples:
            raise ValueError(
                f"audio has {audio.n_samples} samples, fewer than one window ({window_samples} samples)"
            )
        power, frequencies, times = stft_power(
            audio.samples, audio.sample_rate, window_samples, overlap_samples, window_type, fft_size, scaling
        )
        if dB_scale:
            power = _to_db(power, decibel_limits)
        return cls(power, frequencies, times, window_samples, overlap_samples, window_type,
                   audio.sample_rate, scaling, decibel_limits if dB_scale else None, dB_scale)

    # ---------------------------------------------------------------- geometry
    def __repr__(self):
        return (f"<{type(self).__name__}(spectrogram={self.spectrogram.shape}, "
                f"frequencies={self.frequencies.shape}, times={self.times.shape})>")

    @property
    def shape(self):
        return self.spectrogram.shape

    @property
    def window_length(self) -> float:
        """Length of one FFT window (s)."""
        return self.window_samples / self.audio_sample_rate

    @property
    def window_step(self) -> float:
        """Seconds between the centres of consecutive windows."""
        return (self.window_samples - self.overlap_samples) / self.audio_sample_rate

    @property
    def window_start_times(self) -> np.ndarray:
        """Start time (s) of each window (``times`` are centres)."""
        return self.times - self.window_length / 2

    @property
    def duration(self) -> float:
        """Seconds of audio the windows cover (may be a little less than the audio)."""
        if len(self.times) == 0:
            return 0.0
        return float(self.window_start_times[-1] + self.window_length)

    # ---------------------------------------------------------------- edits
    def bandpass(self, min_f: float, max_f: float, out_of_bounds_ok: bool = True):
        """Keep only rows with ``min_f <= frequency <= max_f`` (Hz). Does not filter audio.

        Raises ValueError if the band is empty, or lies outside the spectrogram's
        range and ``out_of_bounds_ok`` is False.
        """
        if min_f >= max_f:
            raise ValueError(f"min_f ({min_f} Hz) must be below max_f ({max_f} Hz)")
        if not out_of_bounds_ok and (min_f < self.frequencies[0] or max_f > self.frequencies[-1]):
            raise ValueError(
                f"band {min_f}-{max_f} Hz is outside the spectrogram's range "
                f"{self.frequencies[0]}-{self.frequencies[-1]} Hz"
            )
        keep = (self.frequencies >= min_f) & (self.frequencies <= max_f)
        if not keep.any():
            raise ValueError(f"no frequency rows between {min_f} and {max_f} Hz")
        return self._replace(spectrogram=self.spectrogram[keep], frequencies=self.frequencies[keep])

    def trim(self, start_time: float, end_time: float):
        """Keep columns whose window centre lies in [start_time, end_time) (s)."""
        keep = (self.times >= start_time) & (self.times < end_time)
        return self._replace(spectrogram=self.spectrogram[:, keep], times=self.times[keep])

    def limit_range(self, min=-100, max=-20):
        """Clip values to [min, max] (dB); like a display range in Audacity or Raven."""
        return self._replace(spectrogram=np.clip(self.spectrogram, min, max), decibel_limits=(min, max))

    def limit_db_range(self, min_db=-100, max_db=-20):
        """Alias of :meth:`limit_range` (OpenSoundscape 0.9 name)."""
        return self.limit_range(min_db, max_db)

    def linear_scale(self, feature_range=(0, 1)):
        """Rescale from ``decibel_limits`` to ``feature_range`` (clipping outside values)."""
        limits = self.decibel_limits or (float(self.spectrogram.min()), float(self.spectrogram.max()))
        return self._replace(spectrogram=rescale(self.spectrogram, limits, feature_range).astype(np.float32))

    def min_max_scale(self, feature_range=(0, 1)):
        """Rescale so the actual minimum and maximum map to ``feature_range``."""
        from opso_nb.utils import min_max_scale

        return self._replace(spectrogram=min_max_scale(self.spectrogram, feature_range).astype(np.float32))

    # ---------------------------------------------------------------- measures
    def _rows(self, freq_range):
        if freq_range is None:
            return slice(None)
        low, high = freq_range
        rows = (self.frequencies >= low) & (self.frequencies <= high)
        if not rows.any():
            raise ValueError(f"no frequency rows between {low} and {high} Hz")
        return rows

    def amplitude(self, freq_range=None) -> np.ndarray:
        """Sum of values over frequency for each time window; optionally only rows in ``freq_range`` (Hz)."""
        return self.spectrogram[self._rows(freq_range)].sum(axis=0)

    def net_amplitude(self, signal_band, reject_bands=None) -> np.ndarray:
        """Signal-band amplitude per Hz minus the amplitude per Hz of the reject (noise) bands.

        Parameters
        ----------
        signal_band : (low, high) in Hz
        reject_bands : list of (low, high), optional
        """
        def per_hz(band):
            return self.amplitude(band) / max(band[1] - band[0], 1e-12)

        net = per_hz(signal_band)
        if reject_bands:
            total_width = sum(high - low for low, high in reject_bands)
            noise = sum(self.amplitude(b) for b in reject_bands) / max(total_width, 1e-12)
            net = net - noise
        return net

    # ---------------------------------------------------------------- output
    def to_image(self, shape=None, channels=1, colormap=None, invert=False, return_type="pil", range=None):
        """Image of the spectrogram, low frequencies at the bottom.

        Values are mapped linearly from ``range`` (default ``decibel_limits``)
        to [0, 1]: the loudest values become black (0) and the quietest white
        (1), as in the printed spectrograms of field guides; ``invert=True``
        gives loud = white (1).

        Parameters
        ----------
        shape : (height, width), optional
            Resize to this many pixels (bilinear).
        channels : int
            1 (grey) or 3 (needed for ``colormap``).
        colormap : str, optional
            Matplotlib colormap name, e.g. "viridis" (applied to loudness, loud = high end).
        return_type : {"pil", "np", "torch"}
            PIL image (0-255), or float array/tensor [channels, height, width] in [0, 1].
        """
        limits = range or self.decibel_limits or (float(self.spectrogram.min()), float(self.spectrogram.max()))
        loudness = rescale(self.spectrogram[::-1], limits, (0, 1)).astype(np.float32)
        if shape is not None:
            loudness = _resize(loudness, shape)
        if colormap is not None:
            if channels != 3:
                raise ValueError("a colormap needs channels=3")
            import matplotlib

            rgba = matplotlib.colormaps[colormap](loudness if not invert else 1 - loudness)
            array = np.moveaxis(rgba[..., :3], -1, 0).astype(np.float32)
        else:
            grey = loudness if invert else 1 - loudness
            array = np.repeat(grey[None], channels, axis=0)
        if return_type == "np":
            return array
        if return_type == "torch":
            import torch

            return torch.from_numpy(np.ascontiguousarray(array))
        if return_type == "pil":
            from PIL import Image

            pixels = np.round(array * 255).astype(np.uint8)
            return Image.fromarray(pixels[0] if channels == 1 else np.moveaxis(pixels, 0, -1))
        raise ValueError(f"return_type must be 'pil', 'np' or 'torch', got {return_type!r}")

    def plot(self, ax=None, inline=True, fname=None, show_colorbar=False, range=None, cmap="Greys",
             title=None, freq_scale=None):
        """Plot with matplotlib (time in s on x, frequency in Hz on y).

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw into this axes; a new figure otherwise.
        fname : str, optional
            Also save the figure (png/pdf...).
        range : (min, max) dB, optional
            Colour range; default ``decibel_limits``.
        Returns the Axes.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        limits = range or self.decibel_limits
        vmin, vmax = limits if limits else (None, None)
        extent_t = (self.times[0] - self.window_step / 2, self.times[-1] + self.window_step / 2) if len(self.times) else (0, 1)
        if (freq_scale or self._default_plot_scale) == "linear":
            mesh = ax.pcolormesh(self.times, self.frequencies, self.spectrogram, shading="nearest",
                                 cmap=cmap, vmin=vmin, vmax=vmax, rasterized=True)
            ax.set_ylabel("frequency (Hz)")
        else:  # mel rows: evenly spaced image keeps the mel scale
            mesh = ax.imshow(self.spectrogram, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                             extent=(*extent_t, 0, len(self.frequencies)))
            ticks = np.linspace(0, len(self.frequencies) - 1, 6).astype(int)
            ax.set_yticks(ticks + 0.5)
            ax.set_yticklabels([f"{self.frequencies[t]:.0f}" for t in ticks])
            ax.set_ylabel("frequency (Hz, mel scale)")
        ax.set_xlabel("time (s)")
        if title:
            ax.set_title(title)
        if show_colorbar:
            ax.figure.colorbar(mesh, ax=ax, label="dB" if self.dB_scale else "power")
        if fname:
            ax.figure.savefig(fname, bbox_inches="tight")
        return ax


def _to_db(power, decibel_limits):
    with np.errstate(divide="ignore"):
        db = 10 * np.log10(np.maximum(power, 1e-30), dtype=np.float32)
    if decibel_limits is not None:
        np.clip(db, decibel_limits[0], decibel_limits[1], out=db)
    return db


def _resize(array2d, shape):
    """Bilinear resize of a 2-D float array to (height, width)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(array2d, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False,
                                          antialias=True)
    return out[0, 0].numpy()


def _hz_to_mel(f, htk=False):
    f = np.asarray(f, dtype=float)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, mels)


def _mel_to_hz(m, htk=False):
    m = np.asarray(m, dtype=float)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate, n_fft, n_mels=64, fmin=0.0, fmax=None, norm="slaney", htk=False):
    """Triangular mel filters, shape (n_mels, n_fft//2 + 1), and their centre frequencies (Hz).

    ``norm="slaney"`` scales each filter to unit area so wide high filters do
    not dominate; ``norm=None`` leaves peak height 1.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(fmin, htk), _hz_to_mel(fmax, htk), n_mels + 2), htk)
    lower, centre, upper = mel_points[:-2, None], mel_points[1:-1, None], mel_points[2:, None]
    up = (fft_freqs - lower) / np.maximum(centre - lower, 1e-12)
    down = (upper - fft_freqs) / np.maximum(upper - centre, 1e-12)
    weights = np.maximum(0, np.minimum(up, down))
    if norm == "slaney":
        weights *= (2.0 / (upper - lower))
    elif norm is not None:
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    return weights.astype(np.float32), mel_points[1:-1]


class MelSpectrogram(Spectrogram):
    """Spectrogram with mel-spaced frequency rows (closer to how pitch is perceived).

    ``frequencies`` holds the centre frequency (Hz) of each mel band.
    """

    _default_plot_scale = "mel"

    @classmethod
    def from_audio(cls, audio, window_type="hann", window_samples=None, window_length_sec=None,
                   overlap_samples=None, overlap_fraction=None, fft_size=None, decibel_limits=(-100, -20),
                   dB_scale=True, scaling="spectrum", n_mels=64, norm="slaney", htk=False, hop_samples=None,
                   fmin=0.0, fmax=None):
        """Mel spectrogram of an Audio object.

        Same parameters as :meth:`Spectrogram.from_audio`, plus ``n_mels``
        (number of mel bands; more than about window_samples/10 gives empty
        bands), ``norm`` ("slaney" or None), ``htk`` (HTK mel formula instead
        of Slaney's) and ``fmin``/``fmax`` (Hz).
        """
        linear = Spectrogram.from_audio(
            audio, window_type, window_samples, window_length_sec, overlap_samples, overlap_fraction,
            fft_size, decibel_limits, dB_scale=False, scaling=scaling, hop_samples=hop_samples,
        )
        n_fft = (len(linear.frequencies) - 1) * 2
        weights, centres = mel_filterbank(audio.sample_rate, n_fft, n_mels, fmin, fmax, norm, htk)
        if weights.shape[1] != len(linear.frequencies):  # odd fft size
            weights = weights[:, : len(linear.frequencies)]
        mel = weights @ linear.spectrogram
        if dB_scale:
            mel = _to_db(mel, decibel_limits)
        return cls(mel, centres, linear.times, linear.window_samples, linear.overlap_samples, window_type,
                   audio.sample_rate, scaling, decibel_limits if dB_scale else None, dB_scale)


try:
    import param as _param
except ImportError:  # param is a core dependency; keep spectrograms usable without it
    _param = None

if _param is not None:

    class SpectrogramParams(_param.Parameterized):
        """Tunable spectrogram settings; ``pn.Param(SpectrogramParams())`` renders them as widgets.

        ``make(audio)`` builds the spectrogram these settings describe.
        """

        scale = _param.Selector(default="linear", objects=["linear", "mel"], doc="Frequency axis: linear Hz or mel bands")
        window_samples = _param.Selector(default=512, objects=[128, 256, 512, 1024, 2048, 4096],
                                         doc="Samples per FFT window: longer = finer frequency, coarser time")
        overlap_fraction = _param.Number(default=0.5, bounds=(0, 0.95), step=0.05,
                                         doc="Fraction of each window shared with the next")
        window_type = _param.Selector(default="hann", objects=["hann", "hamming", "blackman", "boxcar"])
        decibel_limits = _param.Range(default=(-100, -20), bounds=(-160, 20), doc="dB range shown (and clipped to)")
        frequency_range = _param.Range(default=(0, 24000), bounds=(0, 96000), doc="Frequency band shown (Hz)")
        n_mels = _param.Integer(default=64, bounds=(8, 256), doc="Mel bands (mel scale only)")

        def make(self, audio) -> Spectrogram:
            """Spectrogram (or MelSpectrogram) of ``audio`` with these settings, cropped to ``frequency_range``."""
            common = dict(window_type=self.window_type, window_samples=self.window_samples,
                          overlap_fraction=self.overlap_fraction, decibel_limits=tuple(self.decibel_limits))
            nyquist = audio.sample_rate / 2
            low, high = self.frequency_range
            high = min(high, nyquist)
            if self.scale == "mel":
                return MelSpectrogram.from_audio(audio, n_mels=self.n_mels, fmin=min(low, high - 1), fmax=high, **common)
            spec = Spectrogram.from_audio(audio, **common)
            return spec.bandpass(min(low, high - 1), high)
