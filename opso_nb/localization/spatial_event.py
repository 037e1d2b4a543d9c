"""Spatial events: one sound heard on several synchronized recorders, its delays and position.

Also the pieces that read each recorder's audio of an event at the same real
time (start-time offsets from AudioMoth metadata, a bounded cache of filtered
segments) and the results table.
"""
from __future__ import annotations

import functools
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from opso_nb.aru import parse_audiomoth_metadata_from_path
from opso_nb.audio import Audio, audio_info
from opso_nb.localization.localization_algorithms import (
    SPEED_OF_SOUND,
    InsufficientReceiversError,
    _as_positions,
    _rms,
    calculate_tdoa_residuals,
    localize,
)
from opso_nb.signal_processing import tdoa_pairs
from opso_nb.utils import atomic_path

__all__ = ["SpatialEvent", "SegmentCache", "estimate_delays_together", "events_to_df", "filter_events",
           "SYNC_TOLERANCE_S", "BANDPASS_ORDER"]

SYNC_TOLERANCE_S = 0.01  # largest length difference (s) of files taken as started together
BANDPASS_ORDER = 9  # Butterworth order of the band-pass before cross-correlation


def _load_segment(file, offset, duration, bandpass_range):
    """A segment of a file (seconds), band-passed if ``bandpass_range`` (Hz) is given."""
    audio = Audio.from_file(file, offset=max(0.0, offset), duration=duration, out_of_bounds_mode="raise")
    if bandpass_range is not None:
        audio = audio.bandpass(bandpass_range[0], bandpass_range[1], order=BANDPASS_ORDER)
    return audio


