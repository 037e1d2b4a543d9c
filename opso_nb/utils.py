"""Small helpers shared across opso_nb: clip-time tables, atomic writes, rescaling, OpenSoundscape's utilities.

Clip tables are pandas DataFrames indexed by ``(file, start_time, end_time)``
(:data:`CLIP_INDEX`), the one shape that carries clips through opso_nb.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import scipy.special

from opso_nb.audio_io import AudioLoadError, AudioReader, audio_info, display_path
from opso_nb.failures import failure_record, failures_frame

__all__ = [
    "CLIP_INDEX",
    "FINAL_CLIP_MODES",
    "GetDurationError",
    "atomic_path",
    "atomic_write",
    "remove_stale_temp_files",
    "binarize",
    "generate_clip_times_df",
    "hex_to_time",
    "identity",
    "inrange",
    "isNan",
    "jitter",
    "linear_scale",
    "load_metadata",
    "make_clip_df",
    "min_max_scale",
    "overlap",
    "overlap_fraction",
    "rescale",
    "rescale_features",
    "sigmoid",
    "validate_clip_table",
]

FINAL_CLIP_MODES = (None, "remainder", "full", "extend")

#: Index names of the clip table used everywhere in opso_nb.
CLIP_INDEX = ["file", "start_time", "end_time"]

_EPS = 1e-9  # seconds; absorbs float noise such as 0.1 + 0.2 != 0.3 in clip arithmetic


class GetDurationError(AudioLoadError, ValueError):
    """The duration of a file could not be read from its header (raised by :func:`make_clip_df`)."""


def _check_final_clip(final_clip):
    if final_clip not in FINAL_CLIP_MODES:
        raise ValueError(
            f"final_clip must be one of {FINAL_CLIP_MODES}, got {final_clip!r}"
        )


def generate_clip_times_df(
    full_duration: float,
    clip_duration: float,
    clip_overlap: float = 0,
    final_clip: str | None = None,
    rounding_precision: int | None = 10,
    clip_step: float | None = None,
) -> pd.DataFrame:
    """Start and end times of evenly spaced clips covering ``full_duration``.

    Clips start every ``clip_duration - clip_overlap`` seconds, from 0 while the
    start lies inside the audio; ``final_clip`` decides what happens to the
    clips that would run past the end.

    Parameters
    ----------
    full_duration : float
        Length of the audio to cover, in seconds.
    clip_duration : float
        Length of each clip, in seconds.
    clip_overlap : float
        Seconds shared by consecutive clips; negative values leave gaps.
    final_clip : {None, "remainder", "full", "extend"}
        Clips that would end after ``full_duration``:
        ``None`` drops them; ``"remainder"`` cuts them at ``full_duration``
        (shorter clips); ``"full"`` moves them back to end at ``full_duration``
        (more overlap with the previous clip; duplicates are dropped);
        ``"extend"`` keeps them running past ``full_duration`` (the audio is
        padded with silence).
        Audio shorter than one clip gives one clip: ``(0, full_duration)``, or
        ``(0, clip_duration)`` with ``"extend"`` (as the OpenSoundscape 0.9
        manual documents; zero-length audio gives no clip).
    rounding_precision : int or None
        Decimals to round times to (avoids 4.999999 style float noise).
    clip_step : float, optional
        Seconds between clip starts; alternative to ``clip_overlap``
        (``clip_step = clip_duration - clip_overlap``).

    Returns
    -------
    pandas.DataFrame
        Columns ``start_time`` and ``end_time`` (seconds).

    Examples
    --------
    >>> generate_clip_times_df(10.5, 5, final_clip="remainder").values.tolist()
    [[0.0, 5.0], [5.0, 10.0], [10.0, 10.5]]
    >>> generate_clip_times_df(10.5, 5, final_clip="full").values.tolist()
    [[0.0, 5.0], [5.0, 10.0], [5.5, 10.5]]
    """
    _check_final_clip(final_clip)
    if clip_duration is None or not clip_duration > 0:
        raise ValueError(f"clip_duration must be > 0 seconds, got {clip_duration}")
    if full_duration is None or not np.isfinite(full_duration) or full_duration < 0:
        raise ValueError(f"full_duration must be a finite number >= 0, got {full_duration}")
    step = clip_step if clip_step is not None else clip_duration - clip_overlap
    if step <= 0:
        raise ValueError(
            f"clip_overlap ({clip_overlap} s) must be smaller than clip_duration ({clip_duration} s)"
        )
    if full_duration <= _EPS:
        starts = ends = np.zeros(0)
    elif full_duration < clip_duration - _EPS:  # shorter than one clip: the whole audio is the clip
        starts = np.zeros(1)
        ends = np.array([clip_duration if final_clip == "extend" else full_duration], dtype=float)
    else:
        starts = np.arange(math.ceil((full_duration - _EPS) / step)) * step
        ends = starts + clip_duration
        past_end = ends > full_duration + _EPS
        if final_clip is None:
            starts, ends = starts[~past_end], ends[~past_end]
        elif final_clip == "remainder":
            ends = np.minimum(ends, full_duration)
        elif final_clip == "full":
            starts = np.where(past_end, full_duration - clip_duration, starts)
            ends = starts + clip_duration
    df = pd.DataFrame({"start_time": starts, "end_time": ends}, dtype=float)
    if rounding_precision is not None:
        df = df.round(rounding_precision)
    if final_clip == "full":
        df = df.drop_duplicates(ignore_index=True)
    return df


def _files_and_labels(files):
    """(list of file paths, label table indexed by file or None) from make_clip_df's ``files`` argument."""
    if isinstance(files, pd.DataFrame):
        labels = files
        if isinstance(labels.index, pd.MultiIndex):
            labels = labels.reset_index(level=[n for n in labels.index.names if n != labels.index.names[0]],
                                        drop=True)
        labels = labels[~labels.index.duplicated(keep="first")]  # documented: the first row of a file wins
        return list(labels.index), labels
    if isinstance(files, (str, bytes, os.PathLike)):
        return [files], None
    return list(files), None


