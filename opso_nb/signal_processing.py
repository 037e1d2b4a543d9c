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
from scipy.ndimage import uniform_filter1d

__all__ = [
    "CC_FILTERS",
    "gcc",
    "tdoa",
    "tdoa_pairs",
    "butter_bandpass",
    "bandpass_filter",
    "frequency2scale",
    "cwt_peaks",
    "find_accel_sequences",
    "detect_peak_sequence_cwt",
    "thresholded_event_durations",
    "get_ones_sequence",
]

CC_FILTERS = ("phat", "roth", "scot", "ht", "cc", "cc_norm")

# Hannan-Thomson coherence is estimated by averaging spectra over this many neighbouring frequency bins:
# from a single transform |Gxy|^2 equals Gxx*Gyy exactly and the coherence would be 1 in every bin.
HT_SMOOTHING_BINS = 9

# Pairs cross-correlated per batched inverse FFT in tdoa_pairs: bounds memory (block x FFT length floats).
_PAIR_BLOCK = 32
# Weightings symmetric in the two signals: gcc(y, x) is gcc(x, y) reversed in time.
_SYMMETRIC_FILTERS = ("cc", "cc_norm", "phat", "scot")


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


def _check_filter(cc_filter, epsilon):
    if isinstance(cc_filter, (int, float, np.number)) and not isinstance(cc_filter, bool):
        raise ValueError(
            f"cc_filter must be one of {CC_FILTERS}, got the number {cc_filter!r}: newer OpenSoundscape takes "
            "max_delay as the third argument of tdoa; here pass it by name (max_delay=...)"
        )
    if cc_filter not in CC_FILTERS:
        raise ValueError(f"cc_filter must be one of {CC_FILTERS}, got {cc_filter!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")


def _band_mask(frequency_range, sample_rate, n_fft):
    """Boolean mask of the rfft bins inside ``frequency_range`` (Hz), or None to keep every bin."""
    if frequency_range is None:
        return None
    if sample_rate is None or not sample_rate > 0:
        raise ValueError("frequency_range needs the sample_rate (Hz) of the signals")
    low, high = frequency_range
    freqs = scipy.fft.rfftfreq(n_fft, 1 / sample_rate)
    keep = np.ones(len(freqs), bool)
    if low is not None:
        keep &= freqs >= low
    if high is not None:
        keep &= freqs <= high
    if not keep.any():
        raise ValueError(f"frequency_range {frequency_range} Hz keeps no frequency below Nyquist ({sample_rate / 2} Hz)")
    return keep


def _lag_window(len_x, len_y, max_lag):
    """Smallest and largest lag (samples) with data, within ``±max_lag`` if given."""
    lo, hi = -(len_y - 1), len_x - 1
    if max_lag is not None:
        lo, hi = max(lo, -max_lag), min(hi, max_lag)
    return lo, hi


def _peak_lags(r, lo, hi, n_fft, reverse=False):
    """Argmax lag and value of each row of circular correlations ``r`` over lags ``lo..hi`` (lo ≤ 0 ≤ hi).

    ``reverse`` reads ``r`` as the correlation of the pair in the other order
    (lag ``L`` at ``-L``). Ties go to the most negative lag, as ``argmax`` over
    the "full" layout would.
    """
    if reverse:
        values = _lag_values(r, -hi, -lo, n_fft)[..., ::-1]
    else:
        values = _lag_values(r, lo, hi, n_fft)
    best = np.argmax(values, axis=-1)
    return lo + best, np.take_along_axis(values, np.asarray(best)[..., None], axis=-1)[..., 0]


def _lag_values(r, lo, hi, n_fft):
    """Values of circular correlations ``r`` at lags ``lo..hi`` in increasing order (negative lags wrap around)."""
    if lo >= 0:
        return r[..., lo: hi + 1]
    return np.concatenate([r[..., n_fft + lo:], r[..., : hi + 1]], axis=-1)


