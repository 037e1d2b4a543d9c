"""OpenSoundscape compatibility of opso_nb.signal_processing: the names we claim, with the documented
signatures and defaults, and known answers computed by OpenSoundscape 0.13.2 on the same inputs.

The reference numbers below were produced by running OpenSoundscape 0.13.2 (a separate environment) on the
deterministic inputs built by the helpers of this module; only its outputs were used. Where opso_nb differs on
purpose, see docs/differences/signal_processing.md.
"""
import inspect
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from opso_nb import sample_data
from opso_nb import signal_processing as sp
from opso_nb.audio import Audio
from test_signal_processing import accelerating_beats  # tests/ is on sys.path (conftest)

REQUIRED = inspect.Parameter.empty

# Names of the 0.9 manual's signal_processing section (and two from newer releases), with their documented
# parameters in order: (name, default) with REQUIRED for parameters without one.
CLAIMED = {
    "cwt_peaks": [("audio", REQUIRED), ("center_frequency", REQUIRED), ("wavelet", "morl"), ("peak_threshold", 0.2),
                  ("peak_separation", None), ("plot", False)],
    "detect_peak_sequence_cwt": [
        ("audio", REQUIRED), ("sample_rate", 400), ("window_len", 60), ("center_frequency", 50), ("wavelet", "morl"),
        ("peak_threshold", 0.2), ("peak_separation", 15 / 400), ("dt_range", (0.05, 0.8)), ("dy_range", (-0.2, 0)),
        ("d2y_range", (-0.05, 0.15)), ("max_skip", 3), ("duration_range", (1, 15)), ("points_range", (9, 100)),
        ("plot", False)],
    "find_accel_sequences": [("t", REQUIRED), ("dt_range", (0.05, 0.8)), ("dy_range", (-0.2, 0)),
                             ("d2y_range", (-0.05, 0.15)), ("max_skip", 3), ("duration_range", (1, 15)),
                             ("points_range", (5, 100))],
    "frequency2scale": [("frequency", REQUIRED), ("wavelet", REQUIRED), ("sample_rate", REQUIRED)],
    "gcc": [("x", REQUIRED), ("y", REQUIRED), ("cc_filter", "phat"), ("epsilon", 0.001), ("radius", None)],
    "tdoa": [("signal", REQUIRED), ("reference_signal", REQUIRED), ("cc_filter", "phat"), ("sample_rate", 1),
             ("return_max", False), ("max_delay", None)],
    "thresholded_event_durations": [("x", REQUIRED), ("threshold", REQUIRED), ("normalize", False),
                                    ("sample_rate", 1)],
    "get_ones_sequence": [("x", REQUIRED)],  # newer OpenSoundscape (private there)
}


@pytest.mark.parametrize("name", sorted(CLAIMED))
def test_claimed_names_have_the_documented_signature(name):
    function = getattr(sp, name)
    assert name in sp.__all__
    parameters = list(inspect.signature(function).parameters.values())
    documented = CLAIMED[name]
    assert [p.name for p in parameters[: len(documented)]] == [n for n, _ in documented]
    for parameter, (_, default) in zip(parameters, documented):
        if default is not REQUIRED:
            assert parameter.default == default, (name, parameter.name)
    # anything we add comes after the documented parameters and has a default
    assert all(p.default is not REQUIRED for p in parameters[len(documented):])


def test_every_documented_gcc_filter_is_accepted():
    assert set(sp.CC_FILTERS) == {"phat", "roth", "scot", "ht", "cc", "cc_norm"}
    assert "frequency_range" in inspect.signature(sp.gcc).parameters  # newer OpenSoundscape's band limit
    assert "frequency_range" in inspect.signature(sp.tdoa).parameters


# ----------------------------------------------------------------------------- deterministic inputs
def pseudo_noise(n, seed):
    """Noise-like but exactly reproducible (no random generator whose stream could change between versions)."""
    k = np.arange(n)
    return np.sin(0.7 * k * k * (seed + 1.3) + 0.3 * k) * np.cos(0.13 * k * (seed + 2.1))