def make_clip_df(
    files: Iterable,
    clip_duration: float,
    clip_overlap: float = 0,
    final_clip: str | None = None,
    return_invalid_samples: bool = False,
    raise_exceptions: bool = False,
    clip_step: float | None = None,
    raise_errors: bool | None = None,
):
    """Clip table (file, start_time, end_time) for a list of audio files, or for a table of file labels.

    Durations are read from file headers, never by loading the samples, so a
    folder of 10-hour recordings is listed in milliseconds.

    Parameters
    ----------
    files : iterable of paths, or pandas.DataFrame
        Audio files (any name the operating system accepts). A DataFrame
        indexed by file path is a label table: its columns are copied to every
        clip of the file (the first row wins if a file appears twice).
    clip_duration, clip_overlap, final_clip, clip_step
        As in :func:`generate_clip_times_df` (seconds).
    return_invalid_samples : bool
        Also return the files that could not be read.
    raise_exceptions : bool
        Raise :class:`GetDurationError` (an :class:`~opso_nb.audio.AudioLoadError`)
        on the first unreadable file instead of skipping it.
    raise_errors : bool, optional
        Older opso_nb spelling of ``raise_exceptions``.

    Returns
    -------
    pandas.DataFrame
        Indexed by (file, start_time, end_time); the label columns of a label
        table, no columns otherwise. Unreadable files are left out (see
        ``docs/differences/audio.md``). With ``return_invalid_samples`` a tuple
        ``(df, invalid)`` where ``invalid`` is a failures table
        (:mod:`opso_nb.failures`: file, start_time, end_time, stage, error),
        one row per unreadable file.

    Examples
    --------
    >>> from opso_nb import sample_data
    >>> make_clip_df([sample_data.birds()], 5).index.get_level_values("end_time").tolist()
    [5.0, 10.0]
    """
    if raise_errors is not None:
        raise_exceptions = raise_errors
    paths, labels = _files_and_labels(files)
    frames = []
    invalid = []
    for position, f in enumerate(paths):
        name = display_path(f)
        try:
            duration = audio_info(f).duration
        except AudioLoadError as err:
            if raise_exceptions:
                raise GetDurationError(err.path, err.reason) from err
            invalid.append(failure_record(name, err, stage="load"))
            continue
        times = generate_clip_times_df(duration, clip_duration, clip_overlap, final_clip, clip_step=clip_step)
        # object dtype: pandas' default string dtype (pyarrow) cannot hold the surrogate escapes of non-UTF-8 names
        times.insert(0, "file", pd.Series([name] * len(times), dtype=object))
        times["_source"] = position
        frames.append(times)
    if frames:
        df = pd.concat(frames, ignore_index=True)
    else:
        df = pd.DataFrame({"file": pd.Series(dtype=object), "start_time": pd.Series(dtype=float),
                           "end_time": pd.Series(dtype=float), "_source": pd.Series(dtype=int)})
    if labels is not None:
        copied = labels.iloc[df["_source"].to_numpy()].reset_index(drop=True)
        df = pd.concat([df, copied], axis=1)
    df = df.drop(columns="_source").set_index(CLIP_INDEX)
    if return_invalid_samples:
        return df, failures_frame(invalid)
    return df


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", fsync: bool = True, **open_kwargs):
    """Open a temporary file next to ``path``; move it over ``path`` only on success.

    A crash or exception mid-write leaves any previous ``path`` intact and no
    half-written file behind (a process killed mid-write leaves a hidden
    ``.<name>.<random>.tmp<suffix>`` file, which :mod:`opso_nb.store` removes on
    its next run). The file gets the usual permissions for new files (0666
    less the process umask), like a plain ``open(path, "w")``. ``fsync``: see
    :func:`atomic_path`.

    Examples
    --------
    >>> with atomic_write(tmp / "scores.csv") as f:  # doctest: +SKIP
    ...     df.to_csv(f)
    """
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, mode, **open_kwargs) as handle:
        yield handle


