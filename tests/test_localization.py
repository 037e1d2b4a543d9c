"""Localization: exact recovery from clean TDOAs, simulated arrays, residual filtering, errors."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from opso_nb import sample_data
from opso_nb.audio import Audio
from opso_nb.localization import (
    ALGORITHMS,
    InsufficientReceiversError,
    LocalizationSettings,
    SegmentCache,
    SpatialEvent,
    SynchronizedRecorderArray,
    calc_speed_of_sound,
    calculate_tdoa_residuals,
    estimate_delays_together,
    events_to_df,
    gillette_localize,
    iter_localized_groups,
    latlon_to_xy,
    least_squares_localize,
    localize,
    localize_events,
    lorentz_ip,
    simulate_array_recordings,
    soundfinder_localize,
    xy_to_latlon,
)
from opso_nb.signal_processing import gcc

SQUARE_2D = np.array([[0, 0], [80, 0], [80, 80], [0, 80], [40, 40], [40, -10]], float)


def clean_tdoas(receivers, source, c=343.0):
    t = np.linalg.norm(receivers - source, axis=1) / c
    return t - t[0]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dims", [2, 3])
def test_exact_recovery_from_noise_free_tdoas(algorithm, dims):
    rng = np.random.default_rng(dims)
    for _ in range(5):
        receivers = rng.uniform(0, 100, (6, dims))
        if dims == 3:
            receivers[:, 2] = rng.uniform(0, 15, 6)
        source = rng.uniform(10, 90, dims)
        estimate = localize(receivers, clean_tdoas(receivers, source), algorithm)
        assert np.abs(estimate - source).max() < 0.01  # within a centimetre


def test_minimum_receivers_per_algorithm():
    receivers = SQUARE_2D[:3]
    tdoas = clean_tdoas(receivers, np.array([30.0, 50.0]))
    with pytest.raises(InsufficientReceiversError, match="gillette needs at least 4"):
        localize(receivers, tdoas, "gillette")
    estimate = localize(receivers, tdoas, "least_squares")
    assert np.abs(estimate - [30, 50]).max() < 0.05


def test_residuals_zero_at_truth_and_large_for_wrong_delay():
    source = np.array([25.0, 60.0])
    tdoas = clean_tdoas(SQUARE_2D, source)
    assert np.abs(calculate_tdoa_residuals(SQUARE_2D, tdoas, source)).max() < 1e-9
    wrong = tdoas.copy()
    wrong[2] += 0.03  # a 10 m error on one receiver
    estimate = localize(SQUARE_2D, wrong, "least_squares")
    rms = np.sqrt(np.mean(calculate_tdoa_residuals(SQUARE_2D, wrong, estimate) ** 2))
    assert rms > 1.0


def test_speed_of_sound_and_lorentz():
    assert calc_speed_of_sound(0) == pytest.approx(331.3)
    assert calc_speed_of_sound(20) == pytest.approx(343.2, abs=0.1)
    assert lorentz_ip([1, 2, 3, 4]) == 1 + 4 + 9 - 16
    assert lorentz_ip([1, 2, 3], [3, 2, 1]) == 3 + 4 - 3


def test_latlon_round_trip_and_scale():
    lat, lon = np.array([40.0, 40.001]), np.array([-79.0, -79.0])
    x, y = latlon_to_xy(lat, lon, 40.0, -79.0)
    assert y[1] == pytest.approx(111.2, abs=0.1)  # 0.001 degree of latitude
    back_lat, back_lon = xy_to_latlon(x, y, 40.0, -79.0)
    np.testing.assert_allclose(back_lat, lat, atol=1e-12)
    np.testing.assert_allclose(back_lon, lon, atol=1e-12)


def test_array_from_latlon_and_errors(tmp_path):
    coords = pd.DataFrame({"file": ["a.wav", "b.wav"], "lat": [40.0, 40.0005], "lon": [-79.0, -79.0]})
    array = SynchronizedRecorderArray(coords)
    assert array.file_coords.loc["b.wav", "y"] - array.file_coords.loc["a.wav", "y"] == pytest.approx(55.6, abs=0.1)
    with pytest.raises(ValueError, match="x and y"):
        SynchronizedRecorderArray(pd.DataFrame({"file": ["a"], "east": [1]}))
    with pytest.raises(ValueError, match="non-numeric"):
        SynchronizedRecorderArray(pd.DataFrame({"file": ["a"], "x": ["ten"], "y": [1]}))
    detections = pd.DataFrame({"file": ["a.wav", "zzz.wav"], "start_time": [0.0, 0.0], "end_time": [1.0, 1.0],
                               "bird": [1, 1]}).set_index(["file", "start_time", "end_time"])
    with pytest.raises(ValueError, match="not in the coordinate table.*zzz.wav"):
        array.create_candidate_events(detections, min_n_receivers=2, max_receiver_dist=100)


def test_nearby_files():
    coords = pd.DataFrame(SQUARE_2D, columns=["x", "y"], index=[f"r{i}" for i in range(6)])
    nearby = SynchronizedRecorderArray(coords).make_nearby_files_dict(60)
    assert nearby["r4"] == ["r0", "r1", "r2", "r3", "r4", "r5"]  # centre is within 57 m of all
    assert nearby["r0"] == ["r0", "r4", "r5"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("array")
    sources = pd.DataFrame({
        "x": [20.0, 55.0, 35.0, 65.0], "y": [30.0, 60.0, 15.0, 25.0], "time": [0.2, 1.3, 2.4, 3.2],
        "class": ["wren", "wren", "thrush", "thrush"],
        "low_f": [3000, 3000, 1800, 1800], "high_f": [5000, 5000, 3200, 3200]})
    sim = simulate_array_recordings(SQUARE_2D, sources, out, duration=4.0, sample_rate=22050, noise_dBFS=-45,
                                    clip_duration=1.0, seed=1)
    return sim


def test_simulator_writes_consistent_tables(simulated):
    assert simulated["file_coords"].shape == (6, 2)
    detections = simulated["detections"]
    assert list(detections.index.names) == ["file", "start_time", "end_time"]
    assert set(detections.columns) == {"thrush", "wren"}
    assert detections["wren"].sum() == 12  # two calls, heard by all six receivers


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_simulated_array_localizes_within_two_metres(simulated, algorithm):
    array = SynchronizedRecorderArray(simulated["file_coords"])
    localized, unlocalized = array.localize_detections(
        simulated["detections"], max_receiver_dist=200, min_n_receivers=5, localization_algorithm=algorithm,
        bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)}, speed_of_sound=simulated["speed_of_sound"])
    assert not unlocalized, [e.error for e in unlocalized]
    table = events_to_df(localized)
    truth = simulated["truth"]
    errors = []
    for _, row in table.iterrows():
        src = truth[(truth["class"] == row["class"]) & (truth["clip_start"] == row["start_time"])].iloc[0]
        errors.append(np.hypot(row.x - src.x, row.y - src.y))
    assert len(errors) == 4 * 6  # each detection is the reference of one (redundant) event
    assert np.median(errors) < 1.0 and max(errors) < 2.0
    assert table.residual_rms.max() < 1.0


def test_parallel_gives_same_positions(simulated):
    array = SynchronizedRecorderArray(simulated["file_coords"])
    kwargs = dict(max_receiver_dist=200, min_n_receivers=5, bandpass_ranges={"wren": (2500, 5500),
                  "thrush": (1500, 3500)}, speed_of_sound=simulated["speed_of_sound"])
    serial, _ = array.localize_detections(simulated["detections"], **kwargs)
    parallel, _ = array.localize_detections(simulated["detections"], num_workers=2, **kwargs)
    np.testing.assert_allclose(events_to_df(serial)[["x", "y"]], events_to_df(parallel)[["x", "y"]])


def test_residual_threshold_discards_event_with_wrong_delay(simulated):
    coords = simulated["file_coords"]
    event = SpatialEvent(list(coords.index), coords.to_numpy(), start_time=0.0, duration=1.0, class_name="wren",
                         bandpass_range=(2500, 5500))
    event.estimate_delays()
    good = event.estimate_location("least_squares")
    assert event.residual_rms < 0.5
    event.tdoas[3] += 0.02  # as if the cross-correlation locked onto another sound
    event.estimate_location("least_squares")
    assert event.residual_rms > 1.0
    assert np.hypot(*(good - [20, 30])) < 1.0


def test_cc_threshold_leaves_too_few_receivers(simulated):
    coords = simulated["file_coords"]
    event = SpatialEvent(list(coords.index), coords.to_numpy(), start_time=0.0, duration=1.0, class_name="wren")
    with pytest.raises(InsufficientReceiversError, match="cc_threshold"):
        event.estimate_location(cc_threshold=1.01)


def bundled_array():
    """The bundled real array (paths in the package, the six synchronized recorders)."""
    return sample_data.localization_array()


# the 'zeep' (a nocturnal flight call) sits at 7-9 kHz, above a steady insect chorus at 4.5 and 6.5 kHz
ZEEP_BAND = {"zeep": (7000, 9000)}


def test_real_bundled_array_puts_flight_call_overhead():
    coords, detections = bundled_array()
    array = SynchronizedRecorderArray(coords)
    localized, unlocalized = array.localize_detections(detections, max_receiver_dist=100, min_n_receivers=4,
                                                       localization_algorithm="least_squares",
                                                       bandpass_ranges=ZEEP_BAND, residual_threshold=0.5)
    table = events_to_df(localized)
    assert len(table) >= 3, [e.error for e in unlocalized]
    # three poles 20 m apart with microphones at 3 and 15 m: the range of a call from far overhead is poorly
    # fixed, but its direction is not. Every well-fitting event must point steeply up, the same way.
    centre = array.file_coords.to_numpy().mean(axis=0)
    directions = table[["x", "y", "z"]].to_numpy() - centre
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    elevation = np.degrees(np.arcsin(directions[:, 2]))
    assert elevation.min() > 60, elevation
    spread = np.degrees(np.arccos(np.clip(directions @ directions.mean(axis=0) / np.linalg.norm(
        directions.mean(axis=0)), -1, 1)))
    assert spread.max() < 5, spread
    assert (table["z"] > coords["z"].max()).all()


def test_late_start_recorder_is_aligned_by_its_metadata():
    coords, detections = bundled_array()
    first = coords["file"].iloc[0]
    reference = SpatialEvent([first, coords["file"].iloc[5]], coords[["x", "y", "z"]].to_numpy()[[0, 5]],
                             start_time=0.2, duration=0.3, bandpass_range=ZEEP_BAND["zeep"])
    late_file = str(sample_data.localization_folder() / "LOCA_2021_09_24_652_8_late_start.wav")
    late = SpatialEvent([first, late_file], coords[["x", "y", "z"]].to_numpy()[[0, 5]],
                        start_time=0.2, duration=0.3, bandpass_range=ZEEP_BAND["zeep"])
    tdoas, cc_maxs = reference.estimate_delays()
    late_tdoas, late_cc_maxs = late.estimate_delays()
    assert tdoas[1] == pytest.approx(late_tdoas[1], abs=1e-4)
    assert tdoas[1] == pytest.approx(0.02390, abs=1e-4)  # OpenSoundscape 0.13.2 gets 23.90 ms on these files
    assert cc_maxs[1] == pytest.approx(late_cc_maxs[1], rel=0.05)


def test_unsynchronized_lengths_are_reported(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i, seconds in enumerate([2.0, 2.0, 1.5]):
        files.append(str(tmp_path / f"r{i}.wav"))
        soundfile.write(files[-1], rng.standard_normal(int(seconds * 8000)) * 0.1, 8000)
    event = SpatialEvent(files, SQUARE_2D[:3], start_time=0.0, duration=1.0)
    with pytest.raises(ValueError, match=r"unsynchronized.*r2.wav: 1.500 s"):
        event.estimate_delays()


def test_missing_audio_is_reported_per_event_and_results_saved(simulated, tmp_path):
    coords = simulated["file_coords"].copy()
    detections = simulated["detections"]
    gone = str(tmp_path / "gone.wav")
    coords.index = [gone if i == 0 else f for i, f in enumerate(coords.index)]
    detections = detections.rename(index={simulated["file_coords"].index[0]: gone}, level="file")
    out = tmp_path / "results.csv"
    localized, unlocalized = SynchronizedRecorderArray(coords).localize_detections(
        detections, max_receiver_dist=200, min_n_receivers=5, results_csv=out,
        bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)})
    assert not localized and len(unlocalized) == 24
    assert all("gone.wav" in e.error for e in unlocalized)
    saved = pd.read_csv(out)
    assert len(saved) == 24 and saved["x"].isna().all() and saved["error"].str.contains("gone.wav").all()
    assert not list(tmp_path.glob(".results.csv*"))  # no temporary file left behind


def test_results_csv_round_trip(simulated, tmp_path):
    array = SynchronizedRecorderArray(simulated["file_coords"])
    localized, _ = array.localize_detections(
        simulated["detections"], max_receiver_dist=200, min_n_receivers=5, localization_algorithm="gillette",
        bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)}, results_csv=tmp_path / "r.csv")
    saved = pd.read_csv(tmp_path / "r.csv")
    assert list(saved.columns[:6]) == ["class", "start_time", "duration", "reference_file", "x", "y"]
    np.testing.assert_allclose(saved[["x", "y"]], events_to_df(localized)[["x", "y"]])


def test_settings_object_runs_the_same_localization(simulated):
    array = SynchronizedRecorderArray(simulated["file_coords"], speed_of_sound=simulated["speed_of_sound"])
    settings = LocalizationSettings(max_receiver_dist=200, min_n_receivers=5, localization_algorithm="soundfinder",
                                    speed_of_sound=simulated["speed_of_sound"])
    bands = {"wren": (2500, 5500), "thrush": (1500, 3500)}
    via_settings, _ = settings.localize(array, simulated["detections"], bandpass_ranges=bands)
    direct, _ = array.localize_detections(simulated["detections"], max_receiver_dist=200, min_n_receivers=5,
                                          localization_algorithm="soundfinder", bandpass_ranges=bands)
    np.testing.assert_allclose(events_to_df(via_settings)[["x", "y"]], events_to_df(direct)[["x", "y"]])
    with pytest.raises(ValueError):
        settings.localization_algorithm = "triangulate"


# ----------------------------------------------------------------------------- errors of the position algorithms
@pytest.mark.parametrize("function, needed", [(gillette_localize, 4), (soundfinder_localize, 3),
                                              (least_squares_localize, 3)])
def test_too_few_receivers_raise_insufficient_receivers(function, needed):
    receivers = SQUARE_2D[: needed - 1]
    with pytest.raises(InsufficientReceiversError, match=f"needs at least {needed} receivers in 2-D, got {needed - 1}"):
        function(receivers, clean_tdoas(receivers, np.array([30.0, 50.0])))
    receivers_3d = np.column_stack([SQUARE_2D, np.arange(6.0)])[:needed]  # 3-D needs one more
    with pytest.raises(InsufficientReceiversError, match="in 3-D"):
        function(receivers_3d, clean_tdoas(receivers_3d, np.array([30.0, 50.0, 4.0])))


@pytest.mark.parametrize("function", [gillette_localize, soundfinder_localize, least_squares_localize])
@pytest.mark.parametrize("positions, times, message", [
    (np.arange(6.0), np.zeros(6), r"\(n, 2\) or \(n, 3\)"),          # a flat list, not one row per receiver
    (np.ones((6, 4)), np.zeros(6), r"\(n, 2\) or \(n, 3\)"),         # four coordinates
    (SQUARE_2D, np.zeros(4), "one arrival time per receiver"),
    (SQUARE_2D, [0, 0.01, np.nan, 0, 0, 0], "NaN"),
    (np.where(SQUARE_2D == 80, np.inf, SQUARE_2D), np.zeros(6), "NaN or infinite"),
])
def test_bad_shapes_and_values_raise_value_error(function, positions, times, message):
    with pytest.raises(ValueError, match=message):
        function(positions, times)


def test_unknown_algorithm_and_inversion():
    tdoas = clean_tdoas(SQUARE_2D, np.array([30.0, 50.0]))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        localize(SQUARE_2D, tdoas, "triangulate")
    with pytest.raises(ValueError, match="invert_alg"):
        soundfinder_localize(SQUARE_2D, tdoas, invert_alg="svd")


@pytest.mark.parametrize("pseudo", [True, False])
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("invert_alg", ["gps", "lstsq"])
def test_soundfinder_options_all_recover_the_source(pseudo, center, invert_alg):
    receivers = np.column_stack([SQUARE_2D, [1, 3, 2, 8, 1, 15]])
    for source in ([30.0, 50.0, 4.0], [75.0, -20.0, 2.0], [10.0, 90.0, 12.0]):
        estimate = soundfinder_localize(receivers, clean_tdoas(receivers, np.array(source)) + 7.5,  # any offset
                                        invert_alg=invert_alg, center=center, pseudo=pseudo)
        np.testing.assert_allclose(estimate, source, atol=1e-6)


def test_arrival_times_may_share_any_offset():
    source = np.array([25.0, 60.0])
    tdoas = clean_tdoas(SQUARE_2D, source)
    for algorithm in ALGORITHMS:
        np.testing.assert_allclose(localize(SQUARE_2D, tdoas + 3.2, algorithm), source, atol=1e-6)


# ----------------------------------------------------------------------------- batched delays = slow reference
def slow_reference_delays(event, cc_filter, speed_of_sound):
    """The reference: each receiver read and band-passed for this event alone, each pair cross-correlated
    alone with the full gcc output, restricted to the physically possible delays."""
    spread = np.linalg.norm(event.receiver_positions[:, None] - event.receiver_positions[None], axis=-1).max()
    max_lag = int(np.floor((spread / speed_of_sound * 1.05 + 1e-3) * 22050 + 1e-9))

    def load(file):
        audio = Audio.from_file(file, offset=event.start_time, duration=event.duration)
        return audio.bandpass(*event.bandpass_range, order=9) if event.bandpass_range else audio

    reference = load(event.receiver_files[0]).samples
    tdoas, cc_maxs = [0.0], [1.0]
    for file in event.receiver_files[1:]:
        samples = load(file).samples
        n = min(len(samples), len(reference))
        cc = gcc(samples[:n], reference[:n], cc_filter=cc_filter)
        lags = np.arange(len(cc)) - (n - 1)
        keep = np.abs(lags) <= max_lag
        best = np.argmax(cc[keep])
        tdoas.append(lags[keep][best] / 22050)
        cc_maxs.append(cc[keep][best])
    return np.array(tdoas), np.array(cc_maxs)


@pytest.mark.parametrize("cc_filter", ["phat", "roth"])
def test_batched_localization_equals_the_slow_reference(simulated, cc_filter):
    # roth is not symmetric (both orders of a pair are cross-correlated); phat shares one transform per pair
    c = simulated["speed_of_sound"]
    array = SynchronizedRecorderArray(simulated["file_coords"])
    bands = {"wren": (2500, 5500), "thrush": (1500, 3500)}
    localized, unlocalized = array.localize_detections(simulated["detections"], max_receiver_dist=200,
                                                       min_n_receivers=5, localization_algorithm="least_squares",
                                                       cc_filter=cc_filter, bandpass_ranges=bands, speed_of_sound=c)
    events = localized + unlocalized
    assert len(events) == 24
    for event in events[::2]:  # half of them: the reference is slow by design
        tdoas, cc_maxs = slow_reference_delays(event, cc_filter, c)
        np.testing.assert_array_equal(event.tdoas, tdoas)  # the same sample lag
        np.testing.assert_allclose(event.cc_maxs, cc_maxs, rtol=1e-9, atol=1e-12)
        if event.position_estimate is not None:
            expected = localize(event.receiver_positions, tdoas, "least_squares", c)
            np.testing.assert_allclose(event.position_estimate, expected, atol=1e-9)


def test_each_segment_is_read_once_and_the_cache_is_bounded(simulated):
    array = SynchronizedRecorderArray(simulated["file_coords"])
    events = array.create_candidate_events(simulated["detections"], min_n_receivers=5, max_receiver_dist=200,
                                           bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)})
    cache = SegmentCache()
    estimate_delays_together(events, cache=cache)
    assert cache.misses == 6 * 4  # six recorders, four clips with calls
    assert cache.hits == sum(len(e.receiver_files) for e in events) - 24
    one_second = 22050 * 4  # float32 samples
    small = SegmentCache(max_bytes=2 * one_second)
    copies = array.create_candidate_events(simulated["detections"], min_n_receivers=5, max_receiver_dist=200,
                                           bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)})
    estimate_delays_together(copies, cache=small)
    assert small.nbytes <= 2 * one_second
    for a, b in zip(events, copies):
        np.testing.assert_array_equal(a.tdoas, b.tdoas)


def test_clip_groups_can_be_stored_as_they_finish(simulated):
    array = SynchronizedRecorderArray(simulated["file_coords"])
    bands = {"wren": (2500, 5500), "thrush": (1500, 3500)}
    events = array.create_candidate_events(simulated["detections"], min_n_receivers=5, max_receiver_dist=200,
                                           bandpass_ranges=bands)
    groups = list(iter_localized_groups(events, "gillette", speed_of_sound=simulated["speed_of_sound"]))
    assert sorted(key[0] for key, _ in groups) == [0.0, 1.0, 2.0, 3.0]  # one group per clip with a call
    assert all(len(group) == 6 and {e.start_time for e in group} == {key[0]} for key, group in groups)
    again = localize_events(array.create_candidate_events(simulated["detections"], min_n_receivers=5,
                                                          max_receiver_dist=200, bandpass_ranges=bands),
                            "gillette", speed_of_sound=simulated["speed_of_sound"])
    stored = [e for _, group in groups for e in group]
    assert sorted(tuple(np.round(e.position_estimate, 9)) for e in stored) == sorted(
        tuple(np.round(e.position_estimate, 9)) for e in again)


def test_min_n_receivers_above_the_detections_leaves_events_unlocalized(simulated):
    array = SynchronizedRecorderArray(simulated["file_coords"])
    localized, unlocalized = array.localize_detections(simulated["detections"], max_receiver_dist=200,
                                                       min_n_receivers=7)
    assert localized == [] and unlocalized == []  # no clip has seven receivers: no candidate events
    event = SpatialEvent(list(simulated["file_coords"].index), simulated["file_coords"].to_numpy(),
                         start_time=0.0, duration=1.0, bandpass_range=(2500, 5500))
    with pytest.raises(InsufficientReceiversError, match="fewer than min_n_receivers=7"):
        event.estimate_location(min_n_receivers=7)


# ----------------------------------------------------------------------------- the bundled real array
def test_real_array_delays_and_direction_match_opensoundscape():
    """Known answers from OpenSoundscape 0.13.2 on the same files and settings (zeep band, least squares).

    Its TDOAs of the event referenced on recorder 3 were [0, 32.47, -1.68, 30.79, -9.25, 23.90] ms and its
    best-fitting position (event on recorder 8) lay at 79.0 degrees elevation, azimuth 334.7 degrees from the
    array's centre. Each pole's microphones, 11.5 m apart vertically, hear the call ~33 ms apart: overhead.
    """
    coords, detections = bundled_array()
    array = SynchronizedRecorderArray(coords)
    localized, _ = array.localize_detections(detections, max_receiver_dist=100, min_n_receivers=4,
                                             localization_algorithm="least_squares", bandpass_ranges=ZEEP_BAND)
    by_reference = {Path(e.receiver_files[0]).name: e for e in localized}
    np.testing.assert_allclose(by_reference["LOCA_2021_09_24_652_3.wav"].tdoas * 1000,
                               [0, 32.47, -1.68, 30.79, -9.25, 23.90], atol=0.2)
    centre = array.file_coords.to_numpy().mean(axis=0)
    for name in ("LOCA_2021_09_24_652_3.wav", "LOCA_2021_09_24_652_8.wav"):
        event = by_reference[name]
        assert event.residual_rms < 0.05
        d = event.position_estimate - centre
        elevation = np.degrees(np.arctan2(d[2], np.hypot(d[0], d[1])))
        azimuth = np.degrees(np.arctan2(d[0], d[1])) % 360
        assert elevation == pytest.approx(79.0, abs=3) and azimuth == pytest.approx(334.7, abs=5)


def test_detections_of_a_late_started_recorder_are_matched_by_real_time():
    folder = sample_data.localization_folder()
    coords, standard = bundled_array()
    coords = pd.read_csv(folder / "LOCA_2021_aru_coords.csv", skipinitialspace=True)
    late = pd.read_csv(folder / "LOCA_2021_detections_different_starts.csv", skipinitialspace=True)
    for table in (coords, late):
        table["file"] = [str(folder / Path(f).name) for f in table["file"]]
    coords = coords[coords["file"].map(lambda f: Path(f).exists())]
    late = late.set_index(["file", "start_time", "end_time"])  # the late recorder's clip is listed at 0.1-0.4 s
    settings = dict(max_receiver_dist=100, min_n_receivers=4, localization_algorithm="least_squares",
                    bandpass_ranges=ZEEP_BAND)
    array = SynchronizedRecorderArray(coords)
    with_late, _ = array.localize_detections(late, **settings)
    usual, _ = array.localize_detections(standard, **settings)
    assert len(with_late) == len(usual) == 6
    for a, b in zip(with_late, usual):
        assert Path(a.receiver_files[0]).name.startswith(Path(b.receiver_files[0]).stem)
        np.testing.assert_allclose(a.tdoas, b.tdoas, atol=1e-4)
        np.testing.assert_allclose(a.position_estimate, b.position_estimate, atol=0.5)


def test_a_recording_with_nan_samples_fails_its_events_only(simulated, tmp_path):
    coords = simulated["file_coords"].copy()
    broken = str(tmp_path / "broken.wav")
    samples, rate = soundfile.read(coords.index[2], dtype="float32")
    samples[int(1.2 * rate):int(1.4 * rate)] = np.nan  # a glitch inside the second clip only
    soundfile.write(broken, samples, rate, subtype="FLOAT")
    coords.index = [broken if i == 2 else f for i, f in enumerate(coords.index)]
    detections = simulated["detections"].rename(index={simulated["file_coords"].index[2]: broken}, level="file")
    localized, unlocalized = SynchronizedRecorderArray(coords).localize_detections(
        detections, max_receiver_dist=200, min_n_receivers=5,
        bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)})
    assert len(unlocalized) == 6 and len(localized) == 18  # the six events of the clip with the glitch
    assert all(e.start_time == 1.0 and "broken.wav" in e.error and "NaN" in e.error for e in unlocalized)


def test_localization_into_a_run_folder_resumes_without_recomputing(simulated, tmp_path, monkeypatch):
    import warnings

    from opso_nb.localization import synchronized_recorder_array as sra
    from opso_nb.store import RunSettingsChanged, RunStore

    array = SynchronizedRecorderArray(simulated["file_coords"])
    settings = dict(max_receiver_dist=200, min_n_receivers=5, localization_algorithm="gillette",
                    bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)},
                    speed_of_sound=simulated["speed_of_sound"])
    detections = simulated["detections"]
    plain, plain_un = array.localize_detections(detections, **settings)
    expected = events_to_df(plain + plain_un)

    # a run that dies after two reference recordings keeps those two
    real, calls = sra.localize_events, []

    def dies_after_two(events, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(events[0].receiver_files[0])
        return real(events, **kwargs)

    monkeypatch.setattr(sra, "localize_events", dies_after_two)
    out = tmp_path / "localize"
    with pytest.raises(KeyboardInterrupt):
        array.localize_detections(detections, output_path=out, **settings)
    run = RunStore.existing(out, job="localize")
    assert sorted(run.records()) == sorted(calls)

    # resumed: only the other recordings are computed, and the result is the uninterrupted one
    resumed_calls = []
    monkeypatch.setattr(sra, "localize_events",
                        lambda events, **kw: resumed_calls.append(events[0].receiver_files[0]) or real(events, **kw))
    localized, unlocalized = array.localize_detections(detections, output_path=out, **settings)
    assert not set(resumed_calls) & set(calls) and len(resumed_calls) == 6 - 2
    pd.testing.assert_frame_equal(events_to_df(localized + unlocalized), expected)

    # everything stored: a rerun computes nothing; a new residual threshold is applied to the stored events
    monkeypatch.setattr(sra, "localize_events", lambda *a, **k: pytest.fail("recomputed a stored recording"))
    again, _ = array.localize_detections(detections, output_path=out, **settings)
    pd.testing.assert_frame_equal(events_to_df(again), events_to_df(localized))
    strict, rejected = array.localize_detections(detections, output_path=out, **{**settings,
                                                                                  "residual_threshold": 0.0})
    assert not strict and all("residual_threshold" in e.error for e in rejected)

    # the stored table is a clip table (reference recording, clip) with the positions
    table, failures = RunStore.existing(out, job="localize").read()
    assert list(table.index.names) == ["file", "start_time", "end_time"] and len(table) == len(expected)
    np.testing.assert_allclose(np.sort(table["x"].dropna()), np.sort(expected["x"].dropna()))
    assert failures.empty

    # other settings: a new run beside the stored one, with a warning naming the change
    monkeypatch.setattr(sra, "localize_events", real)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        array.localize_detections(detections, output_path=out, **{**settings, "cc_filter": "cc"})
    assert any(issubclass(w.category, RunSettingsChanged) and "cc_filter" in str(w.message) for w in caught)
    assert len(list(out.glob("localize-*"))) == 2


def test_events_that_fail_are_stored_as_failures(simulated, tmp_path):
    from opso_nb.store import RunStore

    coords = simulated["file_coords"].copy()
    gone = str(tmp_path / "gone.wav")
    first = simulated["file_coords"].index[0]
    coords.index = [gone if f == first else f for f in coords.index]
    detections = simulated["detections"].rename(index={first: gone}, level="file")
    _, unlocalized = SynchronizedRecorderArray(coords).localize_detections(
        detections, max_receiver_dist=200, min_n_receivers=5, output_path=tmp_path / "run",
        bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)})
    _, failures = RunStore.existing(tmp_path / "run", job="localize").read()
    assert len(failures) == len(unlocalized) == 24
    assert set(failures["stage"]) == {"localize"} and failures["error"].str.contains("gone.wav").all()