def pulse_pair(delay, n=600, noise=0.05):
    """A 120-sample chirp and a copy ``delay`` samples later, each in its own pseudo-noise."""
    length = 120
    pulse = scipy.signal.chirp(np.arange(length), 0.05, length, 0.3) * np.hanning(length)
    ref = np.zeros(n)
    start = n // 2 - length // 2
    ref[start:start + length] = pulse
    sig = np.zeros(n)
    sig[start + delay:start + delay + length] = pulse
    return sig + noise * pseudo_noise(n, 1), ref + noise * pseudo_noise(n, 2)


def beat_samples(beats, duration=12.0, sr=400, freq=50.0, noise=0.05):
    """Decaying 50 Hz thumps at ``beats`` (s) in pseudo-noise: synthetic ruffed grouse drumming."""
    t = np.arange(int(duration * sr)) / sr
    x = noise * pseudo_noise(len(t), 3)
    for b in beats:
        after = t >= b
        x[after] += np.sin(2 * np.pi * freq * (t[after] - b)) * np.exp(-(t[after] - b) / 0.02)
    return x.astype(np.float32)


# ----------------------------------------------------------------------------- OpenSoundscape 0.13.2's numbers
# gcc of pulse_pair(delay): {filter: {delay: (lag of the peak in samples, peak value)}}
GCC_REFERENCE = {
    "phat": {100: (100, 0.463899), -100: (-100, 0.410391), 37: (37, 0.472581), -61: (-61, 0.452322)},
    "roth": {100: (100, 0.475964), -100: (-100, 0.377991), 37: (37, 0.491185), -61: (-61, 0.446169)},
    "scot": {100: (100, 0.463899), -100: (-100, 0.410391), 37: (37, 0.472581), -61: (-61, 0.452322)},
    "ht": {100: (100, None), -100: (-100, None), 37: (37, None), -61: (-61, None)},  # values differ on purpose
    "cc": {100: (100, 22.2909), -100: (-100, 22.1954), 37: (37, 21.8981), -61: (-61, 22.0457)},
    "cc_norm": {100: (100, 0.983553), -100: (-100, 0.983156), 37: (37, 0.98381), -61: (-61, 0.982827)},
}
# gcc(*pulse_pair(37)) at output indices 0, 100, 599, 640, 900, 1198
GCC_VALUES = {
    "phat": [0.00911248, -0.00183852, 0.0186402, 0.019053, -0.00917404, -0.000638644],
    "cc_norm": [3.34734e-07, 0.000353437, -0.00510467, -0.222051, 0.00762623, -1.13899e-07],
    "roth": [0.0181533, -0.0459409, -0.0132119, 0.0342927, -0.0293241, 0.0239863],
}