# Temporary files of atomic_path: ".<name>.<12 hex>.tmp<suffix>"; tempfile.mkstemp names (8 characters)
# from older versions are matched too.
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8,12}\.tmp(\.[^./]*)?$")


def remove_stale_temp_files(folder, older_than_s: float = 0.0) -> list:
    """Delete temporary files that an interrupted :func:`atomic_path` left in ``folder`` (not recursive).

    A killed process (SIGKILL, out-of-memory) cannot remove its temporary
    file; the next run in the same folder does.

    Parameters
    ----------
    folder : str or Path
    older_than_s : float
        Only files last modified more than this many seconds ago. 0 removes
        all: only safe while no one else writes there (e.g. holding the
        folder's lock), since a live writer's temporary file looks the same.

    Returns
    -------
    list of str
        The paths removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and _TEMP_NAME.match(entry.name):
            try:
                if older_than_s and now - entry.stat(follow_symlinks=False).st_mtime <= older_than_s:
                    continue
                os.remove(entry.path)
                removed.append(entry.path)
            except FileNotFoundError:
                pass
    return removed


@contextlib.contextmanager
def atomic_path(path, fsync: bool = True):
    """Context manager yielding a temporary path (same folder and suffix) that replaces ``path`` on success.

    For writers that want a file name rather than a handle (soundfile, pyarrow,
    torch.save). The temporary file is created with mode 0666 less the umask
    (``tempfile.mkstemp`` would make it 0600, unreadable to colleagues sharing
    results), then renamed over ``path`` in one step. With ``fsync`` (default)
    its data reach the disk before the rename, so ``path`` is whole even after
    a power cut; without, a killed process still never leaves a partial
    ``path`` (only a crash of the whole machine could), and small files are
    written several times faster.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:  # O_EXCL: never reuse a name another writer holds
        tmp = target.parent / f".{target.name}.{os.urandom(6).hex()}.tmp{target.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def rescale(x, in_range, out_range=(0, 1), clip=True):
    """Linearly map values from ``in_range`` to ``out_range`` (optionally clipping).

    float32 input stays float32 (spectrogram images do not need float64);
    anything else is computed in float64.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    in_lo, in_hi = in_range
    out_lo, out_hi = out_range
    if in_hi == in_lo:
        raise ValueError(f"in_range must span a non-zero interval, got {in_range}")
    scale = x.dtype.type((out_hi - out_lo) / (in_hi - in_lo))
    y = (x - x.dtype.type(in_lo)) * scale + x.dtype.type(out_lo)
    if clip:
        np.clip(y, min(out_lo, out_hi), max(out_lo, out_hi), out=y)
    return y


def linear_scale(array, in_range=(0, 1), out_range=(0, 255)):
    """Map values linearly from ``in_range`` to ``out_range`` and clip (as OpenSoundscape)."""
    return rescale(array, in_range, out_range, clip=True)


def min_max_scale(array, feature_range=(0, 1)):
    """Scale values so their minimum and maximum map to ``feature_range``."""
    array = np.asarray(array, dtype=float)
    lo, hi = np.nanmin(array), np.nanmax(array)
    if hi == lo:
        return np.full_like(array, feature_range[0], dtype=float)
    return rescale(array, (lo, hi), feature_range, clip=False)


def rescale_features(X, rescaling_vector=None):
    """Divide each feature (column) by its maximum, or by a given vector (to rescale new data like old).

    Parameters
    ----------
    X : array-like, shape (n_samples, n_features)
    rescaling_vector : array-like, shape (n_features,), optional
        Divisors; default the column maxima of ``X``.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The rescaled features and the rescaling vector.

    Examples
    --------
    >>> rescale_features([[1.0, -4.0], [2.0, 2.0]])[0].tolist()
    [[0.5, -2.0], [1.0, 1.0]]
    """
    X = np.asarray(X, dtype=float)
    vector = X.max(axis=0) if rescaling_vector is None else np.asarray(rescaling_vector, dtype=float)
    return X / vector, vector


def isNan(x) -> bool:
    """True if ``x`` is NaN (a value that is not equal to itself); works for any scalar, also strings."""
    return bool(x != x)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))`` (numerically stable for large ``|x|``)."""
    return scipy.special.expit(x)