def _weighted_cross_spectra(X, Y, cc_filter, epsilon, n_fft, lag_window, band=None, norms=None, workers=None):
    """Cross-spectra ``X * conj(Y)`` (rows: pairs) weighted by a GCC filter, ready for ``irfft``.

    ``lag_window`` (lo, hi) bounds the search of the Hannan-Thomson pilot delay;
    ``norms`` (rows) are the products of signal norms used by ``"cc_norm"``.
    """
    G = np.conj(Y)
    G *= X
    if band is not None:
        G[..., ~band] = 0
    if cc_filter == "cc":
        return G
    if cc_filter == "cc_norm":
        G /= norms[..., None]
        return G
    if cc_filter == "phat":
        magnitude = np.abs(G)
        magnitude += epsilon
        G /= magnitude
        return G
    if cc_filter == "roth":
        return G / (np.abs(X) ** 2 + epsilon)
    if cc_filter == "scot":
        return G / (np.sqrt(np.abs(X) ** 2 * np.abs(Y) ** 2) + epsilon)
    # "ht": maximum-likelihood weighting |g|^2 / (|Gxy| (1 - |g|^2)), g the coherence. Averaging the cross-
    # spectrum over neighbouring bins cancels it wherever its phase turns fast, i.e. for any delay that is not
    # small against the transform length; so the linear phase of a pilot delay is removed first. The pilot is
    # the PHAT or the plain cross-correlation peak, whichever leaves the more coherent spectrum.
    magnitude = np.abs(G)
    sxx = uniform_filter1d(np.abs(X) ** 2, HT_SMOOTHING_BINS, axis=-1, mode="constant")
    syy = uniform_filter1d(np.abs(Y) ** 2, HT_SMOOTHING_BINS, axis=-1, mode="constant")
    power = np.broadcast_to(sxx * syy, G.shape)
    bins = np.arange(G.shape[-1])
    coherence, total = None, None
    for pilot_weighted in (G / (magnitude + epsilon), G):
        pilot, _ = _peak_lags(scipy.fft.irfft(pilot_weighted, n_fft, axis=-1, workers=workers), *lag_window, n_fft)
        aligned = G * np.exp(2j * np.pi * np.outer(np.atleast_1d(pilot), bins) / n_fft).reshape(G.shape)
        sxy = uniform_filter1d(aligned, HT_SMOOTHING_BINS, axis=-1, mode="constant")
        candidate = np.divide(np.abs(sxy) ** 2, power, out=np.zeros(G.shape), where=power > 0)
        candidate_total = candidate.sum(axis=-1)
        if coherence is None:
            coherence, total = candidate, candidate_total
        else:
            better = candidate_total > total
            coherence[better] = candidate[better]
    coherence = np.clip(coherence, 0.0, 1.0 - 1e-6)
    return G * coherence / (magnitude * (1.0 - coherence) + epsilon)


