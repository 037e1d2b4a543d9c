"""Tests for opso_nb.signal_processing: known inputs, known outputs."""
import numpy as np
import pytest
import scipy.signal

from opso_nb import signal_processing as sp

FILTERS = list(sp.CC_FILTERS)  # phat, roth, scot, ht, cc, cc_norm


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


def chirp_pulse_pair(delay, n=1000, noise=0.05, seed=0):
    """A 200-sample chirp (0.05-0.3 cycles/sample) in white noise, and a copy delayed by ``delay`` samples."""
    rng = np.random.default_rng(seed)
    length = 200
    pulse = scipy.signal.chirp(np.arange(length), 0.05, length, 0.3) * np.hanning(length)
    base = np.zeros(n + 2 * abs(delay) + 10)
    start = len(base) // 2 - length // 2
    base[start:start + length] = pulse
    ref = base[abs(delay):abs(delay) + n]
    sig = np.roll(base, delay)[abs(delay):abs(delay) + n]
    return sig + noise * rng.standard_normal(n), ref + noise * rng.standard_normal(n)


@pytest.mark.parametrize("cc_filter", FILTERS)
@pytest.mark.parametrize("n", [1000, 2000])
def test_every_filter_finds_the_delay_of_a_pulse_in_noise(cc_filter, n):
    # issue 13: "ht" found lag 77 for a pulse delayed by 200 samples; its coherence estimate averaged a
    # cross-spectrum whose phase turns by 2*pi*200/n per bin, cancelling it
    for seed, delay in enumerate([200, -200, 37, -90, 450]):
        sig, ref = chirp_pulse_pair(delay, n=n, seed=seed)
        lag = int(np.argmax(sp.gcc(sig, ref, cc_filter=cc_filter))) - (n - 1)
        assert lag == delay, (cc_filter, n, delay, lag)
        assert sp.tdoa(sig, ref, cc_filter=cc_filter) == delay


def slow_tdoa(signal, reference, cc_filter, sample_rate, max_delay):
    """Reference: the full gcc output, restricted to ±max_delay, one pair at a time."""
    cc = sp.gcc(signal, reference, cc_filter=cc_filter)
    lags = np.arange(len(cc)) - (len(reference) - 1)
    keep = np.abs(lags) <= np.floor(max_delay * sample_rate + 1e-9)
    best = np.argmax(cc[keep])
    return lags[keep][best] / sample_rate, cc[keep][best]


@pytest.mark.parametrize("cc_filter", [f for f in FILTERS if f != "ht"])  # ht's pilot searches ±max_delay only
def test_tdoa_pairs_equals_one_pair_at_a_time(cc_filter):
    rng = np.random.default_rng(5)
    base = rng.standard_normal(3000)
    signals = [np.roll(base, d)[:1000] + 0.3 * rng.standard_normal(1000) for d in (0, 40, -70, 120, 5)]
    pairs = [(1, 0), (0, 1), (2, 0), (3, 2), (2, 3), (4, 4), (0, 4), (4, 0), (3, 1)]
    limits = [0.2, 0.05, 0.1, 0.2, 0.2, 0.01, 0.3, 0.3, 0.02]  # s at 1 kHz; some exclude the true delay
    delays, maxima = sp.tdoa_pairs(signals, pairs, cc_filter=cc_filter, sample_rate=1000, max_delay=limits,
                                   return_max=True)
    expected = [slow_tdoa(signals[a], signals[b], cc_filter, 1000, m) for (a, b), m in zip(pairs, limits)]
    np.testing.assert_array_equal(delays, [e[0] for e in expected])
    np.testing.assert_allclose(maxima, [e[1] for e in expected], rtol=1e-9, atol=1e-12)
    assert delays[0] == pytest.approx(0.040) and delays[1] == pytest.approx(-0.040)
    assert delays[3] == pytest.approx(0.190) and delays[4] == pytest.approx(-0.190)


def test_tdoa_pairs_ht_equals_tdoa():
    sig, ref = chirp_pulse_pair(120, n=1000)
    other, _ = chirp_pulse_pair(-60, n=1000, seed=3)
    delays = sp.tdoa_pairs([sig, ref, other], [(0, 1), (2, 1), (1, 0)], cc_filter="ht", max_delay=[300, 300, 150])
    np.testing.assert_array_equal(delays, [sp.tdoa(sig, ref, "ht", max_delay=300),
                                           sp.tdoa(other, ref, "ht", max_delay=300),
                                           sp.tdoa(ref, sig, "ht", max_delay=150)])
    assert list(delays) == [120, -60, -120]


