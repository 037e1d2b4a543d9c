"""Signal processing on plain sample arrays.

Generalized cross-correlation and time-delay estimation (used by
:mod:`opso_nb.localization`), Butterworth band-pass filtering of arrays,
single-frequency wavelet peak detection and the accelerating-sequence
detector used for ruffed grouse drumming, and thresholded event durations.

Everything here works on 1-D numpy arrays (or :class:`opso_nb.audio.Audio`
where noted); times are in seconds and sample rates in Hz.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.fft
import scipy.signal

__all__ = [
    "CC_FILTERS",
    "gcc",
    "tdoa",
    "butter_bandpass",
    "bandpass_filter",
    "frequency2scale",
    "cwt_peaks",
    "find_accel_sequences",
    "detect_peak_sequence_cwt",
    "thresholded_event_durations",
]

CC_FILTERS = ("phat", "roth", "scot", "ht", "cc")


def _as_signal(x, name):
    """1-D float64 array, or a ValueError naming the argument and the problem."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a 1-D array of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: empty signal")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains {np.count_nonzero(~np.isfinite(arr))} NaN/inf value(s)")
    return arr


def _smooth_bins(a, width=9):
    """Moving average of a spectrum over neighbouring frequency bins.

    Coherence needs averaged spectra: from a single transform |Gxy|^2 equals
    Gxx*Gyy exactly and the coherence would be 1 in every bin.
    """
    kernel = np.ones(width) / width
    if np.iscomplexobj(a):
        return np.convolve(a.real, kernel, "same") + 1j * np.convolve(a.imag, kernel, "same")
    return np.convolve(a, kernel, "same")


def gcc(x, y, cc_filter: str = "phat", epsilon: float = 0.001, radius=None):
    """Generalized cross-correlation of two signals (Knapp & Carter, 1976).

    The cross-spectrum ``X * conj(Y)`` is weighted by a frequency filter and
    transformed back. The output has the layout of
    ``scipy.signal.correlate(x, y, mode="full")``: ``len(x) + len(y) - 1``
    values, index ``k`` holding lag ``k - (len(y) - 1)`` samples, so a peak at
    a positive lag means ``x`` is a delayed copy of ``y``.

    Parameters
    ----------
    x, y : array-like
        1-D sample arrays (same sample rate; lengths may differ).
    cc_filter : {"phat", "roth", "scot", "ht", "cc"}
        Frequency weighting:

        - ``"phat"`` (default) phase transform, ``1/|Gxy|``: keeps only the
          phase, giving a sharp peak that is robust to reverberation and to
          the spectral colour of the source.
        - ``"roth"``: ``1/Gxx`` (whitens by the first signal's spectrum).
        - ``"scot"``: smoothed coherence transform, ``1/sqrt(Gxx*Gyy)``. With
          one transform per signal (no averaging) this equals PHAT.
        - ``"ht"``: Hannan-Thomson (maximum likelihood) weighting
          ``g^2 / (|Gxy| (1 - g^2))`` with ``g^2`` the magnitude-squared
          coherence, estimated here from spectra smoothed over 9 neighbouring
          frequency bins.
        - ``"cc"``: no weighting; equals ``scipy.signal.correlate(x, y)``.
    epsilon : float
        Small value added to denominators so silent bins do not divide by 0.
    radius : int or None
        If given, return only lags ``-radius .. +radius`` samples
        (``2 * radius + 1`` values, lag 0 in the middle).

    Returns
    -------
    numpy.ndarray
        1-D float64 array of correlation values by lag.
    """
    x = _as_signal(x, "x")
    y = _as_signal(y, "y")
    if cc_filter not in CC_FILTERS:
        raise ValueError(f"cc_filter must be one of {CC_FILTERS}, got {cc_filter!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")

    n_full = len(x) + len(y) - 1
    n = scipy.fft.next_fast_len(n_full, real=True)  # zero padding ≥ n_full: linear, not circular
    X = scipy.fft.rfft(x, n)
    Y = scipy.fft.rfft(y, n)
    Gxy = X * np.conj(Y)

    if cc_filter == "cc":
        weight = 1.0
    elif cc_filter == "phat":
        weight = 1.0 / (np.abs(Gxy) + epsilon)
    elif cc_filter == "roth":
        weight = 1.0 / (np.abs(X) ** 2 + epsilon)
    elif cc_filter == "scot":
        weight = 1.0 / (np.sqrt(np.abs(X) ** 2 * np.abs(Y) ** 2) + epsilon)
    else:  # ht
        sxx = _smooth_bins(np.abs(X) ** 2)
        syy = _smooth_bins(np.abs(Y) ** 2)
        sxy = _smooth_bins(Gxy)
        coherence = np.clip(np.abs(sxy) ** 2 / (sxx * syy + epsilon), 0.0, 1.0 - 1e-6)
        weight = coherence / (np.abs(Gxy) * (1.0 - coherence) + epsilon)

    r = scipy.fft.irfft(Gxy * weight, n)
    # circular layout → "full" layout: negative lags sit at the end of r
    out = np.concatenate([r[n - (len(y) - 1):], r[: len(x)]]) if len(y) > 1 else r[: len(x)].copy()
    if radius is not None:
        radius = int(radius)
        if radius < 0:
            raise ValueError(f"radius must be ≥ 0, got {radius}")
        zero = len(y) - 1
        lo, hi = zero - radius, zero + radius + 1
        # lags beyond the data are zero correlation
        padded = np.zeros(2 * radius + 1)
        src_lo, src_hi = max(lo, 0), min(hi, len(out))
        padded[src_lo - lo: src_hi - lo] = out[src_lo:src_hi]
        out = padded
    return out


