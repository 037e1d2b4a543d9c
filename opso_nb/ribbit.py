"""RIBBIT: score periodic (pulsed) calls without training data.

RIBBIT (Repeat-Interval Based Bioacoustic Identification Tool; Lapp et al.
2021) follows the energy in a species' frequency band over time, subtracts the
energy of optional noise bands, and asks how strongly that amplitude signal
oscillates at the species' pulse rate: the score of a clip is the largest
power spectral density (Welch's method, :func:`scipy.signal.welch`) of the net
band amplitude within ``pulse_rate_range``.

Scores follow OpenSoundscape 0.9 as its manual documents it (and reproduce the
per-file scores its RIBBIT tutorial publishes for the Great Plains toad
recordings shipped in :mod:`opso_nb.sample_data`): the band amplitude is the sum
of the spectrogram's dB values over the rows of the frequency bins the band
overlaps, divided by the bandwidth in Hz; noise bands are subtracted the same way, and the net amplitude is then
floored at zero. ``method="band_mean"`` gives opso_nb's earlier scores (see
``docs/differences/ribbit.md``).

Scores are not probabilities; compare them between clips and files recorded
the same way, and pick a threshold by listening to a few clips around it.

Main entry points
-----------------
- :func:`ribbit` scores the clips of one spectrogram (OpenSoundscape API).
- :func:`calculate_pulse_score` scores one amplitude signal.
- :class:`RibbitParams` holds one species' settings (JSON round trip), shared
  by the notebook, the dashboard and the runner.
- :func:`ribbit_detail` / :func:`plot_ribbit_detail` show what one clip's
  score is made of.
- :func:`run_ribbit` scores many files for many species, reading long files
  in chunks, reporting bad files, streaming results to disk and resuming.
"""
from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import param
import scipy.signal

from opso_nb import __version__
from opso_nb.audio import AudioLoadError, audio_info
from opso_nb.failures import failure_record, failures_frame, summarize_failures
from opso_nb.files import list_audio_files
from opso_nb.spectrogram import Spectrogram
from opso_nb.store import (
    RunStore,
    empty_clip_table,
    make_clip_index,
    process_files,
    utf8_name,
    write_failures_csv,
)
from opso_nb.utils import CLIP_INDEX, atomic_write, generate_clip_times_df

__all__ = [
    "RibbitParams",
    "ribbit",
    "calculate_pulse_score",
    "ribbit_detail",
    "plot_ribbit_detail",
    "run_ribbit",
    "species_params_from_df",
    "METHODS",
]

#: A clip needs at least this many spectrogram windows to have a PSD at all.
MIN_WINDOWS_PER_CLIP = 4

#: How scores are computed. "opensoundscape": as OpenSoundscape 0.9 documents and
#: computes them (the default); "band_mean": opso_nb's earlier scores.
METHODS = ("opensoundscape", "band_mean")

#: Welch segment length (amplitude samples) of the "opensoundscape" method:
#: scipy.signal.welch's default, which OpenSoundscape relies on.
WELCH_SEGMENT = 256


# --------------------------------------------------------------------------- validation
def _band(value, name):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be [min, max] in Hz, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high <= low:
        raise ValueError(f"{name} must be [min, max] with 0 <= min < max, got {value!r}")
    return low, high


def _pulse_range(value):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"pulse_rate_range must be [min, max] pulses per second, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high <= low:
        raise ValueError(f"pulse_rate_range is empty: need 0 <= min < max pulses per second, got {value!r}")
    return low, high


def _noise_bands(value):
    if value is None:
        return []
    try:
        bands = list(value)
    except TypeError:
        raise ValueError(f"noise_bands must be a list of [min, max] bands (Hz), got {value!r}") from None
    return [_band(b, f"noise_bands[{i}]") for i, b in enumerate(bands)]


def _method(value):
    if value not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {value!r}")
    return value


def _band_rows(frequencies, band, name, require_inside=False, overlapping=False):
    """Row indices of ``band`` (Hz) in a spectrogram.

    ``overlapping=True`` takes every bin whose extent (centre +- half the bin
    spacing) touches ``[low, high]``, as OpenSoundscape 0.9 does; otherwise
    only bins centred inside ``[low, high]``.
    """
    low, high = band
    f_lo, f_hi = float(frequencies[0]), float(frequencies[-1])
    if require_inside and (high > f_hi + 1e-9 or low > f_hi):
        raise ValueError(
            f"{name} {low:g}-{high:g} Hz lies outside the spectrogram's frequency range {f_lo:g}-{f_hi:g} Hz "
            "(a higher sample rate is needed, or a lower band)"
        )
    if overlapping:
        half = np.gradient(frequencies) / 2 if len(frequencies) > 1 else np.zeros(1)
        rows = np.flatnonzero((frequencies + half >= low) & (frequencies - half <= high))
    else:
        rows = np.flatnonzero((frequencies >= low) & (frequencies <= high))
    if len(rows) == 0:
        raise ValueError(
            f"{name} {low:g}-{high:g} Hz contains no frequency bins of the spectrogram "
            f"({f_lo:g}-{f_hi:g} Hz, bins {frequencies[1] - frequencies[0]:.3g} Hz apart): widen it"
        )
    return rows


