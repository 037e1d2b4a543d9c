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