def tdoa(signal, reference_signal, cc_filter: str = "phat", sample_rate: float = 1, return_max: bool = False,
         max_delay=None):
    """Time difference of arrival of ``signal`` relative to ``reference_signal``.

    The delay is the lag of the largest generalized cross-correlation value.
    If ``signal`` arrives 2.5 s after the reference this returns 2.5; if it
    arrives 0.5 s before, -0.5.

    Parameters
    ----------
    signal, reference_signal : array-like
        1-D sample arrays with the same sample rate.
    cc_filter : str
        Weighting, see :func:`gcc`.
    sample_rate : float
        Sample rate in Hz; with the default 1 the delay is in samples.
    return_max : bool
        Also return the peak correlation value (for PHAT about 1 for a clean
        delayed copy, lower as noise grows: a confidence measure).
    max_delay : float or None
        Largest plausible delay magnitude in seconds (e.g. receiver spacing /
        speed of sound); lags outside ``[-max_delay, +max_delay]`` are ignored.

    Returns
    -------
    float or (float, float)
        Delay in seconds (``lag / sample_rate``), and the peak value if
        ``return_max``.
    """
    if not sample_rate > 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    cc = gcc(signal, reference_signal, cc_filter=cc_filter)
    n_ref = len(np.asarray(reference_signal))
    lags = np.arange(len(cc)) - (n_ref - 1)
    if max_delay is not None:
        if max_delay < 0:
            raise ValueError(f"max_delay must be ≥ 0 s, got {max_delay}")
        max_lag = int(np.floor(max_delay * sample_rate + 1e-9))
        keep = np.abs(lags) <= max_lag
        cc, lags = cc[keep], lags[keep]
    i = int(np.argmax(cc))
    delay = lags[i] / sample_rate
    if return_max:
        return float(delay), float(cc[i])
    return float(delay)


# --------------------------------------------------------------------------- filtering
def butter_bandpass(low_f: float, high_f: float, sample_rate: float, order: int = 9):
    """Butterworth band-pass filter design as second-order sections.

    Parameters
    ----------
    low_f, high_f : float
        Band edges in Hz; ``0 < low_f < high_f < sample_rate / 2``.
    sample_rate : float
        Sample rate in Hz.
    order : int
        Filter order (the band-pass has ``2 * order`` poles).

    Returns
    -------
    numpy.ndarray
        ``sos`` array for ``scipy.signal.sosfilt`` / ``sosfiltfilt``.
    """
    nyquist = sample_rate / 2
    if not 0 < low_f < high_f < nyquist:
        raise ValueError(
            f"band edges must satisfy 0 < low_f < high_f < Nyquist ({nyquist} Hz); got low_f={low_f}, high_f={high_f}"
        )
    if int(order) < 1:
        raise ValueError(f"order must be ≥ 1, got {order}")
    # second-order sections: a 9th-order band-pass as (b, a) is numerically unstable
    return scipy.signal.butter(int(order), [low_f, high_f], btype="bandpass", fs=sample_rate, output="sos")