ACCEL_REFERENCE = [  # (event times, arguments, OpenSoundscape 0.13.2's sequences_t)
    ([0.171, 0.772, 1.322, 1.827, 2.289, 2.708, 3.093, 3.262, 3.438, 3.76],
     {},
     [[0.772, 1.322, 1.827, 2.289, 2.708, 3.438]]),
    ([1.886, 2.574, 3.125, 3.562, 3.936, 4.255, 4.509, 4.713, 4.901, 5.046, 5.154, 5.242, 5.315, 5.375, 5.426,
      6.812, 7.448, 8.039, 8.53, 8.98, 9.381, 9.719, 10.007, 10.271, 10.493, 10.692, 10.861, 11.001, 11.129, 11.24,
      11.348, 11.432, 11.505, 11.569, 11.625, 11.673, 11.716, 13.116, 13.8, 14.373, 14.882, 15.333, 15.699],
     {'max_skip': 3},
     [[2.574, 3.125, 3.562, 3.936, 4.255, 4.509, 4.713, 4.901, 5.046, 5.154, 5.242, 5.315, 5.375],
      [8.039, 8.53, 8.98, 9.381, 9.719, 10.007, 10.271, 10.493, 10.692, 10.861, 11.001, 11.129, 11.24, 11.348,
       11.432, 11.505, 11.569, 11.625]]),
    ([1.61, 1.705, 2.071, 2.463, 2.799, 3.087, 3.335, 3.54, 3.722, 3.861, 3.994, 4.107, 4.203, 4.287, 4.343, 4.357,
      4.42, 4.473, 4.518, 4.556, 4.587, 4.616, 4.64],
     {'points_range': (2, 100), 'duration_range': (0.22, 15)},
     [[2.463, 2.799, 3.087, 3.335, 3.54, 3.722, 3.861, 3.994, 4.107, 4.203, 4.287, 4.343]]),
    ([1.076, 1.459, 1.816, 2.122, 2.38, 2.609, 2.806, 2.969, 3.124, 3.256, 3.371, 4.623, 4.877, 5.1, 5.265, 5.42,
      5.542, 5.649, 5.74, 5.82, 5.882, 5.934, 5.978, 6.015, 6.046, 6.074],
     {},
     [[1.459, 1.816, 2.122, 2.38, 2.609, 2.806, 2.969, 3.124, 3.256]]),
    ([1.25, 1.69, 1.838, 2.236, 2.335, 2.748, 3.09, 3.396, 3.649, 3.863, 4.048, 4.198, 4.313, 4.416, 4.507, 4.586,
      4.652, 4.708, 4.754, 4.794, 4.826, 4.855, 4.879, 4.9, 4.917, 5.225, 5.504, 5.741, 5.943, 6.115, 6.27, 6.391,
      6.416, 6.504, 6.593, 6.671, 6.737, 6.794, 6.844, 6.887, 6.922, 6.952, 6.976, 7.803, 8.188, 8.502, 8.771,
      8.992, 9.179, 9.327, 10.779],
     {'max_skip': 2},
     [[2.748, 3.09, 3.396, 3.649, 3.863, 4.048, 4.198, 4.313, 4.416, 4.507, 4.586, 4.652, 4.708],
      [5.225, 5.504, 5.741, 5.943, 6.115, 6.27, 6.416, 6.593, 6.671, 6.737, 6.794, 6.844]]),
    ([0.961, 1.0, 1.912, 2.531, 3.053, 3.483, 3.824, 4.115, 4.352, 4.541, 5.14],
     {'max_skip': 1},
     [[2.531, 3.053, 3.483, 3.824, 4.115, 4.352]]),
    ([0.257, 0.75, 1.153, 1.486, 1.748, 1.958, 2.131, 2.233, 2.265, 2.375, 2.464, 2.535, 2.59, 2.635, 2.672, 3.749,
      4.223, 4.644, 4.995, 5.289, 5.555, 5.768, 5.962, 6.115, 6.25, 6.361, 6.452, 6.53, 6.594, 6.652, 6.7, 8.012,
      8.438, 8.573, 9.015, 9.374, 9.665, 9.897, 10.089],
     {'points_range': (1, 100), 'duration_range': (0.09, 15)},
     [[0.75, 1.153, 1.486, 1.748, 1.958, 2.131, 2.233], [2.464, 2.535, 2.59],
      [4.223, 4.644, 4.995, 5.289, 5.555, 5.768, 5.962, 6.115, 6.25, 6.361, 6.452, 6.53, 6.594, 6.652],
      [9.015, 9.374, 9.665, 9.897]]),
    ([0.502, 0.786, 1.027, 1.233, 1.405, 1.553, 1.673, 1.768, 1.852, 1.926, 1.985, 2.035, 2.076, 2.11, 2.138,
      2.161, 2.18, 2.195, 2.21, 2.221, 2.23, 2.238, 2.245, 2.251, 2.669, 3.871, 4.279, 4.633, 4.939, 5.174, 5.288,
      5.41, 5.606, 5.787, 5.935, 6.076, 6.194, 6.296, 6.39, 6.462, 6.526, 6.574, 6.618, 6.659, 6.694, 6.723, 6.749,
      6.772, 6.793, 6.81, 7.26, 7.566, 7.566, 7.821, 8.041, 8.197, 8.201, 8.352, 8.482, 8.588, 8.675, 8.75, 8.812,
      8.866, 8.91, 8.945, 8.974, 9.0, 9.021, 9.039, 9.054, 9.066, 9.077, 9.086, 9.093],
     {},
     [[0.786, 1.027, 1.233, 1.405, 1.553, 1.673, 1.768, 1.852, 1.926, 1.985, 2.035],
      [7.26, 7.566, 7.821, 8.041, 8.201, 8.352, 8.482, 8.588, 8.675, 8.75, 8.812, 8.866]]),
]

CWT_TIMES = [2.0154, 2.6155, 3.1457, 3.6083, 4.0183, 4.3784, 4.696, 4.9735, 5.2186, 5.4336, 5.6237, 5.7912, 5.9387,
             6.0688, 6.1813, 6.2838, 6.3713, 6.4488, 6.5164, 6.5789, 6.6189]
