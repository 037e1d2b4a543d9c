"""Tests for opso_nb.signal_processing: known inputs, known outputs."""
import numpy as np
import pytest
import scipy.signal

from opso_nb import signal_processing as sp

FILTERS = ["phat", "roth", "scot", "ht", "cc"]


def delayed_pair(delay_samples, n=4000, snr_db=6.0, seed=0, sample_rate=8000):
    """A band-limited noise burst and a copy delayed by ``delay_samples`` (may be fractional), each in its own noise."""
    rng = np.random.default_rng(seed)
    src = rng.standard_normal(n + 400)
    sos = scipy.signal.butter(4, [300, 3000], "bandpass", fs=sample_rate, output="sos")
    src = scipy.signal.sosfilt(sos, src)
    # fractional delay by a phase ramp in the frequency domain (exact for a periodic signal)
    f = np.fft.rfftfreq(len(src))
    delayed = np.fft.irfft(np.fft.rfft(src) * np.exp(-2j * np.pi * f * delay_samples), len(src))
    ref, sig = src[200:200 + n], delayed[200:200 + n]
    noise_rms = np.std(src) / 10 ** (snr_db / 20)
    return sig + noise_rms * rng.standard_normal(n), ref + noise_rms * rng.standard_normal(n)


@pytest.mark.parametrize("cc_filter", FILTERS)
@pytest.mark.parametrize("delay", [37, -52, 13.4])
def test_tdoa_recovers_known_delay_within_one_sample(cc_filter, delay):
    sig, ref = delayed_pair(delay)
    est = sp.tdoa(sig, ref, cc_filter=cc_filter, sample_rate=8000)
    assert abs(est * 8000 - delay) <= 1.0, (cc_filter, est * 8000, delay)


@pytest.mark.parametrize("cc_filter", FILTERS)
def test_tdoa_sign_convention_in_seconds(cc_filter):
    # signal arrives 2.5 s after the reference → +2.5; 0.5 s before → -0.5
    sr = 100
    rng = np.random.default_rng(1)
    ref = np.zeros(1000)
    ref[300:340] = rng.standard_normal(40)
    late = np.roll(ref, 250)
    early = np.roll(ref, -50)
    assert sp.tdoa(late, ref, cc_filter=cc_filter, sample_rate=sr) == pytest.approx(2.5)
    assert sp.tdoa(early, ref, cc_filter=cc_filter, sample_rate=sr) == pytest.approx(-0.5)


def test_gcc_cc_equals_scipy_correlate():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(301), rng.standard_normal(180)
    np.testing.assert_allclose(sp.gcc(x, y, cc_filter="cc"), scipy.signal.correlate(x, y, mode="full"), atol=1e-9)
    np.testing.assert_allclose(sp.gcc(y, x, cc_filter="cc"), np.correlate(y, x, mode="full"), atol=1e-9)


def test_gcc_radius_keeps_central_lags():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(200), rng.standard_normal(200)
    full = sp.gcc(x, y, cc_filter="cc")
    part = sp.gcc(x, y, cc_filter="cc", radius=5)
    assert len(part) == 11
    np.testing.assert_allclose(part, full[199 - 5:199 + 6])


def test_phat_peak_is_one_for_identical_signals_and_return_max():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(1000)
    delay, peak = sp.tdoa(x, x, return_max=True)
    assert delay == 0
    assert peak == pytest.approx(1.0, abs=0.01)
    # pure noise pairs correlate weakly
    _, noise_peak = sp.tdoa(rng.standard_normal(1000), rng.standard_normal(1000), return_max=True)
    assert noise_peak < 0.2


def test_max_delay_bounds_the_result():
    sig, ref = delayed_pair(80)
    assert sp.tdoa(sig, ref, sample_rate=8000) * 8000 == pytest.approx(80)
    # the true delay (10 ms) is outside ±5 ms: the answer must stay inside the window
    bounded = sp.tdoa(sig, ref, sample_rate=8000, max_delay=0.005)
    assert abs(bounded) <= 0.005
    assert sp.tdoa(sig, ref, sample_rate=8000, max_delay=0.02) * 8000 == pytest.approx(80)


@pytest.mark.parametrize(
    "args, message",
    [
        (([], [1.0, 2.0]), "x: empty"),
        (([1.0, np.nan], [1.0, 2.0]), "NaN"),
        ((np.zeros((2, 3)), [1.0]), "1-D"),
    ],
)
def test_gcc_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        sp.gcc(*args)


def test_gcc_unknown_filter():
    with pytest.raises(ValueError, match="cc_filter must be one of"):
        sp.gcc([1.0, 2.0], [1.0, 2.0], cc_filter="fancy")