def bandpass_filter(signal, low_f: float, high_f: float, sample_rate: float, order: int = 9):
    """Zero-phase Butterworth band-pass of a sample array.

    Filtered forwards and backwards (``sosfiltfilt``), so there is no delay:
    timing-sensitive work such as :func:`tdoa` is unaffected.

    Parameters
    ----------
    signal : array-like
        1-D samples.
    low_f, high_f : float
        Band edges in Hz.
    sample_rate : float
        Sample rate in Hz.
    order : int
        Butterworth order.

    Returns
    -------
    numpy.ndarray
        Filtered samples, same length and dtype kind (float) as the input.
    """
    x = _as_signal(signal, "signal")
    sos = butter_bandpass(low_f, high_f, sample_rate, order)
    padlen = min(len(x) - 1, 3 * (2 * sos.shape[0] + 1))
    out = scipy.signal.sosfiltfilt(sos, x, padlen=max(padlen, 0))
    dtype = np.asarray(signal).dtype
    return out.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64)


# --------------------------------------------------------------------------- wavelets
# Centre frequency (cycles per sample at scale 1) of the wavelets implemented
# here; same values as pywt.central_frequency.
_CENTRAL_FREQUENCY = {"morl": 0.8125, "mexh": 0.25}


def _central_frequency(wavelet):
    if wavelet in _CENTRAL_FREQUENCY:
        return _CENTRAL_FREQUENCY[wavelet]
    try:
        import pywt
    except ImportError:
        raise ValueError(
            f"wavelet {wavelet!r} needs PyWavelets (pip install PyWavelets); built in: {sorted(_CENTRAL_FREQUENCY)}"
        ) from None
    return pywt.central_frequency(wavelet)


def frequency2scale(frequency: float, wavelet: str, sample_rate: float) -> float:
    """Wavelet scale whose centre frequency is ``frequency`` Hz.

    ``frequency_hz = central_frequency(wavelet) / scale * sample_rate`` (the
    relation ``pywt.scale2frequency(wavelet, scale) * sample_rate``), solved for
    the scale.

    Parameters
    ----------
    frequency : float
        Desired centre frequency in Hz.
    wavelet : str
        Wavelet name: ``"morl"`` (Morlet) or ``"mexh"`` built in; any PyWavelets
        name if that package is installed.
    sample_rate : float
        Sample rate in Hz.

    Returns
    -------
    float
        Scale for the wavelet transform.
    """
    if not frequency > 0 or not sample_rate > 0:
        raise ValueError(f"frequency and sample_rate must be > 0 Hz, got {frequency} and {sample_rate}")
    return _central_frequency(wavelet) * sample_rate / frequency


def _cwt_single_scale(x, scale, wavelet):
    """Wavelet transform of ``x`` at one scale (same length as ``x``)."""
    if wavelet in ("morl", "mexh"):
        half = int(np.ceil(8 * scale))  # both wavelets are ≈0 beyond |t| = 8 (in units of scale)
        t = np.arange(-half, half + 1) / scale
        if wavelet == "morl":
            psi = np.exp(-t**2 / 2) * np.cos(5 * t)
        else:
            psi = (1 - t**2) * np.exp(-t**2 / 2)
        psi /= np.sqrt(scale)
        return scipy.signal.fftconvolve(x, psi[::-1], mode="same")
    import pywt  # _central_frequency already checked it is there

    coefs, _ = pywt.cwt(x, [scale], wavelet)
    return coefs[0]


def cwt_peaks(audio, center_frequency: float, wavelet: str = "morl", peak_threshold=0.2, peak_separation=None,
              plot: bool = False):
    """Times of energy bursts at one frequency, from a single-scale wavelet transform.

    The transform at ``center_frequency`` is squared, smoothed over two cycles
    of that frequency (removing the carrier's ripple), scaled to a maximum of 1
    and searched for peaks. Used as the feature for ruffed grouse drumming.

    Parameters
    ----------
    audio : opso_nb.audio.Audio
        Mono audio; resample first to a low rate (≥ 2 × ``center_frequency``)
        to keep this cheap.
    center_frequency : float
        Frequency (Hz) to extract.
    wavelet : str
        ``"morl"`` (default) or ``"mexh"``; others with PyWavelets installed.
    peak_threshold : float or None
        Minimum peak height in the 0-1 normalized signal (None: any).
    peak_separation : float or None
        Minimum time between peaks in seconds (None: any).
    plot : bool
        Plot the normalized signal and the peaks with matplotlib.

    Returns
    -------
    peak_times : numpy.ndarray
        Seconds from the start of ``audio``.
    peak_levels : numpy.ndarray
        Normalized height (0-1) of each peak.
    """
    x = _as_signal(audio.samples, "audio.samples")
    sr = audio.sample_rate
    if sr < 2 * center_frequency:
        raise ValueError(
            f"sample rate {sr} Hz is below twice the center_frequency ({center_frequency} Hz): resample up or "
            "choose a lower frequency"
        )
    scale = frequency2scale(center_frequency, wavelet, sr)
    power = _cwt_single_scale(x - x.mean(), scale, wavelet) ** 2
    width = max(1, int(round(2 * sr / center_frequency)))
    smooth = np.convolve(power, np.hanning(width + 2)[1:-1] / np.hanning(width + 2)[1:-1].sum(), "same")
    peak = smooth.max()
    level = smooth / peak if peak > 0 else smooth
    distance = None
    if peak_separation is not None:
        distance = max(1, int(round(peak_separation * sr)))
    idx, _ = scipy.signal.find_peaks(level, height=peak_threshold, distance=distance)
    times = idx / sr
    if plot:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 2.5))
        ax.plot(np.arange(len(level)) / sr, level, lw=0.8)
        ax.plot(times, level[idx], "rx")
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"{center_frequency:g} Hz energy (norm.)")
    return times, level[idx]


