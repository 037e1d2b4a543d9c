"""Position algorithms: a source position from receiver positions and arrival times.

Three solvers of the time-difference-of-arrival equations, with the physics
they share (speed of sound, travel times, residuals). Positions are in metres
in a local Cartesian frame, times in seconds.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

__all__ = [
    "SPEED_OF_SOUND",
    "ALGORITHMS",
    "InsufficientReceiversError",
    "calc_speed_of_sound",
    "travel_time",
    "lorentz_ip",
    "gillette_localize",
    "soundfinder_localize",
    "least_squares_localize",
    "localize",
    "calculate_tdoa_residuals",
]

SPEED_OF_SOUND = 343.0
ALGORITHMS = ("gillette", "soundfinder", "least_squares")


class InsufficientReceiversError(Exception):
    """Too few receivers (after filtering) to estimate a position."""


def calc_speed_of_sound(temperature: float = 20) -> float:
    """Speed of sound in air (m/s) at ``temperature`` (°C); humidity is ignored.

    >>> round(calc_speed_of_sound(20), 1)
    343.2
    """
    return 331.3 * math.sqrt(1 + temperature / 273.15)


def travel_time(source, receiver, speed_of_sound: float = SPEED_OF_SOUND) -> float:
    """Seconds for sound to travel from ``source`` to ``receiver`` (positions in m, speed in m/s).

    >>> travel_time([0, 0], [343, 0], 343)
    1.0
    """
    return float(np.linalg.norm(np.asarray(source, float) - np.asarray(receiver, float)) / speed_of_sound)


def lorentz_ip(u, v=None):
    """Lorentz inner product: spatial dot product minus the product of the last (time) coordinates.

    >>> lorentz_ip([1, 2, 3, 4])
    -2.0
    """
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


def _rms(values) -> float:
    values = np.asarray(values, float)
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


def gillette_localize(receiver_positions, arrival_times, speed_of_sound: float = SPEED_OF_SOUND) -> np.ndarray:
    """Source position by the linear closed form of Gillette & Silverman (2008).

    Subtracting the range equation of the first receiver from the others makes
    them linear in the source position and the emission time; they are solved
    by least squares. Needs ``dims + 2`` receivers (4 in 2-D, 5 in 3-D).

    Parameters
    ----------
    receiver_positions : array (n, 2 or 3)
        Receiver positions in metres.
    arrival_times : array (n,)
        Arrival times in seconds, with any common offset (e.g. TDOAs relative
        to receiver 0).
    speed_of_sound : float
        m/s.

    Returns
    -------
    numpy.ndarray
        Estimated position (metres), same dimensions as the receivers.

    Raises
    ------
    InsufficientReceiversError
        Fewer than ``dims + 2`` receivers.
    ValueError
        Positions not (n, 2) or (n, 3), a different number of times, NaN values.
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
    whose two roots give two candidate positions. Needs ``dims + 1`` receivers.

    Parameters
    ----------
    receiver_positions : array (n, 2 or 3)
        Receiver positions in metres.
    arrival_times : array (n,)
        Arrival times in seconds (any common offset).
    speed_of_sound : float
        m/s.
    invert_alg : {"gps", "lstsq"}
        "gps" uses the pseudo-inverse of the receiver matrix (as Sound Finder);
        "lstsq" solves the two linear systems with least squares (same result
        for well-posed arrays).
    center : bool
        Work relative to the receivers' centroid (numerically safer), then
        translate back.
    pseudo : bool
        Choose between the two candidates by their pseudorange error (True:
        distances against the ranges implied by each candidate's own emission
        time) or by the sum of squared TDOA discrepancies (False, as the
        original Sound Finder).

    Returns
    -------
    numpy.ndarray
        Estimated position (metres).

    Raises
    ------
    InsufficientReceiversError
        Fewer than ``dims + 1`` receivers.
    ValueError
        Bad shapes or values, unknown ``invert_alg``.
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
        disc = max((pq - 1) ** 2 - qq * pp, 0.0)  # noise can push it slightly negative
        roots = [(-(pq - 1) + s * math.sqrt(disc)) / qq for s in (1, -1)]
    # u = (position, c * emission time)
    candidates = [p + lam * q for lam in roots] or [np.zeros(dims + 1)]
    if pseudo:
        def error(u):
            return float(np.sum((np.linalg.norm(r - u[:dims], axis=1) - (b[:, -1] - u[-1])) ** 2))
    else:
        tdoas = times - times[0]

        def error(u):
            return float(np.sum(calculate_tdoa_residuals(r, tdoas, u[:dims], speed_of_sound) ** 2))
    best = min(candidates, key=error)
    return np.asarray(best[:dims]) + centre


def least_squares_localize(receiver_positions, arrival_times, speed_of_sound: float = SPEED_OF_SOUND,
                           initial_guess=None) -> np.ndarray:
    """Source position minimizing TDOA errors (nonlinear least squares, metres).

    Starts from ``initial_guess`` (default: the Gillette solution when enough
    receivers are available, else the receivers' centroid) and refines it
    with Levenberg-Marquardt on the analytic Jacobian. Needs ``dims + 1``
    receivers.

    Parameters
    ----------
    receiver_positions : array (n, 2 or 3)
        Receiver positions in metres.
    arrival_times : array (n,)
        Arrival times in seconds (any common offset).
    speed_of_sound : float
        m/s.
    initial_guess : array (dims,), optional
        Starting position in metres.

    Returns
    -------
    numpy.ndarray
        Estimated position (metres).
    """
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
    scale = max(float(np.ptp(positions, axis=0).max()), 1.0)  # solve in array-sized units: well conditioned

    def residuals(x):
        return calculate_tdoa_residuals(positions, tdoas, x * scale, speed_of_sound)

    def jacobian(x):
        offsets = x * scale - positions
        distances = np.maximum(np.linalg.norm(offsets, axis=1, keepdims=True), 1e-12)
        directions = offsets / distances  # d|x - r_i| / dx
        return (directions - directions[0]) * scale

    fit = least_squares(residuals, np.asarray(initial_guess, float) / scale, jac=jacobian, method="lm")
    return fit.x * scale


def localize(receiver_positions, tdoas, algorithm: str = "gillette", speed_of_sound: float = SPEED_OF_SOUND):
    """Source position (metres) by one of :data:`ALGORITHMS`.

    Parameters
    ----------
    receiver_positions : array (n, 2 or 3)
        Receiver positions in metres.
    tdoas : array (n,)
        Arrival times relative to receiver 0 (s).
    algorithm : {"gillette", "soundfinder", "least_squares"}
    speed_of_sound : float
        m/s.
    """
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