class SegmentCache:
    """Filtered audio segments, reused by every event that reads the same part of a file.

    Redundant candidate events (every detection is the reference of one) read
    the same clip of the same files again and again; this keeps each filtered
    segment once. Only segments are kept, never whole recordings, and the
    least recently used are dropped beyond ``max_bytes``.

    Parameters
    ----------
    max_bytes : int
        Memory budget for the kept samples (bytes).
    """

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def load(self, file, offset: float, duration, bandpass_range=None) -> Audio:
        """The segment ``offset .. offset + duration`` s of ``file``, band-passed to ``bandpass_range`` Hz."""
        band = None if bandpass_range is None else (float(bandpass_range[0]), float(bandpass_range[1]))
        key = (str(file), round(float(offset), 9), None if duration is None else round(float(duration), 9), band)
        audio = self._items.get(key)
        if audio is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return audio
        self.misses += 1
        audio = _load_segment(file, offset, duration, band)
        self._items[key] = audio
        self.nbytes += audio.samples.nbytes
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self.nbytes -= dropped.samples.nbytes
        return audio

    def clear(self):
        """Forget every segment."""
        self._items.clear()
        self.nbytes = 0


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
        Largest absolute TDOA searched (s); default: largest receiver distance / speed of sound.
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

    def default_max_delay(self, speed_of_sound: float = SPEED_OF_SOUND) -> float:
        """Largest physically possible absolute TDOA (s) between this event's receivers, with a 5 % + 1 ms margin."""
        spread = np.linalg.norm(self.receiver_positions[:, None] - self.receiver_positions[None], axis=-1).max()
        return spread / speed_of_sound * 1.05 + 1e-3

    def segments(self, cache: SegmentCache | None = None) -> list[Audio]:
        """Each receiver's (band-passed) audio of this event, read at the same real time.

        The reference is read from ``start_time`` for ``duration`` seconds; the
        others from the same moment (after start-time offsets) for as long.
        """
        cache = cache if cache is not None else SegmentCache()
        shifts = _start_offsets(self.receiver_files)
        reference = cache.load(self.receiver_files[0], self.start_time, self.duration, self.bandpass_range)
        duration = self.duration if self.duration else reference.duration
        segments = [reference]
        for file, shift in zip(self.receiver_files[1:], shifts[1:]):
            audio = cache.load(file, self.start_time + shift, duration, self.bandpass_range)
            if audio.sample_rate != reference.sample_rate:
                raise ValueError(f"{file}: sample rate {audio.sample_rate} Hz differs from the reference's "
                                 f"{reference.sample_rate} Hz")
            segments.append(audio)
        return segments

    def estimate_delays(self, bandpass_range=None, cc_filter: str = "phat", max_delay=None,
                        speed_of_sound: float = SPEED_OF_SOUND, cache: SegmentCache | None = None):
        """Time differences of arrival (s) of every receiver relative to the first.

        Each file's segment is cross-correlated (GCC with ``cc_filter``) with the
        reference's.

        Parameters
        ----------
        bandpass_range : (low, high) Hz, optional
            Replaces ``self.bandpass_range``.
        cc_filter : str
            See :func:`opso_nb.signal_processing.gcc`.
        max_delay : float, optional
            Largest absolute delay searched (s); default ``self.max_delay``, else
            :meth:`default_max_delay`.
        speed_of_sound : float
            m/s, for the default ``max_delay``.
        cache : SegmentCache, optional
            Reuse segments already read by other events.

        Returns
        -------
        tdoas, cc_maxs : numpy.ndarray
            Delay (s) and peak cross-correlation of each receiver (the
            reference's are 0 and 1). Also stored as ``self.tdoas`` and
            ``self.cc_maxs``.
        """
        if bandpass_range is not None:
            self.bandpass_range = bandpass_range
        estimate_delays_together([self], cc_filter=cc_filter, max_delay=max_delay, speed_of_sound=speed_of_sound,
                                 cache=cache, errors="raise")
        return self.tdoas, self.cc_maxs

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
        return [_load_segment(f, self.start_time + shift + delay - padding, duration, self.bandpass_range)
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


def estimate_delays_together(events, cc_filter: str = "phat", max_delay=None, speed_of_sound: float = SPEED_OF_SOUND,
                             cache: SegmentCache | None = None, errors: str = "record", workers: int | None = -1):
    """Delays of many events at once: each segment is read, filtered and Fourier-transformed once.

    Events of one clip share their receivers' segments (each detection is the
    reference of one event). Here every distinct segment is read once through
    ``cache``, transformed once, and all (receiver, reference) pairs of all
    events are cross-correlated in batched inverse FFTs
    (:func:`opso_nb.signal_processing.tdoa_pairs`). Results equal those of
    each event cross-correlating its pairs one at a time.

    Parameters
    ----------
    events : list of SpatialEvent
        Each uses its own ``bandpass_range`` and ``max_delay``.
    cc_filter : str
        GCC weighting.
    max_delay : float, optional
        Overrides every event's ``max_delay`` (s).
    speed_of_sound : float
        m/s, for events without a ``max_delay``.
    cache : SegmentCache, optional
        Shared segment cache (a new one if None).
    errors : {"record", "raise"}
        On a failure (unreadable file, unsynchronized recordings...), set the
        event's ``error`` and go on, or raise.
    workers : int or None
        FFT threads.

    Returns
    -------
    list of SpatialEvent
        The same events, with ``tdoas`` and ``cc_maxs`` set (or ``error``).
    """
    if errors not in ("record", "raise"):
        raise ValueError(f"errors must be 'record' or 'raise', got {errors!r}")
    cache = cache if cache is not None else SegmentCache()
    # signals bucketed by (length, sample rate): a bucket shares one transform length, so the
    # numbers match a one-pair-at-a-time cross-correlation exactly
    buckets: dict = {}
    jobs = []  # (event, [(bucket key, pair index)] per non-reference receiver)
    for event in events:
        try:
            segments = event.segments(cache)
            for file, audio in zip(event.receiver_files, segments):
                _check_segment(file, audio, event.start_time)
            limit = max_delay if max_delay is not None else event.max_delay
            limit = limit if limit is not None else event.default_max_delay(speed_of_sound)
            refs = []
            for audio in segments[1:]:
                reference = segments[0]
                n = min(len(audio.samples), len(reference.samples))
                key = (n, reference.sample_rate)
                bucket = buckets.setdefault(key, {"index": {}, "signals": [], "pairs": [], "max_delay": []})
                ids = [_bucket_signal(bucket, seg.samples[:n]) for seg in (audio, reference)]
                bucket["pairs"].append(ids)
                bucket["max_delay"].append(limit)
                refs.append((key, len(bucket["pairs"]) - 1))
            jobs.append((event, refs))
        except Exception as err:
            if errors == "raise":
                raise
            event.error = f"{type(err).__name__}: {err}"
    results = {}
    for key, bucket in buckets.items():
        try:
            results[key] = tdoa_pairs(bucket["signals"], bucket["pairs"], cc_filter=cc_filter, sample_rate=key[1],
                                      max_delay=bucket["max_delay"], return_max=True, workers=workers)
        except Exception as err:
            if errors == "raise":
                raise
            results[key] = err  # every event with a pair in this bucket reports it
    for event, refs in jobs:
        failed = [results[key] for key, _ in refs if isinstance(results[key], Exception)]
        if failed:
            event.error = f"{type(failed[0]).__name__}: {failed[0]}"
            continue
        event.tdoas = np.array([0.0] + [results[key][0][i] for key, i in refs])
        event.cc_maxs = np.array([1.0] + [results[key][1][i] for key, i in refs])
    return list(events)


def _check_segment(file, audio, start_time):
    """ValueError naming the file if an event's segment is empty or holds NaN/infinite samples."""
    if audio.samples.size == 0:
        raise ValueError(f"{file}: no samples in the event's segment starting at {start_time:.3f} s")
    bad = np.count_nonzero(~np.isfinite(audio.samples))
    if bad:
        raise ValueError(f"{file}: {bad} NaN or infinite sample(s) in the event's segment starting at "
                         f"{start_time:.3f} s")


def _bucket_signal(bucket, samples):
    """Index of ``samples`` in the bucket's signal list, adding it once (identified by its buffer)."""
    ident = (samples.__array_interface__["data"][0], samples.shape, samples.strides)
    if ident not in bucket["index"]:
        bucket["index"][ident] = len(bucket["signals"])
        bucket["signals"].append(samples)
    return bucket["index"][ident]


@functools.lru_cache(maxsize=4096)
def _file_timing(file: str, mtime_ns):
    """(recording_start_time or None, duration in s) of a file; cached per file version (``mtime_ns``)."""
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