def find_accel_sequences(t, dt_range=(0.05, 0.8), dy_range=(-0.2, 0), d2y_range=(-0.05, 0.15), max_skip=3,
                         duration_range=(1, 15), points_range=(5, 100)):
    """Find accelerating (or decelerating) runs in a series of event times.

    Each event time ``t[i]`` is paired with ``y[i] = t[i+1] - t[i]``, the
    interval to the next event. Walking through the points, a candidate
    sequence accepts a point when, relative to the sequence's last point,
    ``dt`` (time step) is in ``dt_range``, ``dy`` (change of interval) is in
    ``dy_range`` and ``d2y`` (change of ``dy``) is in ``d2y_range``. A sequence
    ends after more than ``max_skip`` rejected points in a row or a gap longer
    than ``dt_range[1]``; it is kept if it lasts ``duration_range`` seconds
    (first to last point) and has ``points_range`` points. A new candidate
    starts at the point that ended the previous one.

    For ruffed grouse drumming the beats speed up: intervals shrink
    (``dy < 0``) smoothly.

    Parameters
    ----------
    t : array-like
        Event times in seconds, increasing.
    dt_range, dy_range, d2y_range : (float, float)
        Inclusive ranges (seconds) for the point-to-point criteria.
    max_skip : int
        Rejected points tolerated in a row before a sequence ends.
    duration_range : (float, float)
        Allowed sequence length in seconds.
    points_range : (int, int)
        Allowed number of points in a sequence.

    Returns
    -------
    sequences_t, sequences_y : list of list of float
        Times and intervals of each detected sequence.
    """
    t = np.asarray(t, dtype=float).ravel()
    if np.any(~np.isfinite(t)):
        raise ValueError("t contains NaN/inf")
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("t must be sorted in increasing order")
    y = np.diff(t)
    pts_t = t[:-1]
    sequences_t, sequences_y = [], []

    def close(seq_t, seq_y):
        if not seq_t:
            return
        duration = seq_t[-1] - seq_t[0]
        if (duration_range[0] <= duration <= duration_range[1]
                and points_range[0] <= len(seq_t) <= points_range[1]):
            sequences_t.append(list(seq_t))
            sequences_y.append(list(seq_y))

    seq_t, seq_y, last_dy, skipped = [], [], None, 0
    for ti, yi in zip(pts_t, y):
        if not seq_t:
            seq_t, seq_y, last_dy, skipped = [ti], [yi], None, 0
            continue
        dt = ti - seq_t[-1]
        if dt > dt_range[1]:
            close(seq_t, seq_y)
            seq_t, seq_y, last_dy, skipped = [ti], [yi], None, 0
            continue
        dy = yi - seq_y[-1]
        ok = dt_range[0] <= dt <= dt_range[1] and dy_range[0] <= dy <= dy_range[1]
        if ok and last_dy is not None:
            ok = d2y_range[0] <= dy - last_dy <= d2y_range[1]
        if ok:
            seq_t.append(ti)
            seq_y.append(yi)
            last_dy, skipped = dy, 0
        else:
            skipped += 1
            if skipped > max_skip:
                close(seq_t, seq_y)
                seq_t, seq_y, last_dy, skipped = [ti], [yi], None, 0
    close(seq_t, seq_y)
    return sequences_t, sequences_y