def binarize(x, threshold) -> list:
    """``[1 if value > threshold else 0 for value in x]`` (strictly greater)."""
    return [1 if value > threshold else 0 for value in x]


def identity(x):
    """Return ``x`` unchanged."""
    return x


def inrange(x, r) -> bool:
    """True if ``r[0] <= x <= r[1]`` (both ends included)."""
    return bool(r[0] <= x <= r[1])


def _check_range(r, name):
    if r[0] > r[1]:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {tuple(r)}")


def overlap(r1, r2) -> float:
    """Length of the overlap of two ranges ``(low, high)``; 0 if they do not overlap.

    Examples
    --------
    >>> overlap((0, 5), (3, 10))
    2
    """
    _check_range(r1, "r1")
    _check_range(r2, "r2")
    return max(0, min(r1[1], r2[1]) - max(r1[0], r2[0]))


def overlap_fraction(r1, r2) -> float:
    """Fraction of range ``r1`` covered by range ``r2`` (0 to 1).

    Raises
    ------
    ValueError
        If ``r1`` has zero length.
    """
    length = r1[1] - r1[0]
    if length == 0:
        raise ValueError(f"r1 has zero length {tuple(r1)}: its overlap fraction is undefined")
    return overlap(r1, r2) / length


def jitter(x, width, distribution: str = "gaussian"):
    """``x`` plus random noise: Gaussian with standard deviation ``width``, or uniform on [-width, width].

    Uses numpy's global random state (seed it with ``numpy.random.seed`` for
    repeatable jitter). Works on scalars and arrays of any shape.
    """
    if distribution == "gaussian":
        noise = np.random.normal(0, width, np.shape(x))
    elif distribution == "uniform":
        noise = np.random.uniform(-width, width, np.shape(x))
    else:
        raise ValueError(f"distribution must be 'gaussian' or 'uniform', got {distribution!r}")
    return x + noise


def hex_to_time(s: str) -> dt.datetime:
    """UTC time of a hexadecimal Unix timestamp (old AudioMoth file names, e.g. ``"5F16A04E"``).

    Examples
    --------
    >>> hex_to_time("5F16A04E").isoformat()
    '2020-07-21T07:59:10+00:00'
    """
    return dt.datetime.fromtimestamp(int(s, 16), tz=dt.timezone.utc)


def load_metadata(path, raise_exceptions: bool = False) -> dict | None:
    """Raw header tags (title, comment, artist, date ...) of an audio file.

    Returns None (or raises the :class:`~opso_nb.audio.AudioLoadError`, with
    ``raise_exceptions``) if the file cannot be read.
    """
    try:
        with AudioReader(path) as reader:
            return reader.metadata()
    except AudioLoadError:
        if raise_exceptions:
            raise
        return None


def validate_clip_table(df: pd.DataFrame, name: str = "clip table") -> pd.DataFrame:
    """Check that ``df`` is indexed by (file, start_time, end_time) with sane times.

    Also accepts the same three as columns and moves them into the index.

    Raises
    ------
    ValueError
        Naming the problem (missing levels, NaN times, end before start).
    """
    if list(df.index.names) != CLIP_INDEX:
        if all(c in df.columns for c in CLIP_INDEX):
            df = df.set_index(CLIP_INDEX)
        else:
            raise ValueError(
                f"{name} must be indexed by {CLIP_INDEX} (or have those columns); "
                f"got index {list(df.index.names)} and columns {list(df.columns)[:8]}"
            )
    starts = df.index.get_level_values("start_time").to_numpy(dtype=float)
    ends = df.index.get_level_values("end_time").to_numpy(dtype=float)
    bad = np.isnan(starts) | np.isnan(ends) | (ends < starts)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}: row {row} ({df.index[row]}) has a missing time or ends before it starts"
        )
    return df
