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
"""
from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import param

__all__ = [
    "InsufficientReceiversError",
    "LocalizationSettings",
    "SpatialEvent",
    "SynchronizedRecorderArray",
    "calc_speed_of_sound",
    "calculate_tdoa_residuals",
    "gillette_localize",
    "soundfinder_localize",
    "least_squares_localize",
    "localize",
    "lorentz_ip",
    "travel_time",
    "latlon_to_xy",
    "xy_to_latlon",
    "events_to_df",
    "simulate_array_recordings",
    "filter_events",
    "demo_array",
]

SPEED_OF_SOUND = 343.0
ALGORITHMS = ("gillette", "soundfinder", "least_squares")
EARTH_RADIUS_M = 6_371_008.8
SYNC_TOLERANCE_S = 0.01  # largest length difference (s) of files taken as started together


class InsufficientReceiversError(Exception):
    """Too few receivers (after filtering) to estimate a position."""


# ----------------------------------------------------------------------------- physics


def calc_speed_of_sound(temperature: float = 20) -> float:
    """Speed of sound in air (m/s) at ``temperature`` (°C); humidity is ignored.

    >>> round(calc_speed_of_sound(20), 1)
    343.2
    """
    return 331.3 * math.sqrt(1 + temperature / 273.15)


def travel_time(source, receiver, speed_of_sound: float = SPEED_OF_SOUND) -> float:
    """Seconds for sound to travel from ``source`` to ``receiver`` (positions in m)."""
    return float(np.linalg.norm(np.asarray(source, float) - np.asarray(receiver, float)) / speed_of_sound)


def lorentz_ip(u, v=None):
    """Lorentz inner product: spatial dot product minus the product of the last (time) coordinates."""
    u = np.asarray(u, float)
    v = u if v is None else np.asarray(v, float)
    return float(np.dot(u[:-1], v[:-1]) - u[-1] * v[-1])


def _as_positions(receiver_positions) -> np.ndarray:
    positions = np.asarray(receiver_positions, dtype=float)
    if positions.ndim != 2 or positions.shape[1] not in (2, 3):
        raise ValueError(f"receiver_positions must be (n, 2) or (n, 3) metres, got shape {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("receiver_positions contain NaN or infinite values")
    return positions


def _check_times(positions, times, needed, algorithm):
    times = np.asarray(times, dtype=float)
    if times.shape != (len(positions),):
        raise ValueError(f"need one arrival time per receiver: {len(positions)} positions, {times.shape} times")
    if not np.all(np.isfinite(times)):
        raise ValueError("arrival times contain NaN or infinite values")
    if len(positions) < needed:
        raise InsufficientReceiversError(
            f"{algorithm} needs at least {needed} receivers in {positions.shape[1]}-D, got {len(positions)}"
        )
    return times


# ----------------------------------------------------------------------------- position algorithms


def gillette_localize(receiver_positions, arrival_times, speed_of_sound: float = SPEED_OF_SOUND) -> np.ndarray:
    """Source position by the linear closed form of Gillette & Silverman (2008).

    Subtracting the range equation of the first receiver from the others makes
    them linear in the source position and the emission time; they are solved
    by least squares. Needs ``dims + 2`` receivers (4 in 2-D, 5 in 3-D).

    Parameters
    ----------
    receiver_positions : array (n, 2 or 3), metres
    arrival_times : array (n,), seconds (any common offset, e.g. TDOAs to receiver 0)
    speed_of_sound : float, m/s

    Returns
    -------
    numpy.ndarray
        Estimated position (metres), same dimensions as the receivers.
    """
    positions = _as_positions(receiver_positions)
    dims = positions.shape[1]
    times = _check_times(positions, arrival_times, dims + 2, "gillette")
    centre = positions.mean(axis=0)  # centring keeps the squared terms well conditioned
    r = positions - centre
    t = times - times[0]
    c = speed_of_sound
    a = np.hstack([-2 * (r[1:] - r[0]), 2 * c**2 * t[1:, None]])
    b = c**2 * t[1:] ** 2 - (r[1:] ** 2).sum(axis=1) + (r[0] ** 2).sum()
    solution, *_ = np.linalg.lstsq(a, b, rcond=None)
    return solution[:dims] + centre


def soundfinder_localize(receiver_positions, arrival_times, speed_of_sound: float = SPEED_OF_SOUND,
                         invert_alg: str = "gps", center: bool = True, pseudo: bool = True) -> np.ndarray:
    """Source position by Sound Finder (Wilson et al. 2014): the GPS (Bancroft) solution.

    Each receiver gives a 4-vector (position, c·arrival time); the Lorentz
    inner product turns the range equations into a quadratic in one unknown,
    and of its two roots the one whose TDOAs fit best is returned. Needs
    ``dims + 1`` receivers.

    Parameters
    ----------
    invert_alg : {"gps", "lstsq"}
        "gps" uses the pseudo-inverse of the receiver matrix (as Sound Finder);
        "lstsq" solves the two linear systems with least squares (same result
        for well-posed arrays).
    center : bool
        Work relative to the receivers' centroid (numerically safer).
    pseudo : bool
        Kept for API compatibility: the root is always chosen by TDOA residual.
    """
    positions = _as_positions(receiver_positions)
    dims = positions.shape[1]
    times = _check_times(positions, arrival_times, dims + 1, "soundfinder")
    centre = positions.mean(axis=0) if center else np.zeros(dims)
    r = positions - centre
    t = times - times.min()
    b = np.hstack([r, speed_of_sound * t[:, None]])
    a = 0.5 * np.array([lorentz_ip(row) for row in b])
    e = np.ones(len(b))
    metric = np.diag([1.0] * dims + [-1.0])
    if invert_alg == "gps":
        pinv = np.linalg.pinv(b)
        p, q = metric @ pinv @ a, metric @ pinv @ e
    elif invert_alg == "lstsq":
        p = metric @ np.linalg.lstsq(b, a, rcond=None)[0]
        q = metric @ np.linalg.lstsq(b, e, rcond=None)[0]
    else:
        raise ValueError(f"invert_alg must be 'gps' or 'lstsq', got {invert_alg!r}")
    # u = p + lam*q with lam = <u,u>/2  ->  <q,q> lam^2 + 2(<p,q> - 1) lam + <p,p> = 0
    qq, pq, pp = lorentz_ip(q), lorentz_ip(p, q), lorentz_ip(p)
    if abs(qq) < 1e-12:
        roots = [-pp / (2 * (pq - 1))] if abs(pq - 1) > 1e-12 else []
    else:
        disc = (pq - 1) ** 2 - qq * pp
        disc = max(disc, 0.0)  # noise can push it slightly negative
        roots = [(-(pq - 1) + s * math.sqrt(disc)) / qq for s in (1, -1)]
    # u = (position, c * emission time) = p + lam * q
    candidates = [(p + lam * q)[:dims] for lam in roots] or [np.zeros(dims)]
    tdoas = times - times[0]
    best = min(candidates, key=lambda s: _rms(calculate_tdoa_residuals(r, tdoas, s, speed_of_sound)))
    return np.asarray(best) + centre


def least_squares_localize(receiver_positions, arrival_times, speed_of_sound: float = SPEED_OF_SOUND,
                           initial_guess=None) -> np.ndarray:
    """Source position minimizing TDOA errors (nonlinear least squares, metres).

    Starts from ``initial_guess`` (default: the Gillette solution when enough
    receivers are available, else the receivers' centroid) and refines it
    with a trust-region solver. Needs ``dims + 1`` receivers.
    """
    from scipy.optimize import least_squares

    positions = _as_positions(receiver_positions)
    dims = positions.shape[1]
    times = _check_times(positions, arrival_times, dims + 1, "least_squares")
    tdoas = times - times[0]
    if initial_guess is None:
        try:
            initial_guess = gillette_localize(positions, times, speed_of_sound)
        except InsufficientReceiversError:
            initial_guess = positions.mean(axis=0)
        if not np.all(np.isfinite(initial_guess)):
            initial_guess = positions.mean(axis=0)
    scale = max(float(np.ptp(positions, axis=0).max()), 1.0)

    def residuals(x):
        return calculate_tdoa_residuals(positions, tdoas, x * scale, speed_of_sound)

    fit = least_squares(residuals, np.asarray(initial_guess, float) / scale, method="lm")
    return fit.x * scale


def localize(receiver_positions, tdoas, algorithm: str = "gillette", speed_of_sound: float = SPEED_OF_SOUND):
    """Dispatch to one of :data:`ALGORITHMS`; ``tdoas`` are arrival times relative to receiver 0 (s)."""
    functions = {"gillette": gillette_localize, "soundfinder": soundfinder_localize,
                 "least_squares": least_squares_localize}
    if algorithm not in functions:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return functions[algorithm](receiver_positions, tdoas, speed_of_sound)


def calculate_tdoa_residuals(receiver_positions, tdoas, position_estimate, speed_of_sound: float = SPEED_OF_SOUND):
    """Per-receiver mismatch (metres) between observed TDOAs and those the position implies.

    ``tdoas[0]`` is 0 (receiver 0 is the reference). Residual =
    (expected TDOA - observed TDOA) × speed of sound.
    """
    positions = _as_positions(receiver_positions)
    position = np.asarray(position_estimate, float)
    distances = np.linalg.norm(positions - position, axis=1)
    expected = (distances - distances[0]) / speed_of_sound
    return (expected - np.asarray(tdoas, float)) * speed_of_sound


def _rms(values) -> float:
    values = np.asarray(values, float)
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


# ----------------------------------------------------------------------------- geographic coordinates


def latlon_to_xy(lat, lon, ref_lat: float | None = None, ref_lon: float | None = None):
    """Degrees to local metres (x east, y north) around a reference point.

    Uses an equirectangular projection: exact enough (well below a centimetre
    per 100 m) for recorder arrays a few kilometres across; not for larger areas.
    Default reference: the mean of the given points.

    Returns
    -------
    x, y : numpy.ndarray (metres)
    """
    lat = np.asarray(lat, float)
    lon = np.asarray(lon, float)
    ref_lat = float(np.mean(lat)) if ref_lat is None else ref_lat
    ref_lon = float(np.mean(lon)) if ref_lon is None else ref_lon
    x = np.radians(lon - ref_lon) * EARTH_RADIUS_M * math.cos(math.radians(ref_lat))
    y = np.radians(lat - ref_lat) * EARTH_RADIUS_M
    return x, y


def xy_to_latlon(x, y, ref_lat: float, ref_lon: float):
    """Inverse of :func:`latlon_to_xy`: local metres back to (lat, lon) degrees."""
    lat = ref_lat + np.degrees(np.asarray(y, float) / EARTH_RADIUS_M)
    lon = ref_lon + np.degrees(np.asarray(x, float) / (EARTH_RADIUS_M * math.cos(math.radians(ref_lat))))
    return lat, lon


# ----------------------------------------------------------------------------- events


class SpatialEvent:
    """One sound heard on several synchronized recorders.

    Parameters
    ----------
    receiver_files : list of str
        Audio files; the first is the reference receiver.
    receiver_positions : array (n, 2 or 3)
        Recorder positions (metres), in the order of ``receiver_files``.
    start_time, duration : float
        Segment of each file to cross-correlate (seconds from the file start,
        corrected for different ``recording_start_time`` metadata).
    class_name : str, optional
    bandpass_range : (low, high) Hz, optional
        Filter applied before cross-correlation.
    cc_threshold : float, optional
        Receivers whose cross-correlation peak is below this are not used.
    max_delay : float, optional
        Largest |TDOA| searched (s); default: largest receiver distance / speed of sound.
    """

    def __init__(self, receiver_files, receiver_positions, start_time=0.0, duration=None, class_name=None,
                 bandpass_range=None, cc_threshold=None, max_delay=None):
        self.receiver_files = [str(f) for f in receiver_files]
        self.receiver_positions = _as_positions(receiver_positions)
        if len(self.receiver_files) != len(self.receiver_positions):
            raise ValueError(f"{len(self.receiver_files)} files but {len(self.receiver_positions)} positions")
        self.start_time = float(start_time)
        self.duration = duration
        self.class_name = class_name
        self.bandpass_range = bandpass_range
        self.cc_threshold = cc_threshold
        self.max_delay = max_delay
        self.tdoas = None
        self.cc_maxs = None
        self.position_estimate = None
        self.distance_residuals = None
        self.residual_rms = None
        self.receivers_used = None
        self.error = None

    def __repr__(self):
        where = "unlocalized" if self.position_estimate is None else np.round(self.position_estimate, 2).tolist()
        return (f"<SpatialEvent {self.class_name} at {self.start_time:.2f} s, "
                f"{len(self.receiver_files)} receivers, position {where}>")

    def _load(self, file, offset, duration):
        from opso_nb.audio import Audio

        audio = Audio.from_file(file, offset=max(0.0, offset), duration=duration, out_of_bounds_mode="raise")
        if self.bandpass_range is not None:
            audio = audio.bandpass(self.bandpass_range[0], self.bandpass_range[1], order=9)
        return audio

    def estimate_delays(self, bandpass_range=None, cc_filter: str = "phat", max_delay=None,
                        speed_of_sound: float = SPEED_OF_SOUND):
        """Time differences of arrival (s) of every receiver relative to the first.

        Each file's segment is cross-correlated (GCC with ``cc_filter``) with the
        reference's. Sets and returns ``tdoas``; also sets ``cc_maxs`` (peak
        cross-correlation per receiver, the reference's being 1).
        """
        from opso_nb.signal_processing import tdoa

        if bandpass_range is not None:
            self.bandpass_range = bandpass_range
        max_delay = max_delay if max_delay is not None else self.max_delay
        if max_delay is None:
            spread = np.linalg.norm(self.receiver_positions[:, None] - self.receiver_positions[None], axis=-1).max()
            max_delay = spread / speed_of_sound * 1.05 + 1e-3
        starts = _start_offsets(self.receiver_files)
        duration = self.duration
        reference = self._load(self.receiver_files[0], self.start_time, duration)
        rates = set()
        tdoas, cc_maxs = [0.0], [1.0]
        for file, shift in zip(self.receiver_files[1:], starts[1:]):
            audio = self._load(file, self.start_time + shift, duration if duration else reference.duration)
            rates.update({audio.sample_rate, reference.sample_rate})
            if len(rates) > 1:
                raise ValueError(f"{file}: sample rate {audio.sample_rate} Hz differs from the reference's "
                                 f"{reference.sample_rate} Hz")
            n = min(len(audio.samples), len(reference.samples))
            delay, cc_max = tdoa(audio.samples[:n], reference.samples[:n], max_delay=max_delay, cc_filter=cc_filter,
                                 sample_rate=reference.sample_rate, return_max=True)
            tdoas.append(float(delay))
            cc_maxs.append(float(cc_max))
        self.tdoas = np.array(tdoas)
        self.cc_maxs = np.array(cc_maxs)
        return self.tdoas

    def estimate_location(self, algorithm: str = "gillette", cc_threshold=None, min_n_receivers: int = 3,
                          speed_of_sound: float = SPEED_OF_SOUND, cc_filter: str = "phat"):
        """Position (metres) from the TDOAs; estimates them first if needed.

        Receivers with a cross-correlation peak below ``cc_threshold`` are
        dropped; :class:`InsufficientReceiversError` if fewer than
        ``min_n_receivers`` (or than the algorithm needs) remain. Sets
        ``position_estimate``, ``distance_residuals`` and ``residual_rms``.
        """
        if self.tdoas is None:
            self.estimate_delays(cc_filter=cc_filter, speed_of_sound=speed_of_sound)
        threshold = cc_threshold if cc_threshold is not None else self.cc_threshold
        keep = np.ones(len(self.tdoas), bool)
        if threshold is not None and self.cc_maxs is not None:
            keep = self.cc_maxs >= threshold
            keep[0] = True  # the reference defines the TDOAs
        if keep.sum() < min_n_receivers:
            raise InsufficientReceiversError(
                f"{keep.sum()} receiver(s) above cc_threshold={threshold}, fewer than min_n_receivers={min_n_receivers}"
            )
        positions, tdoas = self.receiver_positions[keep], self.tdoas[keep]
        self.receivers_used = [f for f, k in zip(self.receiver_files, keep) if k]
        self.position_estimate = localize(positions, tdoas, algorithm, speed_of_sound)
        self.distance_residuals = calculate_tdoa_residuals(positions, tdoas, self.position_estimate, speed_of_sound)
        self.residual_rms = _rms(self.distance_residuals)
        return self.position_estimate

    def calculate_distance_residuals(self, speed_of_sound: float = SPEED_OF_SOUND):
        """Residual (m) per used receiver; None before a position is estimated."""
        if self.tdoas is None or self.position_estimate is None:
            return None
        used = [self.receiver_files.index(f) for f in (self.receivers_used or self.receiver_files)]
        self.distance_residuals = calculate_tdoa_residuals(self.receiver_positions[used], self.tdoas[used],
                                                           self.position_estimate, speed_of_sound)
        return self.distance_residuals

    def calculate_residual_rms(self, speed_of_sound: float = SPEED_OF_SOUND):
        """Root-mean-square of the distance residuals (m); None before a position is estimated."""
        residuals = self.calculate_distance_residuals(speed_of_sound)
        if residuals is None:
            return None
        self.residual_rms = _rms(residuals)
        return self.residual_rms

    def aligned_audio(self, padding: float = 0.1):
        """Each receiver's audio of this event, shifted by its TDOA so the call lines up.

        Returns a list of Audio (same order as ``receiver_files``), each starting
        ``padding`` s before the event's start as heard at that receiver.
        """
        tdoas = self.tdoas if self.tdoas is not None else np.zeros(len(self.receiver_files))
        shifts = _start_offsets(self.receiver_files)
        duration = (self.duration or 1.0) + 2 * padding
        return [self._load(f, self.start_time + shift + delay - padding, duration)
                for f, shift, delay in zip(self.receiver_files, shifts, tdoas)]

    def to_record(self) -> dict:
        """One row of the results table."""
        pos = self.position_estimate
        dims = self.receiver_positions.shape[1]
        row = {"class": self.class_name, "start_time": self.start_time, "duration": self.duration,
               "reference_file": self.receiver_files[0],
               "x": pos[0] if pos is not None else np.nan, "y": pos[1] if pos is not None else np.nan}
        if dims == 3:
            row["z"] = pos[2] if pos is not None else np.nan
        row.update(residual_rms=self.residual_rms if self.residual_rms is not None else np.nan,
                   n_receivers=len(self.receivers_used or []) if pos is not None else 0,
                   receivers_used=";".join(self.receivers_used or []),
                   min_cc=float(np.min(self.cc_maxs)) if self.cc_maxs is not None else np.nan,
                   error=self.error)
        return row


@functools.lru_cache(maxsize=4096)
def _file_timing(file: str, mtime_ns):
    """(recording_start_time or None, duration in s) of a file; cached per file version (``mtime_ns``)."""
    from opso_nb.aru import parse_audiomoth_metadata_from_path
    from opso_nb.audio import audio_info

    return parse_audiomoth_metadata_from_path(file).get("recording_start_time"), audio_info(file).duration


def _start_offsets(files) -> list[float]:
    """Seconds to add to a time in the first file to get the same moment in each file.

    Uses ``recording_start_time`` metadata when every file has it (so a recorder
    that started 0.1 s late is read 0.1 s earlier). Without it the files are
    taken as started together, which is only believable if they are equally
    long: otherwise ``ValueError`` naming the files and their lengths.
    """
    timings = [_file_timing(f, os.stat(f).st_mtime_ns) if os.path.exists(f) else _file_timing(f, None)
               for f in files]
    starts = [t[0] for t in timings]
    if all(s is not None for s in starts):
        return [(starts[0] - s).total_seconds() for s in starts]
    lengths = [t[1] for t in timings]
    # a few ms of difference is normal for recorders stopped by hand; more means they did not start together
    if max(lengths) - min(lengths) > SYNC_TOLERANCE_S:
        listing = ", ".join(f"{Path(f).name}: {d:.3f} s" for f, d in zip(files, lengths))
        raise ValueError(f"unsynchronized recordings: files of one event differ in length ({listing}) and carry no "
                         "recording_start_time metadata to align them")
    return [0.0] * len(files)


def events_to_df(events, path=None) -> pd.DataFrame:
    """Table of events: class, start_time, x, y[, z] (m), residual_rms (m), receivers used, error.

    Parameters
    ----------
    events : list of SpatialEvent
    path : str or Path, optional
        Also write the table there as CSV, atomically (a reader never sees half a file).
    """
    table = pd.DataFrame([e.to_record() for e in events])
    if path is not None:
        from opso_nb.utils import atomic_path

        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    return table


def filter_events(table: pd.DataFrame, residual_threshold: float = np.inf, cc_threshold: float | None = None,
                  classes=None, time_range=None) -> pd.Series:
    """Boolean mask of localized events (rows of :func:`events_to_df`) passing the filters.

    Parameters
    ----------
    residual_threshold : float
        Largest residual RMS kept (m).
    cc_threshold : float, optional
        Smallest cross-correlation peak required of every receiver used.
    classes : list of str, optional
    time_range : (start, end) seconds, optional
    """
    mask = table["x"].notna() & (table["residual_rms"] <= residual_threshold)
    if cc_threshold is not None:
        mask &= table["min_cc"] >= cc_threshold
    if classes is not None:
        mask &= table["class"].isin(list(classes))
    if time_range is not None:
        mask &= table["start_time"].between(*time_range)
    return mask


def _localize_one(event, algorithm, cc_threshold, cc_filter, max_delay, min_n_receivers, speed_of_sound):
    try:
        event.estimate_delays(cc_filter=cc_filter, max_delay=max_delay, speed_of_sound=speed_of_sound)
        event.estimate_location(algorithm, cc_threshold=cc_threshold, min_n_receivers=min_n_receivers,
                                speed_of_sound=speed_of_sound)
    except Exception as err:  # reported per event; the run goes on
        event.error = f"{type(err).__name__}: {err}"
    return event


class SynchronizedRecorderArray:
    """Recorders with known positions whose clocks agree.

    Parameters
    ----------
    file_coords : DataFrame or path to CSV
        Indexed by audio file (or with a ``file`` column) with columns ``x``,
        ``y`` and optionally ``z`` (metres); or ``lat``/``lon`` (degrees),
        converted with :func:`latlon_to_xy` (reference kept in ``geo_reference``).
    speed_of_sound : float
        m/s, used by :meth:`localize_detections` unless it is given one (as in
        newer OpenSoundscape; see :func:`calc_speed_of_sound` for temperature).
    """

    def __init__(self, file_coords, speed_of_sound: float = SPEED_OF_SOUND):
        self.speed_of_sound = float(speed_of_sound)
        if isinstance(file_coords, (str, Path)):
            file_coords = pd.read_csv(file_coords, skipinitialspace=True)
        coords = file_coords.copy()
        if "file" in coords.columns:
            coords = coords.set_index("file")
        coords.index = coords.index.map(lambda f: str(f).strip())
        self.geo_reference = None
        if {"lat", "lon"} <= set(coords.columns) and not {"x", "y"} <= set(coords.columns):
            x, y = latlon_to_xy(coords["lat"], coords["lon"])
            self.geo_reference = (float(coords["lat"].mean()), float(coords["lon"].mean()))
            coords["x"], coords["y"] = x, y
        missing = [c for c in ("x", "y") if c not in coords.columns]
        if missing:
            raise ValueError(f"file_coords needs columns x and y (metres) or lat and lon; missing {missing}")
        columns = ["x", "y"] + (["z"] if "z" in coords.columns else [])
        values = coords[columns].apply(pd.to_numeric, errors="coerce")
        bad = values.isna().any(axis=1)
        if bad.any():
            raise ValueError(f"file_coords has missing or non-numeric coordinates for: {list(values.index[bad])[:5]}")
        if coords.index.duplicated().any():
            raise ValueError(f"file_coords lists files twice: {list(coords.index[coords.index.duplicated()])[:5]}")
        self.file_coords = values

    @property
    def dims(self) -> int:
        return self.file_coords.shape[1]

    def make_nearby_files_dict(self, r_max: float) -> dict:
        """{file: [files of recorders within ``r_max`` metres, itself included]}."""
        xyz = self.file_coords.to_numpy()
        distances = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
        files = list(self.file_coords.index)
        return {f: [files[j] for j in np.flatnonzero(distances[i] <= r_max)] for i, f in enumerate(files)}

    def _check_detections(self, detections: pd.DataFrame) -> pd.DataFrame:
        from opso_nb.utils import validate_clip_table

        detections = validate_clip_table(detections, "detections")
        files = detections.index.get_level_values("file").map(str)
        unknown = sorted(set(files) - set(self.file_coords.index))
        if unknown:
            raise ValueError(
                f"{len(unknown)} file(s) in the detections are not in the coordinate table, e.g. {unknown[:3]}; "
                f"coordinate table files look like {list(self.file_coords.index[:2])}"
            )
        return detections

    def create_candidate_events(self, detections: pd.DataFrame, min_n_receivers: int, max_receiver_dist: float,
                                cc_threshold=None, bandpass_ranges=None, max_delay=None) -> list:
        """One :class:`SpatialEvent` per detection with enough simultaneous nearby detections.

        Each positive (file, clip, class) becomes the reference of an event whose
        other receivers are the recorders within ``max_receiver_dist`` metres that
        detected the same class in the same clip. Events with fewer than
        ``min_n_receivers`` receivers are dropped. Neighbouring references give
        overlapping (redundant) events, as intended.
        """
        detections = self._check_detections(detections)
        nearby = self.make_nearby_files_dict(max_receiver_dist)
        events = []
        for class_name in detections.columns:
            positives = detections[detections[class_name].fillna(0).astype(float) > 0]
            by_clip = {}
            for file, start, end in positives.index:
                by_clip.setdefault((float(start), float(end)), set()).add(str(file))
            for (start, end), files in sorted(by_clip.items()):
                for reference in sorted(files):
                    others = [f for f in nearby[reference] if f in files and f != reference]
                    if len(others) + 1 < min_n_receivers:
                        continue
                    receivers = [reference] + others
                    band = (bandpass_ranges or {}).get(class_name) if isinstance(bandpass_ranges, dict) else bandpass_ranges
                    events.append(SpatialEvent(
                        receivers, self.file_coords.loc[receivers].to_numpy(), start_time=start,
                        duration=end - start, class_name=class_name, bandpass_range=band,
                        cc_threshold=cc_threshold, max_delay=max_delay))
        return events

    def localize_detections(self, detections: pd.DataFrame, max_receiver_dist: float, min_n_receivers: int = 3,
                            localization_algorithm: str = "gillette", cc_threshold: float = 0, cc_filter: str = "phat",
                            max_delay=None, bandpass_ranges=None, residual_threshold: float = np.inf,
                            speed_of_sound: float | None = None, num_workers: int = 0, progress: bool = False,
                            return_unlocalized: bool = True, results_csv=None):
        """Localize every candidate event built from ``detections``.

        Steps: candidate events → GCC delays (after the class's band-pass) →
        drop receivers below ``cc_threshold`` → position → keep events whose
        residual RMS (m) is at most ``residual_threshold``.

        Parameters
        ----------
        speed_of_sound : float, optional
            m/s; default: the array's ``speed_of_sound``.
        num_workers : int
            Processes for delay estimation and positions (0 = this process).
        progress : bool
            Show a tqdm progress bar.
        results_csv : str or Path, optional
            Write :func:`events_to_df` of all events (localized first) there, atomically.

        Returns
        -------
        (localized_events, unlocalized_events)
            Lists of :class:`SpatialEvent`; unlocalized ones carry ``error``.
            :func:`events_to_df` turns either into a table.
        """
        speed_of_sound = self.speed_of_sound if speed_of_sound is None else speed_of_sound
        if localization_algorithm not in ALGORITHMS:
            raise ValueError(f"localization_algorithm must be one of {ALGORITHMS}, got {localization_algorithm!r}")
        events = self.create_candidate_events(detections, min_n_receivers, max_receiver_dist,
                                              cc_threshold=cc_threshold, bandpass_ranges=bandpass_ranges,
                                              max_delay=max_delay)
        args = (localization_algorithm, cc_threshold, cc_filter, max_delay, min_n_receivers, speed_of_sound)
        if progress:
            from tqdm.auto import tqdm
        else:
            def tqdm(x, **kwargs):
                return x
        if num_workers and num_workers > 1 and len(events) > 1:
            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                futures = [pool.submit(_localize_one, e, *args) for e in events]
                done = [f.result() for f in tqdm(futures, total=len(futures), desc="localizing")]
        else:
            done = [_localize_one(e, *args) for e in tqdm(events, desc="localizing")]
        localized, unlocalized = [], []
        for event in done:
            if event.error is None and event.position_estimate is not None and np.all(np.isfinite(event.position_estimate)):
                if event.residual_rms <= residual_threshold:
                    localized.append(event)
                    continue
                event.error = f"residual RMS {event.residual_rms:.2f} m above residual_threshold {residual_threshold} m"
            elif event.error is None:
                event.error = "no finite position"
            unlocalized.append(event)
        if results_csv is not None:
            events_to_df(localized + unlocalized, results_csv)
        return (localized, unlocalized) if return_unlocalized else localized


class LocalizationSettings(param.Parameterized):
    """The settings of :meth:`SynchronizedRecorderArray.localize_detections`, as one object.

    ``pn.Param(settings)`` renders them as widgets; :meth:`localize` runs the
    localization with them.
    """

    max_receiver_dist = param.Number(default=100.0, bounds=(0, None), doc="Largest distance (m) from the reference "
                                      "recorder of recorders joining an event")
    min_n_receivers = param.Integer(default=3, bounds=(2, None), doc="Fewest receivers an event needs")
    localization_algorithm = param.Selector(default="gillette", objects=list(ALGORITHMS))
    cc_threshold = param.Number(default=0.0, doc="Receivers with a smaller cross-correlation peak are dropped")
    cc_filter = param.Selector(default="phat", objects=["phat", "roth", "scot", "ht", "cc"],
                               doc="Generalized cross-correlation weighting")
    max_delay = param.Number(default=None, allow_None=True, bounds=(0, None),
                             doc="Largest |delay| searched (s); default from the receivers' spread")
    residual_threshold = param.Number(default=np.inf, bounds=(0, None), doc="Largest residual RMS (m) kept")
    speed_of_sound = param.Number(default=SPEED_OF_SOUND, bounds=(1, None), doc="m/s")
    num_workers = param.Integer(default=0, bounds=(0, None), doc="Processes (0: this one)")

    def localize(self, array: "SynchronizedRecorderArray", detections: pd.DataFrame, bandpass_ranges=None, **kwargs):
        """``array.localize_detections(detections, ...)`` with these settings; returns (localized, unlocalized)."""
        settings = {k: v for k, v in self.param.values().items() if k != "name"}
        settings.update(kwargs)
        return array.localize_detections(detections, bandpass_ranges=bandpass_ranges, **settings)


# ----------------------------------------------------------------------------- simulator


def _call_waveform(sample_rate, duration=0.25, low_f=2500.0, high_f=4500.0, seed=None):
    """A frequency-modulated whistle with a smooth envelope (a bird-like test call)."""
    t = np.arange(int(duration * sample_rate)) / sample_rate
    freq = low_f + (high_f - low_f) * (0.5 - 0.5 * np.cos(2 * np.pi * t / duration))
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    envelope = np.sin(np.pi * t / duration) ** 2
    return envelope * np.sin(phase)


def _fractional_delay(signal, delay_samples, length):
    """Place ``signal`` delayed by a fractional number of samples in an array of ``length``."""
    n = int(2 ** math.ceil(math.log2(len(signal) + abs(delay_samples) + length + 1)))
    spectrum = np.fft.rfft(signal, n)
    freqs = np.fft.rfftfreq(n)
    shifted = np.fft.irfft(spectrum * np.exp(-2j * np.pi * freqs * delay_samples), n)
    return shifted[:length]


def simulate_array_recordings(receiver_positions, sources, out_dir, duration: float = 10.0, sample_rate: int = 22050,
                              temperature: float = 20.0, noise_dBFS: float = -50.0, source_level: float = 0.5,
                              clip_duration: float = 1.0, detection_radius: float | None = None, seed: int = 0,
                              file_prefix: str = "rec"):
    """Synthesize what each recorder of an array hears, for tutorials and tests.

    Each source emits a whistle at its time; every receiver gets it delayed by
    distance / speed of sound (fractional-sample accurate), attenuated by
    spherical spreading (1/r, relative to 1 m), plus independent white noise.

    Parameters
    ----------
    receiver_positions : array (n, 2 or 3), metres
    sources : DataFrame or list of dict
        Columns ``x``, ``y`` [, ``z``] (m), ``time`` (emission, s), ``class``
        and optionally ``low_f``/``high_f`` (Hz, whistle sweep) and ``level``.
    out_dir : path
        Folder for ``{file_prefix}_{i}.wav`` and the CSV tables.
    temperature : float
        °C, sets the speed of sound.
    clip_duration : float
        Clip length (s) of the detections table.
    detection_radius : float, optional
        Receivers farther than this from a source do not "detect" it (m).

    Returns
    -------
    dict
        ``file_coords`` (DataFrame indexed by file: x, y[, z]), ``detections``
        (clip table, one 0/1 column per class; a receiver detects a call in
        the clip its arrival falls in), ``truth`` (sources with ``clip_start``,
        the clip each is emitted in: emit calls early in a clip so that every
        receiver hears them within it) and ``speed_of_sound``. All three tables are also
        written as CSV into ``out_dir``.
    """
    import soundfile

    from opso_nb.utils import atomic_path, generate_clip_times_df

    positions = _as_positions(receiver_positions)
    dims = positions.shape[1]
    sources = pd.DataFrame(sources).reset_index(drop=True)
    for column in ["x", "y", "time", "class"] + (["z"] if dims == 3 else []):
        if column not in sources.columns:
            raise ValueError(f"sources need a {column!r} column")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    c = calc_speed_of_sound(temperature)
    n = int(round(duration * sample_rate))
    noise_rms = 10 ** (noise_dBFS / 20) / math.sqrt(2)
    files = [str(out_dir / f"{file_prefix}_{i}.wav") for i in range(len(positions))]
    clips = generate_clip_times_df(duration, clip_duration)
    classes = sorted(sources["class"].astype(str).unique())
    detections = pd.DataFrame(0, index=pd.MultiIndex.from_tuples(
        [(f, s, e) for f in files for s, e in clips.itertuples(index=False)], names=["file", "start_time", "end_time"]),
        columns=classes)
    for i, (file, receiver) in enumerate(zip(files, positions)):
        samples = rng.standard_normal(n) * noise_rms
        for _, src in sources.iterrows():
            position = src[["x", "y", "z"][:dims]].to_numpy(float)
            distance = max(float(np.linalg.norm(position - receiver)), 1.0)
            call = _call_waveform(sample_rate, low_f=src.get("low_f", 2500.0) if "low_f" in src else 2500.0,
                                  high_f=src.get("high_f", 4500.0) if "high_f" in src else 4500.0)
            level = float(src["level"]) if "level" in src and pd.notna(src["level"]) else source_level
            arrival = float(src["time"]) + distance / c
            start = int(math.floor(arrival * sample_rate))
            if start >= n:
                continue
            piece = _fractional_delay(call, arrival * sample_rate - start, min(len(call) + 8, n - start))
            samples[start:start + len(piece)] += level / distance * piece
            if detection_radius is None or distance <= detection_radius:
                hit = (clips["start_time"] <= arrival) & (clips["end_time"] > arrival)
                for s, e in clips[hit].itertuples(index=False):
                    detections.loc[(file, s, e), str(src["class"])] = 1
        with atomic_path(file) as tmp:
            soundfile.write(tmp, np.clip(samples, -1, 1).astype(np.float32), sample_rate, subtype="FLOAT",
                            format="WAV")
    coords = pd.DataFrame(positions, index=pd.Index(files, name="file"), columns=["x", "y", "z"][:dims])
    truth = sources.copy()
    truth["clip_start"] = [clips["start_time"][(clips["start_time"] <= t)].max() for t in truth["time"]]
    for name, table in (("coords.csv", coords), ("detections.csv", detections), ("truth.csv", truth)):
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp)
    return {"file_coords": coords, "detections": detections, "truth": truth, "speed_of_sound": c}


def demo_array(out_dir, algorithm: str = "least_squares", seed: int = 7, n_sources: int = 8, duration: float = 12.0):
    """A simulated 6-recorder array with calling birds, localized: data for the tutorial and dashboard.

    Recorders sit on a 100 m square with one in the centre and one 20 m high
    on a mast; ``n_sources`` calls of two classes come from random places
    inside the square. While the first wren calls, a second, quieter wren sings
    3 m from the north-east recorder, spoiling that recorder's delays: the
    events of that clip get large residuals (something to filter out).
    Files are written to ``out_dir``.

    Returns
    -------
    dict
        The simulator's tables plus ``events`` (all candidate events, each with
        its position or error) and ``table`` (:func:`events_to_df` of them).
    """
    rng = np.random.default_rng(seed)
    receivers = np.array([[0, 0, 2], [100, 0, 2], [100, 100, 2], [0, 100, 2], [50, 50, 2], [50, 0, 20]], float)
    classes = np.where(np.arange(n_sources) % 2 == 0, "wren", "thrush")
    sources = pd.DataFrame({
        "x": rng.uniform(15, 85, n_sources), "y": rng.uniform(15, 85, n_sources), "z": rng.uniform(1, 8, n_sources),
        # one call early in each 1 s clip, so every receiver hears it in the same clip (arrivals <= 0.4 s later)
        "time": np.arange(n_sources) * max(1, int(duration // n_sources)) + 0.1, "class": classes,
        "low_f": np.where(classes == "wren", 3000, 1800), "high_f": np.where(classes == "wren", 5000, 3200)})
    intruder = pd.DataFrame([{"x": 97.0, "y": 98.0, "z": 2.0, "time": 0.12, "class": "wren", "low_f": 3000,
                              "high_f": 5000, "level": 0.05}])
    sources = pd.concat([sources, intruder], ignore_index=True)
    sim = simulate_array_recordings(receivers, sources, out_dir, duration=duration, noise_dBFS=-48, seed=seed)
    array = SynchronizedRecorderArray(sim["file_coords"])
    localized, unlocalized = array.localize_detections(
        sim["detections"], max_receiver_dist=200, min_n_receivers=4, localization_algorithm=algorithm,
        bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)}, speed_of_sound=sim["speed_of_sound"])
    events = localized + unlocalized
    return {**sim, "array": array, "events": events, "table": events_to_df(events)}