CWT_LEVELS = [0.7917, 0.7803, 0.7425, 0.7659, 0.8274, 0.8637, 0.7677, 0.8289, 0.8511, 0.8019, 0.7976, 0.8243, 0.721,
              0.8948, 0.8051, 0.8443, 0.7706, 0.8489, 0.7632, 1.0, 0.3654]
CWT_MEXH_TIMES = [2.0054, 2.6055, 3.1357, 3.5982, 4.0083, 4.3684, 4.6835, 4.9635, 5.2086, 5.4236, 5.6137, 5.7812,
                  5.9287, 6.0588, 6.1713, 6.2713, 6.3613, 6.4388, 6.5064, 6.5664]
CWT_MEXH_LEVELS = [0.9075, 0.9206, 0.8122, 0.8664, 0.8883, 0.9516, 0.8333, 0.9536, 0.9275, 0.9796, 0.9524, 0.9397,
                   0.8901, 0.9993, 0.9915, 0.9099, 0.907, 0.8678, 0.8541, 1.0]


@pytest.mark.parametrize("cc_filter", sorted(GCC_REFERENCE))
def test_gcc_peaks_match_opensoundscape(cc_filter):
    for delay, (lag, value) in GCC_REFERENCE[cc_filter].items():
        sig, ref = pulse_pair(delay)
        cc = sp.gcc(sig, ref, cc_filter=cc_filter)
        assert len(cc) == len(sig) + len(ref) - 1
        assert int(np.argmax(cc)) - (len(ref) - 1) == lag
        if value is not None:
            assert cc.max() == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("cc_filter", sorted(GCC_VALUES))
def test_gcc_values_match_opensoundscape(cc_filter):
    cc = sp.gcc(*pulse_pair(37), cc_filter=cc_filter)
    # OpenSoundscape computes in float32: agreement to ~1e-7 of the peak
    np.testing.assert_allclose(cc[[0, 100, 599, 640, 900, 1198]], GCC_VALUES[cc_filter], rtol=1e-4, atol=1e-7)


def test_gcc_cc_is_scipy_correlate_and_tdoa_signs():
    sig, ref = pulse_pair(37)
    np.testing.assert_allclose(sp.gcc(sig, ref, "cc"), scipy.signal.correlate(sig, ref), atol=1e-9)
    np.testing.assert_allclose(sp.gcc(sig, ref, "cc"), np.correlate(sig, ref, mode="full"), atol=1e-9)
    # "if the signal arrives 2.5 seconds after the reference signal, returns 2.5"
    assert sp.tdoa(*pulse_pair(100), sample_rate=40) == pytest.approx(2.5)
    assert sp.tdoa(*pulse_pair(-20), sample_rate=40) == pytest.approx(-0.5)
    delay, peak = sp.tdoa(*pulse_pair(100), sample_rate=40, return_max=True)
    assert (delay, peak) == pytest.approx((2.5, GCC_REFERENCE["phat"][100][1]), rel=1e-5)
    # max_delay: receivers 100 m apart, 340 m/s -> at most 0.294 s; the 2.5 s delay is outside
    assert abs(sp.tdoa(*pulse_pair(100), sample_rate=40, max_delay=100 / 340)) <= 100 / 340


def test_frequency2scale_matches_opensoundscape():
    assert sp.frequency2scale(50, "morl", 400) == pytest.approx(6.5)
    assert sp.frequency2scale(50, "mexh", 400) == pytest.approx(2.0)


@pytest.mark.parametrize("wavelet, frequency, threshold, times, levels", [
    ("morl", 50, 0.2, CWT_TIMES, CWT_LEVELS), ("mexh", 80, 0.3, CWT_MEXH_TIMES, CWT_MEXH_LEVELS)])
def test_cwt_peaks_match_opensoundscape(wavelet, frequency, threshold, times, levels):
    audio = Audio(beat_samples(accelerating_beats(start=2.0)), 400)
    peak_times, peak_levels = sp.cwt_peaks(audio, frequency, wavelet=wavelet, peak_threshold=threshold,
                                           peak_separation=0.04)
    assert len(peak_times) == len(times)
    # OpenSoundscape's time axis runs 0..duration over n points (at most one sample, 2.5 ms, apart)
    np.testing.assert_allclose(peak_times, times, atol=0.003)
    np.testing.assert_allclose(peak_levels, levels, atol=0.005)


