"""Per-clip level and spectrum summaries of recordings: a quick check of a deployment.

Before scoring a season of recordings it pays to look at what the recorders
captured: a unit whose microphone failed records near-silence, a noisy site
shows a raised low-frequency band, a unit set to the wrong gain clips. The
summary of each clip answers that in three kinds of numbers:

* ``rms_dBFS``: the RMS level in dB relative to a full-scale sine (a full-scale
  sine is 0 dB; digital silence is ``-inf``), as :attr:`opso_nb.audio.Audio.dBFS`;
* ``peak_frequency_Hz``: the frequency with the most power in the clip's
  averaged spectrum (Welch: Hann windows, half overlapping), refined between
  bins by a parabola through the log power of the peak bin and its neighbours;
* ``band_<low>_<high>Hz_dBFS``: the level of each frequency band, on the same
  scale as ``rms_dBFS`` (a sine of amplitude ``A`` inside a band reads
  ``20 log10(A)`` there, and the band levels of a signal add up, in power, to
  its RMS level).

Recordings are read a block of clips at a time (:func:`summarize_file`), so a
10-hour file never sits in memory.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from opso_nb.audio import Audio, AudioNonFiniteError, audio_info
from opso_nb.failures import failure_record
from opso_nb.spectrogram import stft_power
from opso_nb.store import make_clip_index
from opso_nb.utils import generate_clip_times_df

__all__ = ["DEFAULT_BANDS", "summary_columns", "summarize_clips", "summarize_file"]

#: Octave-wide bands (Hz) from 0 to 16 kHz: insects and frogs, most birds, and high-frequency noise separate.
DEFAULT_BANDS = ((0.0, 500.0), (500.0, 1000.0), (1000.0, 2000.0), (2000.0, 4000.0), (4000.0, 8000.0),
                 (8000.0, 16000.0))
NON_FINITE_SAMPLES = "the clip holds NaN or infinite samples"


def _band_name(low, high) -> str:
    return f"band_{float(low):g}_{float(high):g}Hz_dBFS"


def summary_columns(bands=DEFAULT_BANDS) -> list:
    """Column names of a summary table: ``rms_dBFS``, ``peak_frequency_Hz`` and one level per band."""
    return ["rms_dBFS", "peak_frequency_Hz"] + [_band_name(lo, hi) for lo, hi in check_bands(bands)]


def check_bands(bands) -> list:
    """``[(low, high), ...]`` in Hz as floats; ValueError for a band that is not ``0 <= low < high``."""
    out = []
    for band in bands:
        try:
            low, high = (float(v) for v in band)
        except (TypeError, ValueError):
            raise ValueError(f"a band is (low, high) in Hz, got {band!r}") from None
        if not (0 <= low < high) or not np.isfinite(high):
            raise ValueError(f"a band needs 0 <= low < high (Hz), got {band!r}")
        out.append((low, high))
    return out


def _peak_frequency(psd, df) -> float:
    """Frequency of the largest bin above DC, refined by a parabola through the log power of it and its neighbours."""
    if len(psd) < 3 or not np.any(psd[1:] > 0):
        return np.nan
    k = 1 + int(np.argmax(psd[1:]))
    if k >= len(psd) - 1:
        return k * df
    a, b, c = np.log(np.maximum(psd[k - 1:k + 2], np.finfo(float).tiny))
    curvature = a - 2 * b + c
    shift = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    return (k + shift) * df


def summarize_clips(audio: Audio, clip_times, bands=DEFAULT_BANDS, window_samples: int = 1024) -> np.ndarray:
    """Level, peak frequency and band levels of clips of one piece of audio.

    Parameters
    ----------
    audio : Audio
        Mono audio.
    clip_times : array-like, shape (n, 2)
        Start and end of each clip in seconds from the start of ``audio``.
    bands : sequence of (low, high)
        Frequency bands in Hz (``low <= f < high``). A band that starts at or
        above the Nyquist frequency (half the sample rate) has no level: NaN.
    window_samples : int
        Length of the spectrum's windows (samples); sets the frequency
        resolution, ``sample_rate / window_samples`` Hz.

    Returns
    -------
    numpy.ndarray, shape (n, 2 + len(bands))
        Columns as :func:`summary_columns`. A clip shorter than one window has
        NaN peak frequency and band levels; a clip with NaN samples has NaN
        everywhere.
    """
    bands = check_bands(bands)
    times = np.asarray(clip_times, dtype=float).reshape(-1, 2)
    out = np.full((len(times), 2 + len(bands)), np.nan)
    window_samples = int(window_samples)
    for i, (start, end) in enumerate(times):
        clip = audio.trim(start, end)
        if not np.isfinite(clip.samples).all():
            continue
        out[i, 0] = clip.dBFS
        psd_t, freqs, _ = stft_power(clip.samples, clip.sample_rate, window_samples=window_samples,
                                     overlap_samples=window_samples // 2, scaling="density")
        if psd_t.shape[1] == 0:
            continue
        psd = psd_t.mean(axis=1, dtype=np.float64)
        df = freqs[1] - freqs[0]
        out[i, 1] = _peak_frequency(psd, df)
        for j, (low, high) in enumerate(bands):
            if low >= freqs[-1]:
                continue
            power = psd[(freqs >= low) & (freqs < high)].sum() * df
            with np.errstate(divide="ignore"):
                out[i, 2 + j] = 10 * np.log10(2 * power)  # 2: referred to a sine, like dBFS
    return out


def _summarize_block(path, times, first, last, values, sample_rate, bands, window_samples) -> list:
    """Fill ``values[first:last]`` from one read; a block that cannot be read is retried clip by clip.

    NaN samples or a damaged stretch then cost only the clips that hold them. Returns failure records.
    """
    block_start, block_end = times[first, 0], times[first:last, 1].max()
    try:
        audio = Audio.from_file(path, sample_rate=sample_rate, offset=block_start,
                                duration=block_end - block_start, out_of_bounds_mode="ignore",
                                load_metadata=False)
    except Exception as err:  # the reader raises many types for damaged audio
        if last - first > 1:
            return [record for clip in range(first, last) for record in
                    _summarize_block(path, times, clip, clip + 1, values, sample_rate, bands, window_samples)]
        stage = "score" if isinstance(err, AudioNonFiniteError) else "load"
        return [failure_record(path, err, times[first, 0], times[first, 1], stage=stage)]
    values[first:last] = summarize_clips(audio, times[first:last] - block_start, bands, window_samples)
    return [failure_record(path, NON_FINITE_SAMPLES, s, e, stage="score")
            for (s, e), rms in zip(times[first:last], values[first:last, 0]) if np.isnan(rms)]


def summarize_file(path, clip_duration: float = 10.0, clip_overlap: float = 0.0, final_clip="remainder",
                   bands=DEFAULT_BANDS, sample_rate=None, window_samples: int = 1024,
                   block_duration: float = 300.0):
    """Summarize each clip of one recording, reading it a block of clips at a time.

    Parameters
    ----------
    path : str or Path
        Audio file.
    clip_duration, clip_overlap : float
        Clip length and overlap of consecutive clips (s).
    final_clip : {None, "remainder", "full"}
        What to do with the end of the file shorter than a clip (see
        :func:`opso_nb.utils.generate_clip_times_df`); "remainder" (default)
        summarizes every second of the recording.
    bands, window_samples
        See :func:`summarize_clips`.
    sample_rate : int, optional
        Resample to this rate (Hz) first, so that recorders set to different
        rates give comparable spectra; None keeps each file's rate.
    block_duration : float
        Seconds of audio read at once (at least one clip): bounds memory.

    Returns
    -------
    table : DataFrame
        Indexed by ``(file, start_time, end_time)``; columns :func:`summary_columns`.
    failures : list of dict
        Failure records (:mod:`opso_nb.failures`) of clips that could not be
        read (stage ``"load"``) or hold NaN samples (stage ``"score"``).

    Raises
    ------
    AudioLoadError
        The file cannot be read at all.
    """
    path = str(path)
    if final_clip == "extend":
        raise ValueError("final_clip='extend' would summarize silence past the end of the file; "
                         "use None, 'remainder' or 'full'")
    duration = audio_info(path).duration
    times = generate_clip_times_df(duration, clip_duration, clip_overlap, final_clip).to_numpy(dtype=float)
    values = np.full((len(times), 2 + len(check_bands(bands))), np.nan)
    failures = []
    first = 0
    while first < len(times):
        # the clips whose ends fall within block_duration of the first clip's start (at least one)
        last = max(first + 1, int(np.searchsorted(times[:, 1], times[first, 0] + block_duration, side="right")))
        failures += _summarize_block(path, times, first, last, values, sample_rate, bands, window_samples)
        first = last
    table = pd.DataFrame(values.astype(np.float32), columns=summary_columns(bands),
                         index=make_clip_index([path] * len(times), times[:, 0], times[:, 1]))
    return table, failures
