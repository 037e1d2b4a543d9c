"""The synchronized recorder array: from a detections table to localized events."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import param
from tqdm.auto import tqdm

from opso_nb.localization.coordinates import latlon_to_xy
from opso_nb.localization.localization_algorithms import ALGORITHMS, SPEED_OF_SOUND
from opso_nb.localization.spatial_event import (
    SegmentCache,
    SpatialEvent,
    _file_timing,
    estimate_delays_together,
    events_to_df,
)
from opso_nb.failures import failure_record
from opso_nb.signal_processing import CC_FILTERS
from opso_nb.store import RunStore, file_signature, make_clip_index, utf8_name
from opso_nb.utils import validate_clip_table

__all__ = ["SynchronizedRecorderArray", "LocalizationSettings", "localize_events", "iter_localized_groups"]

DEFAULT_CACHE_BYTES = 256 * 2**20  # filtered segments kept per process while localizing


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

        Clip times are taken as the same real time in every file (recorders
        started together), unless every file carries a ``recording_start_time``
        (AudioMoth metadata): then clips are matched by real time, so a recorder
        that started 0.1 s late joins with its clip 0.1 s earlier.
        """
        detections = self._check_detections(detections)
        nearby = self.make_nearby_files_dict(max_receiver_dist)
        position_of = dict(zip(self.file_coords.index, self.file_coords.to_numpy()))
        clock = _recording_clock(sorted(set(detections.index.get_level_values("file").map(str))))
        events = []
        for class_name in detections.columns:
            positives = detections[detections[class_name].fillna(0).astype(float) > 0]
            by_clip = {}  # (real start, duration) -> {file: its own start time}
            for file, start, end in positives.index:
                file, start, end = str(file), float(start), float(end)
                key = (round(start + clock.get(file, 0.0), 6), round(end - start, 6))
                by_clip.setdefault(key, {})[file] = start
            band = bandpass_ranges.get(class_name) if isinstance(bandpass_ranges, dict) else bandpass_ranges
            for (_, duration), starts in sorted(by_clip.items()):
                for reference in sorted(starts):
                    others = [f for f in nearby[reference] if f in starts and f != reference]
                    if len(others) + 1 < min_n_receivers:
                        continue
                    receivers = [reference] + others
                    events.append(SpatialEvent(
                        receivers, np.array([position_of[f] for f in receivers]), start_time=starts[reference],
                        duration=duration, class_name=class_name, bandpass_range=band,
                        cc_threshold=cc_threshold, max_delay=max_delay))
        return events

    def _run_settings(self, detections, max_receiver_dist, bandpass_ranges, options) -> dict:
        """What a stored localization run depends on (JSON-able): settings, positions, detections, recordings."""
        detections = self._check_detections(detections)
        table = detections.reset_index(drop=False)
        table["file"] = table["file"].map(lambda f: os.fsencode(str(f)).hex())  # any file name, exactly
        digest = hashlib.sha1(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
        digest.update(repr(list(map(str, detections.columns))).encode())
        files = sorted(self.file_coords.index)
        return {
            **{k: v for k, v in options.items() if k != "num_workers"},
            "max_receiver_dist": float(max_receiver_dist),
            "bandpass_ranges": bandpass_ranges if isinstance(bandpass_ranges, dict) or bandpass_ranges is None
            else list(bandpass_ranges),
            "positions": {f: [float(v) for v in self.file_coords.loc[f]] for f in files},
            "detections_sha1": digest.hexdigest(),
            # a recording replaced or edited since (size, modification time) starts a new run
            "recordings": {f: file_signature(f) for f in files},
        }

    def localize_detections(self, detections: pd.DataFrame, max_receiver_dist: float, min_n_receivers: int = 3,
                            localization_algorithm: str = "gillette", cc_threshold: float = 0, cc_filter: str = "phat",
                            max_delay=None, bandpass_ranges=None, residual_threshold: float = np.inf,
                            speed_of_sound: float | None = None, num_workers: int = 0, progress: bool = False,
                            return_unlocalized: bool = True, results_csv=None, output_path=None):
        """Localize every candidate event built from ``detections``.

        Steps: candidate events → GCC delays (after the class's band-pass) →
        drop receivers below ``cc_threshold`` → position → keep events whose
        residual RMS (m) is at most ``residual_threshold``. Events of one clip
        are processed together (:func:`localize_events`), so each recorder's
        clip is read, filtered and transformed once however many events use it.

        Parameters
        ----------
        detections : DataFrame
            Clip table indexed by (file, start_time, end_time), one 0/1 column per class.
        max_receiver_dist : float
            Largest distance (m) from an event's reference recorder to the others.
        min_n_receivers : int
            Fewest receivers an event needs (before and after ``cc_threshold``).
        localization_algorithm : {"gillette", "soundfinder", "least_squares"}
        cc_threshold : float
            Receivers whose cross-correlation peak is lower are dropped.
        cc_filter : str
            GCC weighting, see :func:`opso_nb.signal_processing.gcc`.
        max_delay : float, optional
            Largest absolute delay searched (s); default from each event's receiver spread.
        bandpass_ranges : dict or (low, high), optional
            ``{class: (low_f, high_f)}`` in Hz (or one band for all classes).
        residual_threshold : float
            Largest residual RMS (m) of a localized event.
        speed_of_sound : float, optional
            m/s; default: the array's ``speed_of_sound``.
        num_workers : int
            Processes (0 or 1: this process).
        progress : bool
            Show a tqdm progress bar.
        return_unlocalized : bool
            Return (localized, unlocalized); False returns only the localized list.
        results_csv : str or Path, optional
            Write :func:`events_to_df` of all events (localized first) there, atomically.
        output_path : str or Path, optional
            A run folder (:class:`opso_nb.store.RunStore`, job ``"localize"``):
            the events of each reference recording are stored as one part as
            soon as they are done, with their failures (stage ``"localize"``).
            Run again with the same inputs and settings, it resumes: stored
            recordings are read back, not recomputed. Other settings, another
            detections table or changed recordings start a new run beside the
            old one. ``residual_threshold`` is applied after the store, so
            changing it reuses the stored work.

        Returns
        -------
        (localized_events, unlocalized_events)
            Lists of :class:`SpatialEvent`; unlocalized ones carry ``error``.
            :func:`events_to_df` turns either into a table.
        """
        speed_of_sound = self.speed_of_sound if speed_of_sound is None else speed_of_sound
        if localization_algorithm not in ALGORITHMS:
            raise ValueError(f"localization_algorithm must be one of {ALGORITHMS}, got {localization_algorithm!r}")
        if cc_filter not in CC_FILTERS:
            raise ValueError(f"cc_filter must be one of {CC_FILTERS}, got {cc_filter!r}")
        events = self.create_candidate_events(detections, min_n_receivers, max_receiver_dist,
                                              cc_threshold=cc_threshold, bandpass_ranges=bandpass_ranges,
                                              max_delay=max_delay)
        options = dict(algorithm=localization_algorithm, cc_threshold=cc_threshold, cc_filter=cc_filter,
                       max_delay=max_delay, min_n_receivers=min_n_receivers, speed_of_sound=speed_of_sound,
                       num_workers=num_workers)
        if output_path is None:
            done = localize_events(events, progress=progress, **options)
        else:
            settings = self._run_settings(detections, max_receiver_dist, bandpass_ranges, options)
            done = _localize_into_store(events, output_path, settings, options, progress)
        localized, unlocalized = [], []
        for event in done:
            if event.error is None and event.position_estimate is not None and np.all(
                    np.isfinite(event.position_estimate)):
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


def _recording_clock(files) -> dict:
    """{file: seconds its recording started after the earliest one}, when every file has a recording_start_time.

    Empty (clip times are then shared real times) if any file lacks the metadata or cannot be read: such
    files fail later, event by event, with their own error.
    """
    try:
        starts = {f: _file_timing(f, os.stat(f).st_mtime_ns)[0] for f in files}
    except (OSError, ValueError):
        return {}
    if not starts or any(s is None for s in starts.values()):
        return {}
    first = min(starts.values())
    return {f: (s - first).total_seconds() for f, s in starts.items()}


#: Columns of a stored localization run: numbers, and text (lists joined by ";").
STORE_NUMBER_COLUMNS = ["x", "y", "z", "residual_rms"]
STORE_TEXT_COLUMNS = ["class", "receivers_used", "tdoas", "cc_maxs", "error"]


def _join_numbers(values) -> str:
    return "" if values is None else ";".join(repr(float(v)) for v in np.ravel(values))


def _split_numbers(text) -> np.ndarray | None:
    return None if not isinstance(text, str) or text == "" else np.array([float(v) for v in text.split(";")])


def _events_table(reference: str, events) -> pd.DataFrame:
    """The stored part of one reference recording: one row per event, in the clip-table shape."""
    numbers, texts = [], []
    for event in events:
        pos = event.position_estimate
        xyz = [np.nan] * 3 if pos is None else [*map(float, np.ravel(pos)), np.nan, np.nan][:3]
        numbers.append([event.start_time, event.start_time + (np.nan if event.duration is None else event.duration),
                        *xyz, np.nan if event.residual_rms is None else float(event.residual_rms)])
        texts.append(["" if event.class_name is None else str(event.class_name),
                      ";".join(event.receivers_used or []), _join_numbers(event.tdoas), _join_numbers(event.cc_maxs),
                      event.error or ""])
    numbers = np.array(numbers, dtype=float).reshape(-1, 2 + len(STORE_NUMBER_COLUMNS))
    table = pd.DataFrame(numbers[:, 2:], columns=STORE_NUMBER_COLUMNS,
                         index=make_clip_index([reference] * len(events), numbers[:, 0], numbers[:, 1]))
    # object columns: receiver names and errors may hold file names that are not valid UTF-8
    for j, column in enumerate(STORE_TEXT_COLUMNS):
        table[column] = pd.Series([row[j] for row in texts], index=table.index, dtype=object)
    return table


def _restore_events(events, stored: pd.DataFrame) -> None:
    """Give ``events`` (rebuilt from the detections) the results stored for them."""
    rows = {(round(float(start), 6), cls): row
            for (_, start, _), row, cls in zip(stored.index, stored.to_dict("records"), stored["class"])}
    for event in events:
        row = rows.get((round(event.start_time, 6), "" if event.class_name is None else str(event.class_name)))
        if row is None:  # cannot happen with the same detections (they are part of the run's settings)
            raise RuntimeError(f"stored localization run lacks the event at {event.start_time} s of "
                               f"{event.receiver_files[0]}")
        dims = event.receiver_positions.shape[1]
        position = np.array([row["x"], row["y"], row["z"]][:dims], dtype=float)
        event.position_estimate = position if np.all(np.isfinite(position)) else None
        event.residual_rms = None if not np.isfinite(row["residual_rms"]) else float(row["residual_rms"])
        # the part holds names as UTF-8 text (utf8_name); give back the receivers' exact names
        exact = {utf8_name(f): f for f in event.receiver_files}
        event.receivers_used = [exact.get(f, f) for f in row["receivers_used"].split(";")] \
            if row["receivers_used"] else None
        event.tdoas, event.cc_maxs = _split_numbers(row["tdoas"]), _split_numbers(row["cc_maxs"])
        event.error = row["error"] or None


def _localize_into_store(events, output_path, settings, options, progress) -> list:
    """:func:`localize_events` that stores each reference recording's events as they finish, and resumes."""
    by_reference: dict = {}
    for i, event in enumerate(events):
        by_reference.setdefault(event.receiver_files[0], []).append(i)
    done = list(events)
    cache = SegmentCache(DEFAULT_CACHE_BYTES)  # one for all recordings: neighbours' segments are read once
    with RunStore.open(output_path, settings, job="localize", columns=STORE_NUMBER_COLUMNS, dtype="float64",
                       text_columns=STORE_TEXT_COLUMNS) as store, \
            tqdm(total=len(events), desc="localizing", disable=not progress) as bar:
        records = store.records()
        for reference, positions in by_reference.items():
            group = [events[i] for i in positions]
            record = records.get(reference, {})
            if store.is_done(reference) and record.get("status") == "quarantined":
                for event in group:  # its processes died twice while localizing it: reported, not retried
                    event.error = f"skipped: {record['failures'][0][3]}" if record.get("failures") else "skipped"
            elif store.is_done(reference):
                _restore_events(group, store.read(files=[reference])[0])
            else:
                store.begin(reference)
                try:
                    group = localize_events(group, cache=cache, **options)
                except BaseException:
                    store.release(reference)  # stopped or failed here, not killed: no strike against it
                    raise
                failures = [failure_record(reference, e.error, e.start_time, e.start_time + (e.duration or 0.0),
                                           stage="localize") for e in group if e.error is not None]
                store.write(reference, _events_table(reference, group), failures)
            for i, event in zip(positions, group):
                done[i] = event
            bar.update(len(group))
    return done


def _segment_key(event):
    """Events with the same key read the same part of their files: they are localized together."""
    band = None if event.bandpass_range is None else tuple(map(float, event.bandpass_range))
    return event.start_time, event.duration, band


def _localize_group(events, algorithm, cc_threshold, cc_filter, max_delay, min_n_receivers, speed_of_sound,
                    cache=None):
    """Delays (batched) and positions of one clip's events; failures are recorded on each event."""
    cache = cache if cache is not None else SegmentCache(DEFAULT_CACHE_BYTES)
    estimate_delays_together(events, cc_filter=cc_filter, max_delay=max_delay, speed_of_sound=speed_of_sound,
                             cache=cache, errors="record")
    for event in events:
        if event.error is not None:
            continue
        try:
            event.estimate_location(algorithm, cc_threshold=cc_threshold, min_n_receivers=min_n_receivers,
                                    speed_of_sound=speed_of_sound)
        except Exception as err:  # reported per event; the run goes on
            event.error = f"{type(err).__name__}: {err}"
    return events


def _group_positions(events) -> dict:
    """{clip key: positions in ``events`` of the events reading that clip}, in order of first appearance."""
    groups: dict = {}
    for i, event in enumerate(events):
        groups.setdefault(_segment_key(event), []).append(i)
    return groups


def iter_localized_groups(events, algorithm: str = "gillette", cc_threshold=0, cc_filter: str = "phat",
                          max_delay=None, min_n_receivers: int = 3, speed_of_sound: float = SPEED_OF_SOUND,
                          num_workers: int = 0, cache: SegmentCache | None = None):
    """Localize events clip by clip, yielding ``(key, events)`` as each clip's events are done.

    ``key`` is (start_time, duration, bandpass_range) of the clip. Groups come
    in the order of their first event; with ``num_workers`` > 1 they are
    computed in parallel processes (and the yielded events are copies of the
    given ones). ``cache``: the :class:`SegmentCache` of filtered segments
    used in this process (a new one if None), e.g. one shared by several
    calls over the same recordings.
    """
    groups = {key: [events[i] for i in positions] for key, positions in _group_positions(events).items()}
    args = (algorithm, cc_threshold, cc_filter, max_delay, min_n_receivers, speed_of_sound)
    if num_workers and num_workers > 1 and len(groups) > 1:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            futures = {key: pool.submit(_localize_group, group, *args) for key, group in groups.items()}
            for key, future in futures.items():
                yield key, future.result()
    else:
        cache = cache if cache is not None else SegmentCache(DEFAULT_CACHE_BYTES)  # overlapping clips reuse segments
        for key, group in groups.items():
            yield key, _localize_group(group, *args, cache=cache)


def localize_events(events, algorithm: str = "gillette", cc_threshold=0, cc_filter: str = "phat", max_delay=None,
                    min_n_receivers: int = 3, speed_of_sound: float = SPEED_OF_SOUND, num_workers: int = 0,
                    progress: bool = False, cache: SegmentCache | None = None) -> list:
    """Estimate delays and positions of many events; returns them in their original order.

    Failures (unreadable audio, too few receivers...) are recorded in each
    event's ``error``; the others get ``tdoas``, ``cc_maxs``, ``position_estimate``
    and ``residual_rms``. See :func:`iter_localized_groups` for the clip-by-clip form.
    """
    positions = _group_positions(events)
    done = list(events)
    with tqdm(total=len(events), desc="localizing", disable=not progress) as bar:
        for key, group in iter_localized_groups(events, algorithm, cc_threshold, cc_filter, max_delay,
                                                min_n_receivers, speed_of_sound, num_workers, cache):
            for i, event in zip(positions[key], group):
                done[i] = event
            bar.update(len(group))
    return done


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
    cc_filter = param.Selector(default="phat", objects=list(CC_FILTERS), doc="Generalized cross-correlation weighting")
    max_delay = param.Number(default=None, allow_None=True, bounds=(0, None),
                             doc="Largest absolute delay searched (s); default from the receivers' spread")
    residual_threshold = param.Number(default=np.inf, bounds=(0, None), doc="Largest residual RMS (m) kept")
    speed_of_sound = param.Number(default=SPEED_OF_SOUND, bounds=(1, None), doc="m/s")
    num_workers = param.Integer(default=0, bounds=(0, None), doc="Processes (0: this one)")

    def localize(self, array: SynchronizedRecorderArray, detections: pd.DataFrame, bandpass_ranges=None, **kwargs):
        """``array.localize_detections(detections, ...)`` with these settings; returns (localized, unlocalized)."""
        settings = {k: v for k, v in self.param.values().items() if k != "name"}
        settings.update(kwargs)
        return array.localize_detections(detections, bandpass_ranges=bandpass_ranges, **settings)