@pytest.mark.parametrize("t, kwargs, expected", ACCEL_REFERENCE)
def test_find_accel_sequences_matches_opensoundscape(t, kwargs, expected):
    sequences_t, sequences_y = sp.find_accel_sequences(t, **kwargs)
    assert len(sequences_t) == len(expected)
    for got, want in zip(sequences_t, expected):
        np.testing.assert_allclose(got, want)
    intervals = set(zip(t[:-1], np.round(np.diff(t), 9)))
    for seq_t, seq_y in zip(sequences_t, sequences_y):  # y is the interval from each point to the next event
        assert all((v, round(y, 9)) in intervals for v, y in zip(seq_t, seq_y))


def test_detect_peak_sequence_cwt_matches_opensoundscape_on_synthetic_drumming():
    audio = Audio(np.repeat(beat_samples(accelerating_beats(start=2.0)), 2), 800)  # resampled to 400 Hz inside
    columns = ["sequence_y", "sequence_t", "window_start_t", "seq_len", "seq_start_time", "seq_end_time",
               "seq_midpoint_time"]
    # OpenSoundscape 0.13.2: (window_start_t, seq_len, seq_start_time, seq_end_time)
    expected = {12: [(0.0, 19, 2.618, 6.5789)], 5: [(0.0, 6, 2.6188, 4.6973), (5.0, 11, 5.4352, 6.5783)]}
    for window_len, rows in expected.items():
        table = sp.detect_peak_sequence_cwt(audio, window_len=window_len, duration_range=(0.5, 15),
                                            points_range=(3, 100))
        assert list(table.columns) == columns
        assert len(table) == len(rows)
        for (_, row), (window_start, length, start, end) in zip(table.iterrows(), rows):
            assert row.window_start_t == window_start and row.seq_len == length
            assert row.seq_start_time == pytest.approx(start, abs=0.005)
            assert row.seq_end_time == pytest.approx(end, abs=0.005)
            assert row.seq_midpoint_time == pytest.approx((row.seq_start_time + row.seq_end_time) / 2)


def test_detect_peak_sequence_cwt_matches_opensoundscape_on_real_drumming():
    # OpenSoundscape 0.13.2, window_len=10: one bout of 24 beats from 2.2556 to 7.7444 s; here one more beat
    # (a peak at 7.62 s that sits right at the threshold) is counted
    table = sp.detect_peak_sequence_cwt(Audio.from_file(sample_data.ruffed_grouse()), window_len=10)
    assert len(table) == 1
    row = table.iloc[0]
    assert row.seq_start_time == pytest.approx(2.2556, abs=0.01)
    assert row.seq_end_time == pytest.approx(7.7444, abs=0.01)
    assert abs(row.seq_len - 24) <= 1


def test_thresholded_event_durations_match_opensoundscape():
    def check(args, kwargs, starts, durations):
        got = sp.thresholded_event_durations(*args, **kwargs)
        np.testing.assert_array_equal(got[0], starts)
        np.testing.assert_array_equal(got[1], durations)

    check(([0, 1, 1, 0, 1], 0.5), {}, [1, 4], [2, 1])
    check(([1, 1, 0, 1], 0.5), {"sample_rate": 2}, [0, 1.5], [1, 0.5])
    check(([0.5, 0.5], 0.5), {}, [0], [2])  # a value equal to the threshold is in the event
    check(([], 0.5), {}, [], [])
    assert sp.get_ones_sequence([1, 1, 0, 0, 1, 1, 1]) == ([0, 4], [2, 3])
    assert sp.get_ones_sequence([0, 1, 1, 1]) == ([1], [3])


def test_differences_page_names_what_differs():
    page = (Path(__file__).resolve().parents[1] / "docs" / "differences" / "signal_processing.md").read_text()
    for name in ('gcc(..., cc_filter="ht")', "tdoa(signal, reference_signal", "cwt_peaks", "detect_peak_sequence_cwt",
                 "find_accel_sequences", "thresholded_event_durations", "get_ones_sequence", "tdoa_pairs"):
        assert f"`{name}" in page, name
