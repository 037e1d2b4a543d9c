"""Recorder coordinates given in degrees, to and from local metres."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["EARTH_RADIUS_M", "latlon_to_xy", "xy_to_latlon"]

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)


def latlon_to_xy(lat, lon, ref_lat: float | None = None, ref_lon: float | None = None):
    """Degrees to local metres (x east, y north) around a reference point.

    Uses an equirectangular projection: exact enough (well below a centimetre
    per 100 m) for recorder arrays a few kilometres across; not for larger areas.

    Parameters
    ----------
    lat, lon : array-like
        Latitudes and longitudes in degrees.
    ref_lat, ref_lon : float, optional
        Reference point (degrees); default: the mean of the given points.

    Returns
    -------
    x, y : numpy.ndarray
        Metres east and north of the reference point.
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
