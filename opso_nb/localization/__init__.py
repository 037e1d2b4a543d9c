"""Acoustic localization with synchronized recorder arrays.

A call reaches each recorder at a slightly different time. The differences
(time differences of arrival, TDOAs), estimated by generalized
cross-correlation of the recordings, place the caller in space.

The workflow (as in OpenSoundscape 0.9):

1. :class:`SynchronizedRecorderArray` holds recorder positions (metres).
2. Detections (a clip table indexed by file, start_time, end_time with one 0/1
   column per class) become candidate :class:`SpatialEvent` objects: a
   reference recorder plus nearby recorders that detected the same class at
   the same time.
3. Each event estimates its TDOAs (:meth:`SpatialEvent.estimate_delays`),
   then its position with one of three algorithms:
   ``"gillette"`` (Gillette & Silverman 2008, linear closed form),
   ``"soundfinder"`` (Wilson et al. 2014, GPS-style Bancroft solution) or
   ``"least_squares"`` (nonlinear refinement of the TDOA equations).
4. Events whose TDOAs fit their position badly (large residual RMS, metres)
   are set aside.

Positions are in a local Cartesian frame in metres (x east, y north, z up).
:func:`latlon_to_xy` / :func:`xy_to_latlon` convert recorder coordinates
given in degrees.

The package's modules follow the seams of the work (and newer OpenSoundscape's
layout): :mod:`~opso_nb.localization.localization_algorithms` (positions from
delays), :mod:`~opso_nb.localization.spatial_event` (one event: reading,
delays, position), :mod:`~opso_nb.localization.synchronized_recorder_array`
(detections to events, many events at once), :mod:`~opso_nb.localization.coordinates`
and :mod:`~opso_nb.localization.simulation`. Every public name is available here.
"""
from opso_nb.localization.coordinates import EARTH_RADIUS_M, latlon_to_xy, xy_to_latlon
from opso_nb.localization.localization_algorithms import (
    ALGORITHMS,
    SPEED_OF_SOUND,
    InsufficientReceiversError,
    calc_speed_of_sound,
    calculate_tdoa_residuals,
    gillette_localize,
    least_squares_localize,
    localize,
    lorentz_ip,
    soundfinder_localize,
    travel_time,
)
from opso_nb.localization.simulation import demo_array, simulate_array_recordings
from opso_nb.localization.spatial_event import (
    SYNC_TOLERANCE_S,
    SegmentCache,
    SpatialEvent,
    estimate_delays_together,
    events_to_df,
    filter_events,
)
from opso_nb.localization.synchronized_recorder_array import (
    LocalizationSettings,
    SynchronizedRecorderArray,
    iter_localized_groups,
    localize_events,
)

__all__ = [
    "ALGORITHMS",
    "SPEED_OF_SOUND",
    "SYNC_TOLERANCE_S",
    "EARTH_RADIUS_M",
    "InsufficientReceiversError",
    "LocalizationSettings",
    "SegmentCache",
    "SpatialEvent",
    "SynchronizedRecorderArray",
    "calc_speed_of_sound",
    "calculate_tdoa_residuals",
    "demo_array",
    "estimate_delays_together",
    "events_to_df",
    "filter_events",
    "gillette_localize",
    "iter_localized_groups",
    "latlon_to_xy",
    "least_squares_localize",
    "localize",
    "localize_events",
    "lorentz_ip",
    "simulate_array_recordings",
    "soundfinder_localize",
    "travel_time",
    "xy_to_latlon",
]
