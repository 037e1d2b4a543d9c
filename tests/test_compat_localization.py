"""OpenSoundscape compatibility of opso_nb.localization: the names of the 0.9 manual's localization section with
their documented signatures and defaults, the documented behaviour, and known answers (a source recovered from
simulated delays by every algorithm). Deliberate differences: docs/differences/localization.md.
"""
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opso_nb import localization as loc
from opso_nb.localization import (
    InsufficientReceiversError,
    SpatialEvent,
    SynchronizedRecorderArray,
    calc_speed_of_sound,
    calculate_tdoa_residuals,
    gillette_localize,
    localize,
    lorentz_ip,
    simulate_array_recordings,
    soundfinder_localize,
    travel_time,
)

REQUIRED = inspect.Parameter.empty

# (name, documented parameters in order as (name, default); REQUIRED where the manual gives none)
FUNCTIONS = {
    "calc_speed_of_sound": [("temperature", 20)],
    "calculate_tdoa_residuals": [("receiver_positions", REQUIRED), ("tdoas", REQUIRED),
                                 ("position_estimate", REQUIRED), ("speed_of_sound", REQUIRED)],
    "gillette_localize": [("receiver_positions", REQUIRED), ("arrival_times", REQUIRED), ("speed_of_sound", 343)],
    "localize": [("receiver_positions", REQUIRED), ("tdoas", REQUIRED), ("algorithm", REQUIRED),
                 ("speed_of_sound", 343)],
    "lorentz_ip": [("u", REQUIRED), ("v", None)],
    "soundfinder_localize": [("receiver_positions", REQUIRED), ("arrival_times", REQUIRED), ("speed_of_sound", 343),
                             ("invert_alg", "gps"), ("center", True), ("pseudo", True)],
    "travel_time": [("source", REQUIRED), ("receiver", REQUIRED), ("speed_of_sound", REQUIRED)],
}
METHODS = {
    ("SpatialEvent", "__init__"): [
        ("receiver_files", REQUIRED), ("receiver_positions", REQUIRED), ("start_time", 0), ("duration", None),
        ("class_name", None), ("bandpass_range", None), ("cc_threshold", None), ("max_delay", None)],
    ("SpatialEvent", "calculate_distance_residuals"): [("speed_of_sound", 343)],
    ("SpatialEvent", "calculate_residual_rms"): [("speed_of_sound", 343)],
    ("SpatialEvent", "estimate_delays"): [("bandpass_range", None), ("cc_filter", "phat"), ("max_delay", None)],
    ("SpatialEvent", "estimate_location"): [("algorithm", "gillette"), ("cc_threshold", None),
                                            ("min_n_receivers", 3), ("speed_of_sound", 343)],
    ("SynchronizedRecorderArray", "__init__"): [("file_coords", REQUIRED)],
    ("SynchronizedRecorderArray", "create_candidate_events"): [
        ("detections", REQUIRED), ("min_n_receivers", REQUIRED), ("max_receiver_dist", REQUIRED)],
    ("SynchronizedRecorderArray", "localize_detections"): [
        ("detections", REQUIRED), ("max_receiver_dist", REQUIRED), ("min_n_receivers", 3),
        ("localization_algorithm", "gillette"), ("cc_threshold", 0), ("cc_filter", "phat"), ("max_delay", None),
        ("bandpass_ranges", None), ("residual_threshold", np.inf)],
    ("SynchronizedRecorderArray", "make_nearby_files_dict"): [("r_max", REQUIRED)],
}


def check_signature(function, documented, skip_self=False):
    parameters = list(inspect.signature(function).parameters.values())[1 if skip_self else 0:]
    assert [p.name for p in parameters[: len(documented)]] == [n for n, _ in documented]
    for parameter, (_, default) in zip(parameters, documented):
        if default is not REQUIRED:  # a parameter documented as required may have a default here
            assert parameter.default == default, parameter.name
    assert all(p.default is not REQUIRED for p in parameters[len(documented):]), "added parameters need defaults"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_documented_functions_have_the_documented_signature(name):
    assert name in loc.__all__
    check_signature(getattr(loc, name), FUNCTIONS[name])


@pytest.mark.parametrize("owner, method", sorted(METHODS))
def test_documented_methods_have_the_documented_signature(owner, method):
    check_signature(getattr(getattr(loc, owner), method), METHODS[(owner, method)], skip_self=True)


def test_insufficient_receivers_error_is_an_exception():
    assert issubclass(InsufficientReceiversError, Exception)


# ----------------------------------------------------------------------------- known answers
def test_physics_known_answers():
    assert travel_time([0, 0], [343, 0], 343) == 1.0
    assert travel_time([0, 0, 0], [3, 4, 12], 13) == pytest.approx(1.0)
    assert lorentz_ip([1, 2, 3, 4]) == 1 + 4 + 9 - 16  # 3-D: the fourth coordinate is time
    assert lorentz_ip([1, 2, 3], [3, 2, 1]) == 3 + 4 - 3  # 2-D
    assert calc_speed_of_sound(20) == pytest.approx(343.2146, abs=1e-4)  # OpenSoundscape 0.13.2's value
    assert calc_speed_of_sound(0) == pytest.approx(331.3)


GRID_3D = np.array([[0, 0, 1], [60, 0, 2], [60, 60, 1], [0, 60, 3], [30, 30, 12], [30, -10, 6]], float)