def detect_peak_sequence_cwt(audio, sample_rate=400, window_len=60, center_frequency=50, wavelet="morl",
                             peak_threshold=0.2, peak_separation=15 / 400, dt_range=(0.05, 0.8),
                             dy_range=(-0.2, 0), d2y_range=(-0.05, 0.15), max_skip=3, duration_range=(1, 15),
                             points_range=(9, 100), plot=False):
    """Detect accelerating sequences of low-frequency beats (ruffed grouse drumming).

    The audio is resampled to ``sample_rate`` and cut into non-overlapping
    analysis windows of ``window_len`` seconds; in each, :func:`cwt_peaks`
    finds beats and :func:`find_accel_sequences` groups them. The wavelet
    signal is normalized per window, so the window length affects results. An
    incomplete window at the end is discarded, except that audio shorter than
    one window is analysed whole.

    Parameters
    ----------
    audio : opso_nb.audio.Audio
    sample_rate : int
        Analysis rate in Hz (≥ 2 × ``center_frequency``; low is cheap).
    window_len : float
        Analysis window length in seconds.
    center_frequency, wavelet, peak_threshold, peak_separation
        See :func:`cwt_peaks` (Hz, name, 0-1, seconds).
    dt_range, dy_range, d2y_range, max_skip, duration_range, points_range
        See :func:`find_accel_sequences`.
    plot : bool
        Plot each window's peaks and detected sequences.

    Returns
    -------
    pandas.DataFrame
        One row per sequence: ``sequence_y``, ``sequence_t`` (lists, times
        from the start of the audio, s), ``window_start_t``, ``seq_len``,
        ``seq_start_time``, ``seq_end_time``, ``seq_midpoint_time`` (s).
    """
    if audio.sample_rate != sample_rate:
        audio = audio.resample(sample_rate)
    total = audio.duration
    if total <= 0:
        raise ValueError("audio is empty")
    n_windows = int(np.floor(total / window_len + 1e-9))
    starts = [i * window_len for i in range(n_windows)] if n_windows else [0.0]
    rows = []
    for start in starts:
        window = audio.trim(start, min(start + window_len, total))
        times, levels = cwt_peaks(window, center_frequency, wavelet, peak_threshold, peak_separation)
        seq_t, seq_y = find_accel_sequences(times, dt_range, dy_range, d2y_range, max_skip, duration_range,
                                            points_range)
        for st, sy in zip(seq_t, seq_y):
            st = [start + v for v in st]
            rows.append(dict(sequence_y=sy, sequence_t=st, window_start_t=start, seq_len=len(st),
                             seq_start_time=st[0], seq_end_time=st[-1], seq_midpoint_time=(st[0] + st[-1]) / 2))
        if plot:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(8, 3))
            if len(times) > 1:
                ax.scatter(start + times[:-1], np.diff(times), s=10, c="0.5", label="peaks")
            for st, sy in zip(seq_t, seq_y):
                ax.plot([start + v for v in st], sy, "r.-")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("interval to next peak (s)")
    columns = ["sequence_y", "sequence_t", "window_start_t", "seq_len", "seq_start_time", "seq_end_time",
               "seq_midpoint_time"]
    return pd.DataFrame(rows, columns=columns)


def thresholded_event_durations(x, threshold, normalize: bool = False, sample_rate: float = 1):
    """Start times and durations of runs where ``x`` exceeds ``threshold``.

    Parameters
    ----------
    x : array-like
        1-D signal. NaN counts as below the threshold.
    threshold : float
        A sample is "in an event" when ``x > threshold``.
    normalize : bool
        Divide ``x`` by its maximum first (threshold then relative, 0-1).
    sample_rate : float
        Samples per second of ``x``; with the default 1 results are in samples.

    Returns
    -------
    start_times : numpy.ndarray
        Start of each event (``index / sample_rate``).
    durations : numpy.ndarray
        Length of each event (``n_samples / sample_rate``).

    Examples
    --------
    >>> thresholded_event_durations([0, 1, 1, 0, 1], 0.5)
    (array([1., 4.]), array([2., 1.]))
    """
    x = np.asarray(x, dtype=float).ravel()
    if x.size == 0:
        return np.array([]), np.array([])
    if normalize:
        peak = np.nanmax(x) if np.any(np.isfinite(x)) else np.nan
        if not peak > 0:
            raise ValueError(f"cannot normalize: maximum of x is {peak}")
        x = x / peak
    above = np.nan_to_num(x, nan=-np.inf) > threshold
    edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return starts / sample_rate, (ends - starts) / sample_rate