def test_cc_norm_is_a_correlation_coefficient():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal(300) + 2.0, rng.standard_normal(200) - 1.0
    xm, ym = x - x.mean(), y - y.mean()
    expected = scipy.signal.correlate(xm, ym) / np.sqrt(np.sum(xm**2) * np.sum(ym**2))
    np.testing.assert_allclose(sp.gcc(x, y, cc_filter="cc_norm"), expected, atol=1e-12)
    assert sp.tdoa(x, x, cc_filter="cc_norm", return_max=True) == pytest.approx((0.0, 1.0))
    assert np.all(sp.gcc(np.ones(50), y, cc_filter="cc_norm") == 0)  # a constant carries no correlation


def test_frequency_range_picks_the_delay_of_the_sound_in_that_band():
    sr = 8000
    rng = np.random.default_rng(7)
    low = scipy.signal.sosfilt(scipy.signal.butter(6, [200, 800], "bandpass", fs=sr, output="sos"),
                               rng.standard_normal(4000))
    high = scipy.signal.sosfilt(scipy.signal.butter(6, [2000, 3000], "bandpass", fs=sr, output="sos"),
                                rng.standard_normal(4000))
    reference = low + high
    signal = np.roll(low, 40) + np.roll(high, -25)  # the two sources are 40 and -25 samples away
    assert sp.tdoa(signal, reference, sample_rate=sr, frequency_range=(100, 1000)) * sr == pytest.approx(40)
    assert sp.tdoa(signal, reference, sample_rate=sr, frequency_range=(1800, None)) * sr == pytest.approx(-25)
    with pytest.raises(ValueError, match="sample_rate"):
        sp.gcc(signal, reference, frequency_range=(100, 1000))


def test_tdoa_with_max_delay_in_the_third_place_explains_the_newer_signature():
    with pytest.raises(ValueError, match="max_delay=..."):
        sp.tdoa([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.5)


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


# --------------------------------------------------------------------------- filtering
def test_bandpass_filter_keeps_in_band_tone_and_removes_others():
    sr = 16000
    t = np.arange(sr) / sr
    tones = {f: np.sin(2 * np.pi * f * t) for f in (200, 1000, 5000)}
    out = sp.bandpass_filter(sum(tones.values()), 600, 1600, sr, order=6)
    middle = slice(2000, -2000)  # avoid edge transients
    amplitude = {f: 2 * abs(np.dot(out[middle], tones[f][middle])) / len(t[middle]) for f in tones}
    assert amplitude[1000] == pytest.approx(1.0, abs=0.02)
    assert amplitude[200] < 0.01 and amplitude[5000] < 0.01
    # zero phase: the kept tone is not shifted
    assert np.corrcoef(out[middle], tones[1000][middle])[0, 1] > 0.999


def test_butter_bandpass_is_sos_and_checks_band():
    sos = sp.butter_bandpass(500, 2000, 8000, order=4)
    assert sos.shape == (4, 6)
    with pytest.raises(ValueError, match="Nyquist"):
        sp.butter_bandpass(500, 5000, 8000)
    with pytest.raises(ValueError, match="low_f"):
        sp.butter_bandpass(2000, 500, 8000)


def test_frequency2scale_inverts_the_centre_frequency_relation():
    scale = sp.frequency2scale(50, "morl", 400)
    assert scale == pytest.approx(0.8125 * 400 / 50)
    assert 0.8125 / scale * 400 == pytest.approx(50)
    with pytest.raises(ValueError):
        sp.frequency2scale(0, "morl", 400)


# --------------------------------------------------------------------------- drumming
def accelerating_beats(first_interval=0.6, factor=0.88, min_interval=0.06, start=1.0):
    times = [start]
    interval = first_interval
    while interval > min_interval:
        times.append(times[-1] + interval)
        interval *= factor
    return np.array(times)


def beat_audio(beats, duration=12.0, sr=400, freq=50.0, noise=0.05, seed=0):
    from opso_nb.audio import Audio

    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * sr)) / sr
    x = noise * rng.standard_normal(len(t))
    for b in beats:
        after = t >= b
        x[after] += np.sin(2 * np.pi * freq * (t[after] - b)) * np.exp(-(t[after] - b) / 0.02)
    return Audio(x.astype(np.float32), sr)


def test_cwt_peaks_finds_each_beat():
    beats = accelerating_beats()
    times, levels = sp.cwt_peaks(beat_audio(beats), 50, peak_threshold=0.2, peak_separation=0.04)
    # the envelope peaks a little after each onset (beats decay in ~20 ms)
    np.testing.assert_allclose(times[: len(beats)] - beats, 0.016, atol=0.003)
    # as in OpenSoundscape, the squared transform's envelope can add a weak peak after the fastest beats
    assert len(times) <= len(beats) + 1 and np.all(times[len(beats):] < beats[-1] + 0.1)
    assert levels.max() == pytest.approx(1.0) and levels[: len(beats)].min() > 0.5