@pytest.mark.parametrize("algorithm", ["gillette", "soundfinder", "least_squares"])
@pytest.mark.parametrize("dims", [2, 3])
def test_source_recovered_from_simulated_delays(algorithm, dims):
    receivers = GRID_3D[:, :dims]
    for source in ([20.0, 35.0, 4.0], [45.0, 10.0, 9.0], [-15.0, 70.0, 2.0]):  # inside and outside the array
        source = np.array(source[:dims])
        arrival = np.array([travel_time(source, r, 343) for r in receivers])
        tdoas = arrival - arrival[0]
        estimate = localize(receivers, tdoas, algorithm, 343)
        np.testing.assert_allclose(estimate, source, atol=1e-3)
        assert np.abs(calculate_tdoa_residuals(receivers, tdoas, estimate, 343)).max() < 1e-3


def test_gillette_and_soundfinder_documented_defaults_recover_a_source():
    receivers = GRID_3D
    source = np.array([12.0, 48.0, 5.0])
    arrival = np.linalg.norm(receivers - source, axis=1) / 343
    np.testing.assert_allclose(gillette_localize(receivers, arrival - arrival[0]), source, atol=1e-6)
    np.testing.assert_allclose(soundfinder_localize(receivers, arrival - arrival[0]), source, atol=1e-6)


def test_residuals_are_expected_minus_observed_times_speed():
    receivers = GRID_3D
    source = np.array([20.0, 20.0, 3.0])
    tdoas = np.linalg.norm(receivers - source, axis=1) / 343
    tdoas -= tdoas[0]
    observed = tdoas.copy()
    observed[2] += 0.01  # observed 10 ms later than the position implies
    residuals = calculate_tdoa_residuals(receivers, observed, source, 343)
    np.testing.assert_allclose(residuals, [0, 0, -3.43, 0, 0, 0], atol=1e-9)


@pytest.fixture(scope="module")
def array_recordings(tmp_path_factory):
    sources = pd.DataFrame({"x": [25.0, 40.0], "y": [30.0, 15.0], "z": [3.0, 5.0], "time": [0.1, 1.1],
                            "class": ["bird", "bird"]})
    return simulate_array_recordings(GRID_3D, sources, tmp_path_factory.mktemp("compat_array"), duration=3.0,
                                     noise_dBFS=-50, seed=3)


def test_spatial_event_documented_behaviour(array_recordings):
    coords = array_recordings["file_coords"]
    event = SpatialEvent(list(coords.index), coords.to_numpy(), start_time=0, duration=1.0)
    assert event.calculate_residual_rms() is None  # no position yet
    assert event.calculate_distance_residuals() is None
    tdoas, cc_maxs = event.estimate_delays(bandpass_range=(2000, 5000))
    assert event.tdoas is tdoas and event.cc_maxs is cc_maxs  # stored as well as returned
    assert len(tdoas) == len(cc_maxs) == 6 and tdoas[0] == 0
    c = array_recordings["speed_of_sound"]
    truth = np.linalg.norm(coords.to_numpy() - [25.0, 30.0, 3.0], axis=1) / c
    np.testing.assert_allclose(tdoas, truth - truth[0], atol=1.5 / 22050)  # within about a sample
    position = event.estimate_location("gillette", speed_of_sound=c)
    assert event.position_estimate is position
    np.testing.assert_allclose(position, [25.0, 30.0, 3.0], atol=0.5)
    assert len(event.calculate_distance_residuals(c)) == 6
    assert event.calculate_residual_rms(c) == pytest.approx(np.sqrt(np.mean(event.distance_residuals ** 2)))
    with pytest.raises(InsufficientReceiversError):
        event.estimate_location(cc_threshold=1.01, min_n_receivers=3)


def test_localize_detections_returns_localized_and_unlocalized_events(array_recordings):
    array = SynchronizedRecorderArray(array_recordings["file_coords"])
    nearby = array.make_nearby_files_dict(40)
    first = array_recordings["file_coords"].index[0]
    assert first in nearby[first] and len(nearby[first]) < 6  # only recorders within 40 m
    events = array.create_candidate_events(array_recordings["detections"], 3, 100)
    assert all(isinstance(e, SpatialEvent) for e in events) and len(events) == 12  # 2 calls x 6 references
    localized, unlocalized = array.localize_detections(
        array_recordings["detections"], max_receiver_dist=100, bandpass_ranges={"bird": (2000, 5000)})
    assert len(localized) == 12 and unlocalized == []
    positions = np.array([e.position_estimate for e in localized])
    truth = array_recordings["truth"].set_index("clip_start").loc[[e.start_time for e in localized]]
    assert np.median(np.linalg.norm(positions - truth[["x", "y", "z"]].to_numpy(), axis=1)) < 0.5
    # residual_threshold discards events whose delays fit badly
    strict, rejected = array.localize_detections(array_recordings["detections"], max_receiver_dist=100,
                                                 bandpass_ranges={"bird": (2000, 5000)}, residual_threshold=0.0)
    assert strict == [] and len(rejected) == 12 and all("residual" in e.error for e in rejected)


def test_differences_page_names_what_differs():
    page = (Path(__file__).resolve().parents[1] / "docs" / "differences" / "localization.md").read_text()
    for name in ("SpatialEvent.estimate_delays", "max_delay=None", "localize_detections", "gillette_localize",
                 "soundfinder_localize", "calculate_tdoa_residuals", "PositionEstimate", "least_squares"):
        assert f"`{name}" in page, name