def gcc(x, y, cc_filter: str = "phat", epsilon: float = 0.001, radius=None, *, frequency_range=None,
        sample_rate=None):
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
    cc_filter : {"phat", "roth", "scot", "ht", "cc", "cc_norm"}
        Frequency weighting:

        - ``"phat"`` (default) phase transform, ``1/|Gxy|``: keeps only the
          phase, giving a sharp peak that is robust to reverberation and to
          the spectral colour of the source.
        - ``"roth"``: ``1/Gxx`` (whitens by the first signal's spectrum).
        - ``"scot"``: smoothed coherence transform, ``1/sqrt(Gxx*Gyy)``. With
          one transform per signal (no averaging) this equals PHAT.
        - ``"ht"``: Hannan-Thomson (maximum likelihood) weighting
          ``g^2 / (|Gxy| (1 - g^2))`` with ``g^2`` the magnitude-squared
          coherence, estimated from spectra averaged over
          :data:`HT_SMOOTHING_BINS` neighbouring frequency bins after removing
          the phase of a pilot delay (the PHAT peak), so that the estimate
          does not depend on the delay.
        - ``"cc"``: no weighting; equals ``scipy.signal.correlate(x, y)``.
        - ``"cc_norm"``: cross-correlation of the mean-removed signals divided
          by the product of their norms (a correlation coefficient, 1 for
          identical signals at lag 0).
    epsilon : float
        Small value added to denominators so silent bins do not divide by 0.
    radius : int or None
        If given, return only lags ``-radius .. +radius`` samples
        (``2 * radius + 1`` values, lag 0 in the middle).
    frequency_range : (float or None, float or None), optional
        Keep only this band (Hz) of the cross-spectrum; needs ``sample_rate``.
        ``None`` on either side leaves that side open. (From newer OpenSoundscape.)
    sample_rate : float, optional
        Sample rate in Hz, used only with ``frequency_range``.

    Returns
    -------
    numpy.ndarray
        1-D float64 array of correlation values by lag.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.zeros(50); y[10] = 1.0
    >>> x = np.roll(y, 7)               # x is y delayed by 7 samples
    >>> int(np.argmax(gcc(x, y, "cc"))) - (len(y) - 1)
    7
    """
    x = _as_signal(x, "x")
    y = _as_signal(y, "y")
    _check_filter(cc_filter, epsilon)
    if radius is not None:
        radius = int(radius)
        if radius < 0:
            raise ValueError(f"radius must be ≥ 0, got {radius}")
    n_fft = scipy.fft.next_fast_len(len(x) + len(y) - 1, real=True)  # ≥ the full length: linear, not circular
    norms = None
    if cc_filter == "cc_norm":
        x, y = x - x.mean(), y - y.mean()
        norms = np.atleast_1d(_norm_product(np.linalg.norm(x), np.linalg.norm(y)))
    X = scipy.fft.rfft(x, n_fft)[None]
    Y = scipy.fft.rfft(y, n_fft)[None]
    window = _lag_window(len(x), len(y), radius)
    band = _band_mask(frequency_range, sample_rate, n_fft)
    r = scipy.fft.irfft(_weighted_cross_spectra(X, Y, cc_filter, epsilon, n_fft, window, band, norms)[0], n_fft)
    if radius is None:
        return r[np.arange(-(len(y) - 1), len(x)) % n_fft]
    out = np.zeros(2 * radius + 1)  # lags beyond the data are zero correlation
    lo, hi = window
    out[lo + radius: hi + radius + 1] = r[np.arange(lo, hi + 1) % n_fft]
    return out


def _norm_product(norm_x, norm_y):
    product = norm_x * norm_y
    return product if product > 0 else 1.0  # a constant signal correlates with nothing: all zeros, not NaN


def tdoa(signal, reference_signal, cc_filter: str = "phat", sample_rate: float = 1, return_max: bool = False,
         max_delay=None, *, frequency_range=None):
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
    frequency_range : (float or None, float or None), optional
        Band (Hz) of the cross-spectrum to use, see :func:`gcc`.

    Returns
    -------
    float or (float, float)
        Delay in seconds (``lag / sample_rate``), and the peak value if
        ``return_max``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> reference = rng.standard_normal(1000)
    >>> tdoa(np.roll(reference, 25), reference, sample_rate=100)   # 25 samples at 100 Hz
    0.25
    """
    delays, maxima = tdoa_pairs([signal, reference_signal], [(0, 1)], cc_filter=cc_filter, sample_rate=sample_rate,
                                max_delay=max_delay, frequency_range=frequency_range, return_max=True,
                                names=("signal", "reference_signal"))
    if return_max:
        return float(delays[0]), float(maxima[0])
    return float(delays[0])


def tdoa_pairs(signals, pairs, cc_filter: str = "phat", sample_rate: float = 1, max_delay=None,
               epsilon: float = 0.001, frequency_range=None, return_max: bool = False, workers: int | None = -1,
               names=None):
    """Delays of many (signal, reference) pairs drawn from one set of signals, each transformed once.

    The batched form of :func:`tdoa` (which calls it with one pair): every
    signal is Fourier-transformed once, however many pairs it is in, and the
    pairs' weighted cross-spectra are transformed back in blocks with
    ``scipy.fft`` worker threads. For a pair of signals this gives the same
    numbers as :func:`tdoa` when all signals are equally long (the common
    transform length is that of the longest pair).

    Parameters
    ----------
    signals : sequence of array-like
        1-D sample arrays with the same sample rate.
    pairs : sequence of (int, int)
        ``(i, j)``: delay of ``signals[i]`` relative to ``signals[j]``.
    cc_filter, sample_rate, frequency_range
        As in :func:`tdoa` (Hz, Hz).
    max_delay : float, array-like or None
        Largest absolute delay searched (s), for all pairs or one value per pair.
    epsilon : float
        See :func:`gcc`.
    return_max : bool
        Also return the peak correlation value of each pair.
    workers : int or None
        Threads for the FFTs (``scipy.fft`` convention: -1 all cores).
    names : sequence of str, optional
        Names of the signals for error messages.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        Delays in seconds, one per pair (and the peak values if ``return_max``).
    """
    _check_filter(cc_filter, epsilon)
    if not sample_rate > 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    arrays = [_as_signal(s, names[k] if names else f"signals[{k}]") for k, s in enumerate(signals)]
    pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= len(arrays)):
        raise ValueError(f"pairs index {len(arrays)} signals; got indices {pairs.min()}..{pairs.max()}")
    max_lags = [None] * len(pairs)
    if max_delay is not None:
        max_delay = np.broadcast_to(np.asarray(max_delay, dtype=float), (len(pairs),))
        if np.any(~(max_delay >= 0)):
            raise ValueError(f"max_delay must be ≥ 0 s, got {max_delay.min()}")
        max_lags = np.floor(max_delay * sample_rate + 1e-9).astype(int).tolist()
    delays = np.zeros(len(pairs))
    maxima = np.zeros(len(pairs))
    if len(pairs) == 0:
        return (delays, maxima) if return_max else delays

    lengths = np.array([len(a) for a in arrays])
    n_fft = scipy.fft.next_fast_len(int((lengths[pairs[:, 0]] + lengths[pairs[:, 1]]).max()) - 1, real=True)
    norms = None
    if cc_filter == "cc_norm":
        arrays = [a - a.mean() for a in arrays]
        norms = np.array([np.linalg.norm(a) for a in arrays])
    stacked = np.zeros((len(arrays), lengths.max()))
    for k, a in enumerate(arrays):
        stacked[k, : len(a)] = a
    spectra = scipy.fft.rfft(stacked, n_fft, axis=-1, workers=workers)
    band = _band_mask(frequency_range, sample_rate, n_fft)
    windows = [_lag_window(lengths[a], lengths[b], lag) for (a, b), lag in zip(pairs, max_lags)]
    if cc_filter in _SYMMETRIC_FILTERS:
        # (b, a) correlates as (a, b) reversed in time: one inverse transform serves both orders
        unique, inverse = np.unique(np.sort(pairs, axis=1), axis=0, return_inverse=True)
        flipped = pairs[:, 0] > pairs[:, 1]
    else:
        unique, inverse, flipped = pairs, np.arange(len(pairs)), np.zeros(len(pairs), bool)
    requests = [[] for _ in unique]
    for k, u in enumerate(np.ravel(inverse)):
        requests[u].append(k)
    for start in range(0, len(unique), _PAIR_BLOCK):
        block = unique[start: start + _PAIR_BLOCK]
        pair_norms = None if norms is None else np.array([_norm_product(norms[a], norms[b]) for a, b in block])
        block_windows = [windows[requests[start + k][0]] for k in range(len(block))]
        if cc_filter == "ht" and len(set(block_windows)) > 1:  # each pair's pilot searches its own window
            weighted = np.concatenate([
                _weighted_cross_spectra(spectra[[a]], spectra[[b]], cc_filter, epsilon, n_fft, w, band, None, workers)
                for (a, b), w in zip(block, block_windows)])
        else:
            weighted = _weighted_cross_spectra(spectra[block[:, 0]], spectra[block[:, 1]], cc_filter, epsilon,
                                               n_fft, block_windows[0], band, pair_norms, workers)
        r = scipy.fft.irfft(weighted, n_fft, axis=-1, workers=workers)
        for k, row in enumerate(r):
            for request in requests[start + k]:
                lo, hi = windows[request]
                lag, value = _peak_lags(row, lo, hi, n_fft, reverse=flipped[request])
                delays[request] = lag / sample_rate
                maxima[request] = value
    return (delays, maxima) if return_max else delays


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
_WAVELET_SUPPORT = 8.0  # both built-in wavelets are sampled on [-8, 8] (in units of the scale)