def test_cwt_peaks_needs_nyquist():
    from opso_nb.audio import Audio

    with pytest.raises(ValueError, match="twice the center_frequency"):
        sp.cwt_peaks(Audio(np.zeros(400, np.float32), 80), 50)


def test_find_accel_sequences_on_accelerating_series():
    beats = accelerating_beats()
    seq_t, seq_y = sp.find_accel_sequences(beats)
    assert len(seq_t) == 1
    # the first point anchors the sequence without being part of it (as OpenSoundscape reports sequences);
    # the last beat has no following interval
    np.testing.assert_allclose(seq_t[0], beats[1:-1])
    np.testing.assert_allclose(seq_y[0], np.diff(beats)[1:])


def test_find_accel_sequences_rejects_steady_and_decelerating_series():
    steady = np.arange(0, 10, 0.3)
    assert sp.find_accel_sequences(steady, dy_range=(-0.2, -0.001)) == ([], [])
    slowing = accelerating_beats()[::-1] * -1 + 20  # same intervals, reversed: decelerating
    assert sp.find_accel_sequences(slowing) == ([], [])


def test_find_accel_sequences_tolerates_max_skip_noise_points():
    beats = accelerating_beats()
    noisy = np.sort(np.concatenate([beats, [beats[3] + 0.01]]))  # one spurious peak
    seq_t, _ = sp.find_accel_sequences(noisy, max_skip=3)
    assert len(seq_t) == 1 and len(seq_t[0]) >= len(beats) - 3
    # too short for duration_range → nothing
    assert sp.find_accel_sequences(beats, duration_range=(10, 15)) == ([], [])


def test_detect_peak_sequence_cwt_on_synthetic_drumming():
    beats = accelerating_beats(start=2.0)
    from opso_nb.audio import Audio

    audio = beat_audio(beats, duration=12.0, sr=400)
    audio = Audio(np.repeat(audio.samples, 2), 800)  # exercise the resampling path
    df = sp.detect_peak_sequence_cwt(audio, window_len=12)
    assert len(df) == 1
    row = df.iloc[0]
    assert row.seq_start_time == pytest.approx(beats[1], abs=0.05)  # beats[0] anchors the sequence
    assert row.seq_end_time == pytest.approx(beats[-1], abs=0.05)  # its interval runs to a weak trailing peak
    assert row.seq_len >= len(beats) - 3
    assert list(df.columns) == ["sequence_y", "sequence_t", "window_start_t", "seq_len", "seq_start_time",
                                "seq_end_time", "seq_midpoint_time"]
    # windows: 12 s of audio with window_len=5 → two windows, the partial third is discarded
    assert set(sp.detect_peak_sequence_cwt(audio, window_len=5, duration_range=(0.5, 15),
                                           points_range=(3, 100)).window_start_t) <= {0.0, 5.0}


def test_detect_peak_sequence_cwt_on_real_ruffed_grouse():
    from opso_nb import sample_data
    from opso_nb.audio import Audio

    df = sp.detect_peak_sequence_cwt(Audio.from_file(sample_data.ruffed_grouse()))
    assert len(df) == 1
    assert 1.0 < df.seq_start_time.iloc[0] < 2.5 and 7.0 < df.seq_end_time.iloc[0] < 9.0
    assert df.seq_len.iloc[0] >= 20


# --------------------------------------------------------------------------- events
def test_thresholded_event_durations_known_output():
    starts, durations = sp.thresholded_event_durations([0, 1, 1, 0, 1], 0.5)
    np.testing.assert_array_equal(starts, [1, 4])
    np.testing.assert_array_equal(durations, [2, 1])
    starts, durations = sp.thresholded_event_durations([2, 4, 4, 0, np.nan, 4], 0.6, normalize=True, sample_rate=2)
    np.testing.assert_array_equal(starts, [0.5, 2.5])
    np.testing.assert_array_equal(durations, [1.0, 0.5])
    assert [len(a) for a in sp.thresholded_event_durations([], 0.5)] == [0, 0]
    with pytest.raises(ValueError, match="normalize"):
        sp.thresholded_event_durations([0, 0], 0.5, normalize=True)


def test_threshold_is_the_smallest_value_in_an_event():
    # "minimum value of signal to be a detection": a sample equal to the threshold is in the event
    starts, durations = sp.thresholded_event_durations([0.5, 0.5, 0.2, 0.7], 0.5, sample_rate=2)
    np.testing.assert_array_equal(starts, [0.0, 1.5])
    np.testing.assert_array_equal(durations, [1.0, 0.5])


def test_get_ones_sequence():
    assert sp.get_ones_sequence([0, 1, 1, 0, 1]) == ([1, 4], [2, 1])
    assert sp.get_ones_sequence([True, True, False, False, True, True, True]) == ([0, 4], [2, 3])
    assert sp.get_ones_sequence([0, 0]) == ([], [])
    assert sp.get_ones_sequence([]) == ([], [])