# --------------------------------------------------------------------------- parameters
class RibbitParams(param.Parameterized):
    """One species' RIBBIT settings, including the spectrogram they assume.

    Shared by the tutorial notebook, the RIBBIT explorer dashboard (sliders are
    generated from these parameters) and :func:`run_ribbit`. Save with
    :meth:`save` and read back with :meth:`load` (JSON).

    Defaults are the Great Plains toad settings of the OpenSoundscape tutorial.
    """

    species = param.String(default="great_plains_toad", doc="Name used as the score column")
    signal_band = param.Range(default=(1900.0, 2400.0), bounds=(0, None), doc="Frequency band of the call (Hz)")
    noise_bands = param.List(default=[(0.0, 1500.0), (2500.0, 3500.0)],
                             doc="Bands (Hz) whose energy is subtracted from the signal band")
    pulse_rate_range = param.Range(default=(8.0, 20.0), bounds=(0, None), doc="Pulses per second to look for")
    clip_duration = param.Number(default=2.0, bounds=(0, None), inclusive_bounds=(False, True),
                                 doc="Length of each scored clip (s); a few times the pulse period or longer")
    clip_overlap = param.Number(default=0.0, bounds=(0, None), doc="Overlap of consecutive clips (s)")
    final_clip = param.Selector(default=None, objects=[None, "remainder", "full"],
                                doc="What to do with a leftover shorter than clip_duration")
    spec_clip_range = param.Range(default=(-100.0, -20.0), doc="dB range the spectrogram is clipped to")
    window_samples = param.Integer(default=512, bounds=(16, None), doc="Spectrogram window (samples)")
    overlap_samples = param.Integer(default=256, bounds=(0, None), doc="Spectrogram window overlap (samples)")
    nfft = param.Integer(default=1024, bounds=(16, None), doc="FFT length of the amplitude PSD")
    method = param.Selector(default="opensoundscape", objects=list(METHODS),
                            doc="Scores as OpenSoundscape 0.9 computes them, or opso_nb's earlier 'band_mean' scores")

    _FIELDS = ("species", "signal_band", "noise_bands", "pulse_rate_range", "clip_duration", "clip_overlap",
               "final_clip", "spec_clip_range", "window_samples", "overlap_samples", "nfft", "method")

    def __init__(self, **params):
        if "noise_bands" in params and params["noise_bands"] is not None:
            params["noise_bands"] = [tuple(float(v) for v in b) for b in params["noise_bands"]]
        elif "noise_bands" in params:
            params["noise_bands"] = []
        for key in ("signal_band", "pulse_rate_range", "spec_clip_range"):
            if key in params and params[key] is not None:
                params[key] = tuple(float(v) for v in params[key])
        super().__init__(**params)

    def validate(self):
        """Raise ValueError if the settings cannot work together; return self."""
        _band(self.signal_band, "signal_band")
        _noise_bands(self.noise_bands)
        _pulse_range(self.pulse_rate_range)
        if self.clip_overlap >= self.clip_duration:
            raise ValueError(f"clip_overlap ({self.clip_overlap} s) must be below clip_duration "
                             f"({self.clip_duration} s)")
        if self.overlap_samples >= self.window_samples:
            raise ValueError("overlap_samples must be below window_samples")
        return self

    def spectrogram_kwargs(self) -> dict:
        """Arguments for :meth:`opso_nb.spectrogram.Spectrogram.from_audio`."""
        return dict(window_samples=self.window_samples, overlap_samples=self.overlap_samples)

    def ribbit_kwargs(self) -> dict:
        """Arguments for :func:`ribbit`."""
        return dict(signal_band=self.signal_band, pulse_rate_range=self.pulse_rate_range,
                    clip_duration=self.clip_duration, clip_overlap=self.clip_overlap, final_clip=self.final_clip,
                    noise_bands=list(self.noise_bands) or None, spec_clip_range=self.spec_clip_range,
                    nfft=self.nfft, method=self.method)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (lists, not tuples)."""
        def tidy(v):
            # slider round trips leave float noise (19.999999999999996): keep JSON files readable
            return round(float(v), 9)

        out = {}
        for key in self._FIELDS:
            value = getattr(self, key)
            if key == "noise_bands":
                value = [[tidy(v) for v in b] for b in value]
            elif isinstance(value, (tuple, list)):
                value = [tidy(v) for v in value]
            elif isinstance(value, float):
                value = tidy(value)
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RibbitParams":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError (catches typos).

        Files written before ``method`` existed read back with the default
        method, i.e. OpenSoundscape's scores.
        """
        unknown = set(d) - set(cls._FIELDS)
        if unknown:
            raise ValueError(f"unknown RIBBIT parameter(s) {sorted(unknown)}; known: {list(cls._FIELDS)}")
        return cls(**d).validate()

    def save(self, path) -> Path:
        """Write the parameters as JSON (atomically); returns the path."""
        path = Path(path)
        with atomic_write(path) as f:
            json.dump(self.to_dict(), f, indent=2)
        return path

    @classmethod
    def load(cls, path) -> "RibbitParams":
        """Read parameters written by :meth:`save` (or a dict of them, one per species: use :meth:`load_many`)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read RIBBIT parameters ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of RIBBIT parameters")
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def load_many(cls, paths) -> dict:
        """``{species: RibbitParams}`` from several JSON files."""
        out = {}
        for p in paths:
            params = cls.load(p)
            out[params.species] = params
        return out


def species_params_from_df(species_df: pd.DataFrame) -> dict:
    """``{species: RibbitParams}`` from a table with one row per species.

    Columns are RibbitParams fields (at least ``signal_band``,
    ``pulse_rate_range``, ``clip_duration``; ``noise_bands`` optional); the
    index (or a ``species`` column) names the species. Cells read from CSV as
    strings like ``"[8, 20]"`` are parsed.
    """
    df = species_df.set_index("species") if "species" in species_df.columns else species_df
    out = {}
    for species, row in df.iterrows():
        d = {"species": str(species)}
        for key, value in row.items():
            if isinstance(value, str) and key not in ("final_clip", "method"):
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    raise ValueError(f"species {species!r}: cannot parse {key}={value!r}") from None
            if key == "final_clip" and isinstance(value, float) and np.isnan(value):
                value = None
            d[key] = value
        out[str(species)] = RibbitParams.from_dict(d)
    return out


def _as_params(species_params):
    """Normalize RibbitParams / list / dict / DataFrame into ``{species: RibbitParams}``."""
    if isinstance(species_params, RibbitParams):
        return {species_params.species: species_params.validate()}
    if isinstance(species_params, pd.DataFrame):
        return species_params_from_df(species_params)
    if isinstance(species_params, dict):
        out = {}
        for name, p in species_params.items():
            if isinstance(p, dict):
                p = RibbitParams.from_dict({"species": name, **p})
            out[str(name)] = p.validate()
        return out
    out = {}
    for p in species_params:
        if p.species in out:
            raise ValueError(f"species {p.species!r} given twice")
        out[p.species] = p.validate()
    return out


# --------------------------------------------------------------------------- core
def calculate_pulse_score(amplitude, amplitude_sample_rate, pulse_rate_range, plot=False, nfft=1024,
                          method="opensoundscape"):
    """Pulse score of one amplitude signal: its largest PSD value within the pulse-rate range.

    Parameters
    ----------
    amplitude : array-like
        Amplitude over time (e.g. band energy per spectrogram window).
    amplitude_sample_rate : float
        Samples per second of ``amplitude`` (Hz), normally ~20-200 Hz; must be
        above twice the top of ``pulse_rate_range``.
    pulse_rate_range : [min, max]
        Pulses per second; both ends included.
    plot : bool
        Plot the PSD with the pulse-rate window marked.
    nfft : int
        FFT length of the PSD (:func:`scipy.signal.welch`); raised to the
        segment length if shorter.
    method : {"opensoundscape", "band_mean"}
        "opensoundscape": Welch's method with scipy's default segments (256
        samples, half overlapping, Hann window), as OpenSoundscape. "band_mean":
        one segment spanning the whole signal (opso_nb's earlier scores).

    Returns
    -------
    float
        The score, in (amplitude units)**2 per Hz; larger = stronger
        periodicity. NaN if the amplitude is shorter than 4 samples.

    Raises
    ------
    ValueError
        Empty or non-finite amplitude, empty pulse-rate range, or a range
        above the amplitude's Nyquist frequency.
    """
    low, high = _pulse_range(pulse_rate_range)
    method = _method(method)
    amplitude = np.asarray(amplitude, dtype=float).ravel()
    if not amplitude_sample_rate > 0:
        raise ValueError(f"amplitude_sample_rate must be > 0 Hz, got {amplitude_sample_rate}")
    if high > amplitude_sample_rate / 2:
        raise ValueError(
            f"pulse_rate_range up to {high:g}/s needs an amplitude sampled faster than {2 * high:g} Hz; "
            f"it is sampled at {amplitude_sample_rate:.3g} Hz (use a shorter spectrogram hop)"
        )
    if len(amplitude) == 0:
        raise ValueError("amplitude is empty: nothing to score")
    if not np.all(np.isfinite(amplitude)):
        raise ValueError(f"amplitude contains {np.count_nonzero(~np.isfinite(amplitude))} NaN/inf value(s)")
    if len(amplitude) < MIN_WINDOWS_PER_CLIP:
        return float("nan")
    freqs, psd = _psd(amplitude, amplitude_sample_rate, nfft, method)
    in_range = (freqs >= low) & (freqs <= high)
    score = float(psd[in_range].max()) if in_range.any() else float("nan")
    if plot:
        _plot_psd(freqs, psd, (low, high), title=f"score {score:.3g}")
    return score


def _psd(amplitude, sample_rate, nfft, method="opensoundscape"):
    """Welch PSD of the amplitude (mean removed per segment): ``(pulse rates in Hz, density)``.

    ``amplitude`` may be 2-D (one signal per row, all of the same length): one PSD per row.
    """
    n = np.shape(amplitude)[-1]
    segment = min(WELCH_SEGMENT, n) if method == "opensoundscape" else n
    return scipy.signal.welch(amplitude, fs=sample_rate, nperseg=segment, nfft=max(int(nfft), segment),
                              detrend="constant")


def _plot_psd(freqs, psd, pulse_rate_range, title=None):
    # pyplot picks a GUI backend when imported: only import it when a figure is really drawn
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.plot(freqs, psd)
    for rate in pulse_rate_range:
        ax.axvline(rate, color="r", ls="--")
    ax.set_xlabel("pulse rate (pulses/s)")
    ax.set_ylabel("PSD")
    if title:
        ax.set_title(title)
    return fig


def _band_levels(spectrogram, signal_band, noise_bands, spec_clip_range, method="opensoundscape"):
    """Signal-band and noise-band level per spectrogram window: ``(signal, noise)``.

    "opensoundscape": sum of the dB values over the rows of every bin the band
    overlaps, divided by the bandwidth (Hz); the noise level is the sum over all
    noise bands divided by their total bandwidth.
    "band_mean": mean over the rows of the dB values scaled to 0-1 within
    ``spec_clip_range``. ``noise`` is 0 without noise bands.
    """
    spec = spectrogram.spectrogram
    if not spectrogram.dB_scale:
        raise ValueError("RIBBIT expects a dB spectrogram (Spectrogram.from_audio with dB_scale=True)")
    if spec_clip_range is not None:
        lo, hi = float(spec_clip_range[0]), float(spec_clip_range[1])
        if hi <= lo:
            raise ValueError(f"spec_clip_range must be (min, max) dB with min < max, got {spec_clip_range}")
    elif method == "band_mean":
        raise ValueError("method='band_mean' needs spec_clip_range (it scales levels to 0-1 within it)")
    freqs = np.asarray(spectrogram.frequencies)

    def rows_of(rows):
        # clip only the rows needed, in the copy that indexing makes: cheaper than clipping the whole spectrogram
        block = spec[rows]
        if spec_clip_range is not None:
            np.clip(block, lo, hi, out=block)
        return block

    overlapping = method == "opensoundscape"
    signal_rows = _band_rows(freqs, signal_band, "signal_band", require_inside=True, overlapping=overlapping)
    noise_rows = [_band_rows(freqs, b, "noise band", overlapping=overlapping) for b in noise_bands]
    if method == "opensoundscape":
        signal = rows_of(signal_rows).sum(axis=0, dtype=np.float64) / (signal_band[1] - signal_band[0])
        noise = (sum(rows_of(r).sum(axis=0, dtype=np.float64) for r in noise_rows) / sum(h - l for l, h in noise_bands)
                 if noise_bands else np.zeros_like(signal))
        return signal, noise
    signal = ((rows_of(signal_rows) - lo) / (hi - lo)).mean(axis=0)
    if not noise_bands:
        return signal, np.zeros_like(signal)
    union = np.unique(np.concatenate(noise_rows))
    return signal, ((rows_of(union) - lo) / (hi - lo)).mean(axis=0)


def _net_amplitude(spectrogram, signal_band, noise_bands, spec_clip_range, method="opensoundscape"):
    """Net amplitude per spectrogram window: signal-band level minus noise-band level.

    With noise bands and ``method="opensoundscape"`` it is floored at zero, as
    OpenSoundscape does (so windows where the noise bands are louder than the
    signal band count as silent).
    """
    signal, noise = _band_levels(spectrogram, signal_band, noise_bands, spec_clip_range, method)
    if method == "opensoundscape" and noise_bands:
        return np.maximum(signal - noise, 0.0)
    return signal - noise


def _clip_scores(net, times, amp_rate, clips, pulse_rate_range, nfft, plot=False, offset=0.0,
                 method="opensoundscape"):
    """Score each (start, end) clip (seconds, ``times`` axis minus ``offset``) from the net amplitude.

    A clip holds the spectrogram windows whose centres lie in [start, end).
    Clips holding the same number of windows are scored together, one Welch
    PSD per row of a stacked array (the same values as one clip at a time).
    """
    low, high = pulse_rate_range
    clips = np.asarray(clips, dtype=float).reshape(-1, 2)
    scores = np.full(len(clips), np.nan)
    # half a microsecond of slack: a window centred exactly on a boundary belongs to the later clip
    # whatever float rounding the chunk offset introduced
    first, stop = np.searchsorted(times, clips - offset - 5e-7, side="left").T
    lengths = stop - first
    for length in np.unique(lengths[lengths >= MIN_WINDOWS_PER_CLIP]):
        rows = np.flatnonzero(lengths == length)
        freqs, psd = _psd(net[first[rows, None] + np.arange(length)], amp_rate, nfft, method)
        in_range = (freqs >= low) & (freqs <= high)
        if in_range.any():
            scores[rows] = psd[:, in_range].max(axis=1)
    if plot:
        # pyplot only when plotting (see _plot_psd)
        import matplotlib.pyplot as plt

        for i in np.flatnonzero(lengths >= MIN_WINDOWS_PER_CLIP):
            start, end = clips[i]
            print(f"window: {float(start)} to {float(end)} sec")
            freqs, psd = _psd(net[first[i]:stop[i]], amp_rate, nfft, method)
            _plot_psd(freqs, psd, pulse_rate_range, title=f"{start:g}-{end:g} s: score {scores[i]:.3g}")
            plt.show()
    return scores


def _amplitude_rate(spectrogram):
    times = np.asarray(spectrogram.times)
    if len(times) < 2:
        raise ValueError(f"spectrogram has {len(times)} time window(s): too short for RIBBIT")
    try:
        step = spectrogram.window_step
    except (TypeError, AttributeError):
        step = None
    if not step:
        step = float(np.median(np.diff(times)))
    return 1.0 / step


def _spec_full_duration(spectrogram):
    """Seconds of audio the spectrogram's windows cover (the audio may run < one hop longer)."""
    try:
        return float(spectrogram.duration)
    except (TypeError, AttributeError):
        times = np.asarray(spectrogram.times)
        return float(times[-1] + (times[-1] - times[-2]) / 2)


def ribbit(spectrogram, signal_band, pulse_rate_range, clip_duration, clip_overlap=0, final_clip=None,
           noise_bands=None, plot=False, spec_clip_range=(-100, -20), nfft=1024, method="opensoundscape"):
    """Score periodic calls in each clip of a spectrogram.

    For each clip: the net amplitude (signal band minus noise bands, see
    ``method``), its power spectral density (:func:`scipy.signal.welch`), and
    the score: the largest density within ``pulse_rate_range``.

    Parameters
    ----------
    spectrogram : opso_nb.spectrogram.Spectrogram
        dB spectrogram of the recording. Its hop sets the amplitude sample
        rate (e.g. 256 samples at 48 kHz → 187.5 Hz), which must exceed twice
        the top pulse rate.
    signal_band : [min, max]
        Frequency range of the call in Hz; narrow is better.
    pulse_rate_range : [min, max]
        Pulses per second to look for.
    clip_duration : float
        Seconds scored at a time (several pulse periods; 0.3-10 s typical).
    clip_overlap : float
        Seconds shared by consecutive clips.
    final_clip : {None, "remainder", "full"}
        Leftover shorter than a clip: drop it, score it as a shorter clip, or
        score the last ``clip_duration`` seconds. ("extend" is not supported.)
    noise_bands : list of [min, max], optional
        Bands (Hz) whose energy is subtracted from the signal band: a low
        band against clicks and pops, or bands hugging the signal band.
    plot : bool
        Plot each clip's PSD with the pulse-rate window.
    spec_clip_range : (min, max) or None
        dB range the spectrogram values are clipped to first; the default
        equals the spectrogram's default ``decibel_limits``, so it changes
        nothing for a default spectrogram. None uses the values as they are.
    nfft : int
        FFT length of each clip's PSD.
    method : {"opensoundscape", "band_mean"}
        "opensoundscape" (default): OpenSoundscape 0.9's scores. The band
        amplitude is the sum of the (clipped) dB values over the rows of the
        frequency bins the band overlaps, divided by the bandwidth in Hz; the noise bands' sums are divided by their total
        bandwidth and subtracted, and the result is floored at 0. The PSD uses
        Welch segments of 256 amplitude samples (scipy's default), so clips
        longer than 256 windows are averaged over segments and a clip of
        256-383 windows is scored from its first 256. "band_mean": opso_nb's
        earlier scores (mean level scaled to 0-1, no floor, one Welch segment
        per clip).

    Returns
    -------
    pandas.DataFrame
        Columns ``start_time``, ``end_time`` (s) and ``score``, one row per clip.
        A clip with fewer than 4 spectrogram windows scores NaN.
    """
    if final_clip == "extend":
        raise ValueError("final_clip='extend' is not supported by RIBBIT (use None, 'remainder' or 'full')")
    signal_band = _band(signal_band, "signal_band")
    pulse_rate_range = _pulse_range(pulse_rate_range)
    noise_bands = _noise_bands(noise_bands)
    method = _method(method)
    if clip_duration is None or not clip_duration > 0:
        raise ValueError(f"clip_duration must be > 0 s, got {clip_duration}")
    if spectrogram.spectrogram.size == 0 or len(spectrogram.times) == 0:
        raise ValueError("spectrogram is empty (no time windows): audio too short")
    amp_rate = _amplitude_rate(spectrogram)
    _pulse_nyquist_check(pulse_rate_range, amp_rate)
    full = _spec_full_duration(spectrogram)
    if clip_duration * amp_rate < MIN_WINDOWS_PER_CLIP:
        raise ValueError(
            f"clip_duration {clip_duration} s holds fewer than {MIN_WINDOWS_PER_CLIP} spectrogram windows "
            f"({1 / amp_rate:.3g} s apart): use longer clips or a shorter spectrogram hop"
        )
    clips = generate_clip_times_df(full, clip_duration, clip_overlap, final_clip)
    net = _net_amplitude(spectrogram, signal_band, noise_bands, spec_clip_range, method)
    scores = _clip_scores(net, np.asarray(spectrogram.times), amp_rate, clips.values, pulse_rate_range, nfft,
                          plot=plot, method=method)
    clips["score"] = scores
    return clips


def _pulse_nyquist_check(pulse_rate_range, amp_rate):
    if pulse_rate_range[1] > amp_rate / 2:
        raise ValueError(
            f"pulse_rate_range up to {pulse_rate_range[1]:g}/s needs spectrogram windows more than "
            f"{2 * pulse_rate_range[1]:g} per second; this spectrogram has {amp_rate:.3g} per second "
            "(reduce window_samples - overlap_samples)"
        )


# --------------------------------------------------------------------------- detail view
#: Units of the band levels in :func:`ribbit_detail`, per method.
LEVEL_UNITS = {"opensoundscape": "dB per Hz of band", "band_mean": "level (0-1)"}


def ribbit_detail(spectrogram, params: RibbitParams, start_time: float, end_time: float) -> dict:
    """What one clip's score is made of, as arrays (for plots and dashboards).

    Returns
    -------
    dict
        ``times`` (s, window centres in the clip), ``signal`` and ``noise``
        (level of the signal band / noise bands per window, in ``units``),
        ``net`` (the amplitude RIBBIT analyses: ``signal - noise``, floored at
        0 with noise bands and the "opensoundscape" method), ``pulse_rates`` (pulses/s) and
        ``psd`` of ``net``, ``score`` (largest PSD in the pulse-rate range),
        ``peak_rate`` (pulse rate of that maximum), ``pulse_rate_range``,
        ``amplitude_sample_rate`` (Hz), ``units`` (of the levels).
    """
    params.validate()
    band = _band(params.signal_band, "signal_band")
    noise = _noise_bands(params.noise_bands)
    prr = _pulse_range(params.pulse_rate_range)
    method = _method(params.method)
    amp_rate = _amplitude_rate(spectrogram)
    _pulse_nyquist_check(prr, amp_rate)
    times = np.asarray(spectrogram.times)
    a, b = np.searchsorted(times, [start_time - 5e-7, end_time - 5e-7], side="left")
    if b - a < MIN_WINDOWS_PER_CLIP:
        raise ValueError(f"clip {start_time:g}-{end_time:g} s has {b - a} spectrogram windows; "
                         f"need at least {MIN_WINDOWS_PER_CLIP}")
    sub = spectrogram.trim(times[a], times[b - 1] + 1e-9)
    signal_level, noise_level = _band_levels(sub, band, noise, params.spec_clip_range, method)
    net = _net_amplitude(sub, band, noise, params.spec_clip_range, method)
    rates, psd = _psd(net, amp_rate, params.nfft, method)
    in_range = (rates >= prr[0]) & (rates <= prr[1])
    best = np.flatnonzero(in_range)[np.argmax(psd[in_range])] if in_range.any() else None
    return dict(times=np.asarray(sub.times), signal=signal_level, noise=noise_level, net=net, pulse_rates=rates,
                psd=psd, score=float(psd[best]) if best is not None else float("nan"),
                peak_rate=float(rates[best]) if best is not None else float("nan"),
                pulse_rate_range=prr, amplitude_sample_rate=amp_rate, units=LEVEL_UNITS[method])


def plot_ribbit_detail(spectrogram, params: RibbitParams, start_time: float, end_time: float, figsize=(9, 7)):
    """Three-panel matplotlib figure of one clip: spectrogram with bands, band amplitude, PSD with pulse-rate window.

    Returns
    -------
    matplotlib.figure.Figure
    """
    # pyplot only when plotting (see _plot_psd)
    import matplotlib.pyplot as plt

    d = ribbit_detail(spectrogram, params, start_time, end_time)
    fig, (ax0, ax1, ax2) = plt.subplots(3, 1, figsize=figsize, constrained_layout=True)
    sub = spectrogram.trim(start_time, end_time)
    top = min(float(sub.frequencies[-1]), max([params.signal_band[1]] + [b[1] for b in params.noise_bands]) * 1.3)
    rows = sub.frequencies <= top
    ax0.pcolormesh(sub.times, sub.frequencies[rows], sub.spectrogram[rows], cmap="Greys",
                   vmin=params.spec_clip_range[0], vmax=params.spec_clip_range[1], shading="auto")
    ax0.axhspan(*params.signal_band, color="tab:green", alpha=0.25, label="signal band")
    for i, b in enumerate(params.noise_bands):
        ax0.axhspan(*b, color="tab:red", alpha=0.2, label="noise band" if i == 0 else None)
    ax0.set_ylabel("frequency (Hz)")
    ax0.set_title(f"{params.species}: {start_time:g}-{end_time:g} s")
    ax0.legend(loc="upper right", fontsize=8)
    ax1.plot(d["times"], d["signal"], color="tab:green", label="signal band")
    if params.noise_bands:
        ax1.plot(d["times"], d["noise"], color="tab:red", label="noise bands")
    ax1.plot(d["times"], d["net"], color="k", label="net (analysed)")
    ax1.legend(loc="upper right", fontsize=8)
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel(d["units"])
    ax2.plot(d["pulse_rates"], d["psd"], color="k")
    ax2.axvspan(*d["pulse_rate_range"], color="tab:blue", alpha=0.15, label="pulse_rate_range")
    if np.isfinite(d["peak_rate"]):
        ax2.plot([d["peak_rate"]], [d["score"]], "o", color="tab:blue",
                 label=f"score {d['score']:.3g} at {d['peak_rate']:.1f}/s")
    ax2.set_xlim(0, min(d["amplitude_sample_rate"] / 2, 4 * d["pulse_rate_range"][1]))
    ax2.set_xlabel("pulse rate (pulses/s)")
    ax2.set_ylabel("PSD of net amplitude")
    ax2.legend(loc="upper right", fontsize=8)
    return fig


# --------------------------------------------------------------------------- many files, many species
#: Why a RIBBIT score can be missing (reported per clip, stage "score").
NON_FINITE_SCORE = ("score is NaN or infinite: the clip has too few spectrogram windows for a pulse-rate "
                    "spectrum, or the audio holds NaN/inf samples")


def _species_grid(duration, params_by_species):
    """Clip times per species (species with other clip settings have other clips)."""
    return {n: generate_clip_times_df(duration, p.clip_duration, p.clip_overlap, p.final_clip)
            for n, p in params_by_species.items()}


def _score_group(path, info, names, params_by_species, clips_by_species, window_samples, overlap_samples,
                 chunk_duration):
    """Scores of species sharing spectrogram settings: one spectrogram per chunk of audio, read once."""
    scores = {n: np.full(len(clips_by_species[n]), np.nan) for n in names}
    # chunks of audio, each extended by the longest clip so every clip lies inside one chunk
    longest = max(params_by_species[n].clip_duration for n in names)
    step = max(chunk_duration, longest)
    hop = window_samples - overlap_samples
    chunk_start = 0.0
    while chunk_start < info.duration - 1e-9:
        # clips starting in [chunk_start, chunk_start + step) are scored from this chunk
        chunk_end = min(info.duration, chunk_start + step + longest)
        # start a few hops early (on the same hop grid) so windows centred just after
        # chunk_start exist, as they do in a whole-file spectrogram
        load_start = max(0.0, chunk_start - (window_samples // hop + 1) * hop / info.sample_rate)
        first = int(round(load_start * info.sample_rate))
        if min(info.frames, first + int(round((chunk_end - load_start) * info.sample_rate))) - first < window_samples:
            break
        # streamed from the file block by block: only the chunk's spectrogram is ever in memory
        spec = Spectrogram.from_audio_file(path, offset=load_start, duration=chunk_end - load_start,
                                           out_of_bounds_mode="ignore", window_samples=window_samples,
                                           overlap_samples=overlap_samples, decibel_limits=(-200, 0))
        amp_rate = _amplitude_rate(spec)
        times = np.asarray(spec.times)
        for n in names:
            p = params_by_species[n]
            starts = clips_by_species[n].start_time.values
            mine = np.flatnonzero((starts >= chunk_start - 1e-9) & (starts < chunk_start + step - 1e-9))
            if len(mine) == 0:
                continue
            prr = _pulse_range(p.pulse_rate_range)
            _pulse_nyquist_check(prr, amp_rate)
            net = _net_amplitude(spec, _band(p.signal_band, "signal_band"), _noise_bands(p.noise_bands),
                                 p.spec_clip_range, p.method)
            scores[n][mine] = _clip_scores(net, times, amp_rate, clips_by_species[n].values[mine], prr, p.nfft,
                                           offset=load_start, method=p.method)
        chunk_start += step
    return scores


def _score_file(path, params_by_species, chunk_duration):
    """Scores of one file for every species, and a failure for each clip whose score is missing.

    Returns
    -------
    table : DataFrame
        Indexed by (file, start_time, end_time), one column per species (NaN on
        clips that belong to other species' clip grids).
    failures : list of dict
        Failure records (stage "score") for clips of a species whose score is NaN/inf.
    """
    info = audio_info(path)
    if info.duration <= 0 or info.frames == 0:
        raise AudioLoadError(path, "no audio samples")
    clips_by_species = _species_grid(info.duration, params_by_species)
    groups = {}  # species that share spectrogram settings share one spectrogram per chunk
    for name, p in params_by_species.items():
        groups.setdefault((p.window_samples, p.overlap_samples), []).append(name)
    columns, failures = [], []
    for (window_samples, overlap_samples), names in groups.items():
        scores = _score_group(path, info, names, params_by_species, clips_by_species, window_samples,
                              overlap_samples, chunk_duration)
        for n in names:
            clips = clips_by_species[n]
            for k in np.flatnonzero(~np.isfinite(scores[n])):
                scores[n][k] = np.nan
                failures.append(failure_record(path, f"{n}: {NON_FINITE_SCORE}", clips.start_time.iloc[k],
                                               clips.end_time.iloc[k], stage="score"))
            index = make_clip_index([str(path)] * len(clips), clips.start_time, clips.end_time)
            columns.append(pd.DataFrame({n: scores[n]}, index=index))
    table = pd.concat(columns, axis=1) if len(columns) > 1 else columns[0]
    return table[list(params_by_species)], failures


def _ribbit_settings(params, chunk_duration) -> dict:
    """What a stored RIBBIT run's results depend on."""
    return {"species": {n: p.to_dict() for n, p in params.items()}, "chunk_duration": float(chunk_duration),
            "opso_nb": __version__}


def _store_paths(out_path):
    """(run folder root, CSV to export or None): a ``.csv`` path keeps its run in ``<name>.run/`` beside it."""
    out_path = Path(out_path)
    if out_path.suffix.lower() == ".csv":
        return out_path.with_suffix(".run"), out_path
    return out_path, None


def _export_csv(csv_path: Path, scores, failures):
    """Whole table and failures as CSV (once, at the end of a run), for users of the older CSV output."""
    with atomic_write(csv_path, "w", newline="") as fh:
        scores.rename(index=utf8_name, level="file").to_csv(fh)
    if len(failures):
        write_failures_csv(failures, csv_path.with_name(csv_path.stem + ".errors.csv"))


def run_ribbit(files, species_params, out_path=None, resume=True, chunk_duration=300.0, progress=True,
               progress_callback=None):
    """Score many files for many species; bad files are reported, not fatal.

    Parameters
    ----------
    files : iterable of str or Path, or a folder
        Audio files (any length: long files are read ``chunk_duration`` s at
        a time, so memory stays bounded); a folder means its audio files
        (:data:`opso_nb.files.AUDIO_EXTENSIONS`, not recursive).
    species_params : RibbitParams, list of them, dict ``{species: RibbitParams or dict}``, or DataFrame
        One parameter set per species (see :func:`species_params_from_df`).
    out_path : str or Path, optional
        Output folder of a resumable run (:class:`opso_nb.store.RunStore`):
        one part per file written as each file finishes, never a rewrite of
        the whole table. A path ending in ``.csv`` keeps the run in
        ``<name>.run/`` beside it and also writes the whole table there (and
        failures to ``<name>.errors.csv``) once, at the end. Other species
        parameters or ``chunk_duration`` start a new run beside the old one,
        so resuming never returns scores computed with other settings.
    resume : bool
        With ``out_path``: skip files already scored with these settings
        (False scores every file again).
    chunk_duration : float
        Seconds of audio per chunk (a multiple of ``clip_duration - clip_overlap``
        keeps the clip grid identical to a whole-file run).
    progress : bool
        Show a tqdm progress bar.
    progress_callback : callable, optional
        Called as ``progress_callback(i_done, n_files, file)`` after each file
        still to do.

    Returns
    -------
    scores : pandas.DataFrame
        Indexed by (file, start_time, end_time), one score column per species.
        Species with different clip settings have different clips; a species'
        column is NaN on the other species' clips.
    errors : pandas.DataFrame
        The failures table (:data:`opso_nb.failures.FAILURE_COLUMNS`): whole
        files that could not be read (NaN times, stage "load") and clips whose
        score is NaN/inf (stage "score").

    Warns
    -----
    UserWarning
        When anything could not be scored, summarising the failures.
    """
    params = _as_params(species_params)
    if not params:
        raise ValueError("no species parameters given")
    files = list_audio_files(files) if isinstance(files, (str, Path)) and Path(files).is_dir() else (
        [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files])

    def compute(file):
        return _score_file(file, params, chunk_duration)

    options = dict(progress=progress, desc="RIBBIT", progress_callback=progress_callback)
    if out_path is None:
        tables, failures = process_files(files, compute, **options)
        frames = [tables[f] for f in dict.fromkeys(files) if f in tables]
        scores = pd.concat(frames) if frames else empty_clip_table(list(params), "float64")
        failures = failures_frame(failures)
    else:
        root, csv_path = _store_paths(out_path)
        with RunStore.open(root, _ribbit_settings(params, chunk_duration), job="ribbit", columns=list(params),
                           dtype="float64") as run:
            if not resume:
                run.reset()
            process_files(files, compute, run=run, **options)
            scores, failures = run.read(files)
        if csv_path is not None:
            _export_csv(csv_path, scores, failures)
    if len(failures):
        warnings.warn(f"RIBBIT could not score everything: {summarize_failures(failures)}", stacklevel=2)
    return scores, failures