def _central_frequency(wavelet):
    if wavelet in _CENTRAL_FREQUENCY:
        return _CENTRAL_FREQUENCY[wavelet]
    try:
        import pywt  # optional: only for wavelets not built in
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

    Examples
    --------
    >>> frequency2scale(50, "morl", 400)
    6.5
    """
    if not frequency > 0 or not sample_rate > 0:
        raise ValueError(f"frequency and sample_rate must be > 0 Hz, got {frequency} and {sample_rate}")
    return _central_frequency(wavelet) * sample_rate / frequency


def _wavelet_kernel(wavelet, scale, subsamples=64):
    """Taps of the scaled wavelet, each the wavelet's average over one sample (``psi(t/scale)/sqrt(scale)``).

    The taps sit on a grid anchored at the wavelet's left end (-8 scale units),
    as PyWavelets samples it, so a transform here lines up with
    ``pywt.cwt`` (to within a percent for scales up to about 10).
    """
    half = int(np.ceil(_WAVELET_SUPPORT * scale)) + 2
    offset = 0.5 - (_WAVELET_SUPPORT * scale) % 1  # where the anchored grid falls between samples
    edges = np.arange(-half, half + 1)[:, None] + offset - 0.5
    u = (edges + (np.arange(subsamples) + 0.5)[None, :] / subsamples) / scale
    if wavelet == "morl":
        psi = np.exp(-(u**2) / 2) * np.cos(5 * u)
    else:  # mexh
        psi = (1 - u**2) * np.exp(-(u**2) / 2)
    psi[np.abs(u) > _WAVELET_SUPPORT] = 0
    return psi.mean(axis=1) / np.sqrt(scale)


def _cwt_single_scale(x, scale, wavelet):
    """Wavelet transform of ``x`` at one scale (same length as ``x``)."""
    if wavelet in _CENTRAL_FREQUENCY:
        return scipy.signal.fftconvolve(x, _wavelet_kernel(wavelet, scale)[::-1], mode="same")
    import pywt  # _central_frequency already checked that it is installed

    coefs, _ = pywt.cwt(x, [scale], wavelet)
    return coefs[0]


def cwt_peaks(audio, center_frequency: float, wavelet: str = "morl", peak_threshold=0.2, peak_separation=None,
              plot: bool = False):
    """Times of energy bursts at one frequency, from a single-scale wavelet transform.

    The transform at ``center_frequency`` is squared, smoothed (the magnitude
    of its analytic signal, i.e. its Hilbert envelope), scaled to a maximum of
    1 and searched for peaks. Used as the feature for ruffed grouse drumming.

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
        Seconds from the start of ``audio`` (sample index / sample rate).
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
    envelope = np.abs(scipy.signal.hilbert(_cwt_single_scale(x, scale, wavelet) ** 2))
    peak = envelope.max()
    level = envelope / peak if peak > 0 else envelope
    distance = None
    if peak_separation is not None:
        distance = max(1.0, peak_separation * sr)
    idx, _ = scipy.signal.find_peaks(level, height=peak_threshold, distance=distance)
    times = idx / sr
    if plot:
        import matplotlib.pyplot as plt  # plotting only: keeps matplotlib out of the import of this module

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
    interval to the next event (the last event has none and is not a point).
    A candidate sequence starts from an *anchor* point, which is not part of
    the result. Each following point is accepted when, relative to the last
    accepted point (or the anchor), the time step ``dt`` is in ``dt_range``,
    the change of interval ``dy`` is in ``dy_range`` and, from the second
    accepted point on, the change of ``dy`` (``d2y``) is in ``d2y_range``.
    While nothing has been accepted, a rejected point becomes the new anchor.
    Otherwise a rejected point is skipped, and the sequence ends when ``dt``
    falls outside ``dt_range`` or after more than ``max_skip`` rejected points
    in a row; the next point then anchors a new candidate. An ended sequence is
    kept if it lasts ``duration_range`` seconds (first to last point) and has
    ``points_range`` points. These rules give the same sequences as
    OpenSoundscape (see the differences page for the rare exception).

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

    Examples
    --------
    >>> seq_t, seq_y = find_accel_sequences([0, 0.5, 0.9, 1.2, 1.4, 1.55], duration_range=(0, 10),
    ...                                     points_range=(1, 10))
    >>> seq_t
    [[0.5, 0.9, 1.2, 1.4]]
    """
    t = np.asarray(t, dtype=float).ravel()
    if np.any(~np.isfinite(t)):
        raise ValueError("t contains NaN/inf")
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("t must be sorted in increasing order")
    points = list(zip(t[:-1].tolist(), np.diff(t).tolist()))
    sequences_t, sequences_y = [], []

    def close(candidate):
        accepted = candidate[1:]  # candidate[0] is the anchor
        if not accepted:
            return
        duration = accepted[-1][0] - accepted[0][0]
        if (duration_range[0] <= duration <= duration_range[1]
                and points_range[0] <= len(accepted) <= points_range[1]):
            sequences_t.append([p[0] for p in accepted])
            sequences_y.append([p[1] for p in accepted])

    candidate, last_dy, skipped = [], None, 0
    for ti, yi in points:
        if not candidate:
            candidate, last_dy, skipped = [(ti, yi)], None, 0
            continue
        dt = ti - candidate[-1][0]
        dy = yi - candidate[-1][1]
        ok = dt_range[0] <= dt <= dt_range[1] and dy_range[0] <= dy <= dy_range[1]
        if ok and last_dy is not None:
            ok = d2y_range[0] <= dy - last_dy <= d2y_range[1]
        if ok:
            candidate.append((ti, yi))
            last_dy, skipped = dy, 0
        elif len(candidate) == 1:
            candidate = [(ti, yi)]  # nothing accepted yet: measure from this point instead
        else:
            skipped += 1
            if not dt_range[0] <= dt <= dt_range[1] or skipped > max_skip:
                close(candidate)
                candidate = []
    close(candidate)
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
    one window is analysed whole (OpenSoundscape returns nothing then).

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
            import matplotlib.pyplot as plt  # plotting only

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


# --------------------------------------------------------------------------- events
def get_ones_sequence(x):
    """Positions and lengths of the runs of ones in a 0/1 (or boolean) vector.

    Parameters
    ----------
    x : array-like
        1-D vector of 0/1 or True/False.

    Returns
    -------
    starts : list of int
        Index where each run of ones begins.
    lengths : list of int
        Number of ones in each run.

    Examples
    --------
    >>> get_ones_sequence([0, 1, 1, 0, 1])
    ([1, 4], [2, 1])
    """
    ones = np.asarray(x).ravel().astype(bool)
    edges = np.diff(np.concatenate([[0], ones.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return starts.tolist(), (ends - starts).tolist()


def thresholded_event_durations(x, threshold, normalize: bool = False, sample_rate: float = 1):
    """Start times and durations of runs where ``x`` reaches ``threshold``.

    Parameters
    ----------
    x : array-like
        1-D signal. NaN counts as below the threshold.
    threshold : float
        Smallest value of a sample "in an event" (``x >= threshold``).
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
    starts, lengths = get_ones_sequence(np.nan_to_num(x, nan=-np.inf) >= threshold)
    return np.asarray(starts, float) / sample_rate, np.asarray(lengths, float) / sample_rate
