"""Small helpers shared across opso_nb: clip-time tables, atomic writes, rescaling."""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

FINAL_CLIP_MODES = (None, "remainder", "full", "extend")

#: Index names of the clip table used everywhere in opso_nb.
CLIP_INDEX = ["file", "start_time", "end_time"]


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

    Parameters
    ----------
    full_duration : float
        Length of the audio to cover, in seconds.
    clip_duration : float
        Length of each clip, in seconds.
    clip_overlap : float
        Seconds shared by consecutive clips; negative values leave gaps.
    final_clip : {None, "remainder", "full", "extend"}
        What to do with time left over after the last full clip:
        ``None`` drops it; ``"remainder"`` makes a shorter last clip ending at
        ``full_duration``; ``"full"`` makes a full-length last clip ending at
        ``full_duration`` (overlapping the previous one more); ``"extend"`` makes
        a full-length clip that runs past ``full_duration``.
        Audio shorter than one clip gives a single clip: ``(0, full_duration)``,
        or ``(0, clip_duration)`` with ``"extend"``.
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
    >>> generate_clip_times_df(12, 5, final_clip="remainder").values.tolist()
    [[0.0, 5.0], [5.0, 10.0], [10.0, 12.0]]
    """
    _check_final_clip(final_clip)
    if clip_duration is None or clip_duration <= 0:
        raise ValueError(f"clip_duration must be > 0 seconds, got {clip_duration}")
    if full_duration is None or not np.isfinite(full_duration) or full_duration < 0:
        raise ValueError(f"full_duration must be a finite number >= 0, got {full_duration}")
    step = clip_step if clip_step is not None else clip_duration - clip_overlap
    if step <= 0:
        raise ValueError(
            f"clip_overlap ({clip_overlap} s) must be smaller than clip_duration ({clip_duration} s)"
        )
    eps = 1e-9
    if full_duration <= clip_duration + eps:
        end = clip_duration if final_clip == "extend" else full_duration
        rows = [(0.0, end)] if full_duration > 0 or final_clip == "extend" else []
    else:
        n_full = int(math.floor((full_duration - clip_duration) / step + eps)) + 1
        starts = np.arange(n_full) * step
        rows = [(s, s + clip_duration) for s in starts]
        last_end = rows[-1][1]
        next_start = n_full * step
        if last_end < full_duration - eps and final_clip is not None:
            if final_clip == "full":
                rows.append((full_duration - clip_duration, full_duration))
            elif next_start < full_duration - eps:
                if final_clip == "remainder":
                    rows.append((next_start, full_duration))
                elif final_clip == "extend":
                    rows.append((next_start, next_start + clip_duration))
    df = pd.DataFrame(rows, columns=["start_time", "end_time"], dtype=float)
    if rounding_precision is not None:
        df = df.round(rounding_precision)
    return df


def make_clip_df(
    files: Iterable,
    clip_duration: float,
    clip_overlap: float = 0,
    final_clip: str | None = None,
    return_invalid_samples: bool = False,
    raise_errors: bool = False,
    clip_step: float | None = None,
):
    """Clip table (file, start_time, end_time) for a list of audio files.

    Durations are read from file headers, never by loading the samples, so a
    folder of 10-hour recordings is listed in milliseconds.

    Parameters
    ----------
    files : iterable of str or Path
        Audio files.
    clip_duration, clip_overlap, final_clip, clip_step
        As in :func:`generate_clip_times_df` (seconds).
    return_invalid_samples : bool
        If True also return the files that could not be read.
    raise_errors : bool
        Raise :class:`opso_nb.audio.AudioLoadError` on the first unreadable
        file instead of skipping it.

    Returns
    -------
    pandas.DataFrame
        Empty-columned DataFrame indexed by (file, start_time, end_time);
        with ``return_invalid_samples`` a tuple ``(df, invalid)`` where
        ``invalid`` is a DataFrame with columns ``file`` and ``error``.
    """
    from opso_nb.audio import AudioLoadError, audio_info

    if isinstance(files, (str, Path)):
        files = [files]
    frames = []
    invalid = []
    for f in files:
        try:
            duration = audio_info(f).duration
        except AudioLoadError as err:
            if raise_errors:
                raise
            invalid.append((str(f), str(err)))
            continue
        times = generate_clip_times_df(
            duration, clip_duration, clip_overlap, final_clip, clip_step=clip_step
        )
        times.insert(0, "file", str(f))
        frames.append(times)
    if frames:
        df = pd.concat(frames, ignore_index=True)
    else:
        df = pd.DataFrame(columns=CLIP_INDEX)
    df = df.set_index(CLIP_INDEX)
    if return_invalid_samples:
        return df, pd.DataFrame(invalid, columns=["file", "error"])
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
    """Linearly map values from ``in_range`` to ``out_range`` (optionally clipping)."""
    x = np.asarray(x, dtype=float)
    in_lo, in_hi = in_range
    out_lo, out_hi = out_range
    if in_hi == in_lo:
        raise ValueError(f"in_range must span a non-zero interval, got {in_range}")
    y = (x - in_lo) / (in_hi - in_lo) * (out_hi - out_lo) + out_lo
    if clip:
        y = np.clip(y, min(out_lo, out_hi), max(out_lo, out_hi))
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
