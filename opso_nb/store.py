"""One resumable store for every per-file batch job: prediction, RIBBIT, embeddings, localization, Dask.

A long batch (a season of recordings) must survive being killed, must never mix
results computed with different settings, and must not let one bad file stall
it. Every batch job in opso_nb writes through :class:`RunStore`, so they all
resume, report failures and lay out results the same way.

Layout of an output folder
--------------------------
::

    out/                            the folder the user names (``output_path``)
      .lock                         one writer at a time (filelock; see "Writers")
      latest.json                   the run each job used last (what readers open by default)
      predict-3fa9c2.../            one run per job and settings fingerprint
        settings.json               job, fingerprint, the settings, value columns and their dtype
        parts/                      one table per input file, written atomically
        records/                    one small JSON per finished input file (the manifest journal)
        started/                    one small JSON per input file in progress (attempts)
        manifest.json               the records, compacted into one file when a run closes
        failures.csv                every failure of the run (opso_nb.failures schema), at close

``parts/`` holds nothing but the parts (temporary files are hidden, which
pyarrow skips), so it reads directly as one dataset::

    pd.read_parquet(run.parts_folder)            # or pyarrow.dataset / dask.dataframe.read_parquet

with columns ``file, start_time, end_time`` and the value columns (class
scores, species scores, embedding dimensions ...), the same as the in-memory
clip table once ``file, start_time, end_time`` are made the index.

Guarantees
----------
* **Settings**: a run is identified by a fingerprint of its settings (model
  weights hash, preprocessing, clip settings, package version ...). Opening
  the same folder with other settings starts a new run in its own sub-folder
  (and warns, naming what changed) or, with ``on_change="refuse"``, raises
  :class:`SettingsChanged`. Results are never mixed.
* **O(file) appends**: finishing a file writes its part and one small record;
  nothing else is rewritten. Records are compacted into ``manifest.json``
  only when a run is opened or closed.
* **Crash safety**: parts and records are written atomically (temporary file
  + rename) and a record is written only after its part, so a file without a
  record is simply redone. Temporary files left by a killed write are removed
  when the next run opens the folder.
* **Poisoned files**: :meth:`RunStore.begin` marks a file as started. A run
  killed while a file was in progress (out of memory, ``kill -9``) leaves
  the mark; the next run retries such a file once, on its own, before the
  others (:meth:`RunStore.suspects`); if the run dies again, the file is
  quarantined: reported in the failures table with stage ``"quarantine"``
  and skipped until it changes.
* **Writers**: a second process opening the same output folder while a run
  holds it is refused at once with :class:`StoreLocked`, naming the holder;
  pass ``lock_timeout`` (seconds) to wait for it instead. Because every file
  has its own record, writers that share one run on purpose (Dask workers
  under one coordinator, ``lock=False``) never lose each other's rows.
* **File names**: any name the operating system accepts is kept exactly:
  records are JSON with Python's surrogate escapes, so :meth:`RunStore.read`
  returns the very ``str`` that was written. Parquet and CSV need valid UTF-8,
  so there a name that is not shows its undecodable bytes as ``\\xNN``
  (:func:`utf8_name`). The same rule holds for every table opso_nb writes as
  text (detections CSV, review exports; :func:`utf8_names`). In memory,
  clip tables keep such names exactly (:func:`make_clip_index`,
  :func:`reset_clip_index`, :func:`as_clip_index`).
* **Permissions**: everything is created with the umask's mode, like any
  other new file.

Using it for a new job
----------------------
A job that handles one file at a time needs one function, ``compute(file) ->
(table, failures)``, and :func:`process_files` does the rest (skip finished
files, retry suspects first and alone, record failures, progress)::

    with RunStore.open(out, settings, job="embed", columns=dims, dtype="float32") as run:
        process_files(files, compute, run=run, progress=True)
        table, failures = run.read(files)

A job with its own loop (prediction streams clips of many files through one
network) calls the same steps itself: :meth:`RunStore.is_done`,
:meth:`RunStore.suspects`, :meth:`RunStore.begin` before reading a file,
then :meth:`RunStore.write` or :meth:`RunStore.fail`. A Dask batch runner
(:mod:`opso_nb.batch`) opens the run in its coordinator (holding the lock) and
lets each worker open it with ``lock=False`` to write its files' parts and
records; the coordinator hands each worker the attempt number of a file
(:meth:`RunStore.next_attempt`, passed to :meth:`RunStore.begin`), quarantines
a file that killed every worker that tried it (:meth:`RunStore.quarantine`)
and releases the marks of tasks it cancels (:meth:`RunStore.release`).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import warnings
from pathlib import Path

import filelock
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from opso_nb.audio import AudioLoadError
from opso_nb.failures import failure_record, failures_frame
from opso_nb.utils import CLIP_INDEX, atomic_path, atomic_write, remove_stale_temp_files

__all__ = [
    "RunStore",
    "StoreLocked",
    "SettingsChanged",
    "RunSettingsChanged",
    "settings_fingerprint",
    "utf8_name",
    "write_failures_csv",
    "empty_clip_table",
    "make_clip_index",
    "file_name_index",
    "as_clip_index",
    "reset_clip_index",
    "utf8_names",
    "file_signature",
    "remove_stale_temp_files",
    "process_files",
    "read_results",
    "error_stage",
    "STORE_VERSION",
]

STORE_VERSION = 1
LOCK_NAME = ".lock"
LATEST = "latest.json"
SETTINGS = "settings.json"
MANIFEST = "manifest.json"
FAILURES = "failures.csv"
FORMATS = ("parquet", "csv")
#: ``records[file]["status"]`` values. "done": a part (possibly with per-clip
#: failures); "failed": the whole file failed (tried again by the next run);
#: "quarantined": the run died on it twice (skipped until the file changes).
STATUSES = ("done", "failed", "quarantined")
#: Runs that may die while a file is in progress before it is quarantined
#: (the first run plus one retry).
MAX_ATTEMPTS = 2


class StoreLocked(RuntimeError):
    """Another run holds the output folder (one writer per folder)."""


class SettingsChanged(ValueError):
    """The settings differ from the folder's last run and ``on_change="refuse"`` was asked for."""


class RunSettingsChanged(UserWarning):
    """Warned when a folder's last run used other settings and a new run is started beside it."""


# --------------------------------------------------------------------------- helpers
def utf8_name(file) -> str:
    """``file`` as valid UTF-8 text: undecodable bytes of the name become ``\\xNN``.

    Names that are valid UTF-8 (nearly all) are returned unchanged. Used where
    text formats need UTF-8 (Parquet strings, CSV); the exact name is kept in
    the run's JSON records.
    """
    return os.fsencode(file).decode("utf-8", "backslashreplace")


def write_failures_csv(failures: pd.DataFrame, path):
    """Write a failures table as CSV (atomically), names and messages as valid UTF-8 (:func:`utf8_name`)."""
    text = {c: [utf8_name(v) for v in failures[c]] for c in ("file", "stage", "error") if c in failures}
    with atomic_write(path, "w", newline="") as handle:
        failures.assign(**text).to_csv(handle, index=False)


def file_name_index(files) -> pd.Index:
    """File names as a pandas Index that holds any name the operating system accepts.

    Names that are all valid UTF-8 (nearly always) give pandas' usual string
    dtype. Otherwise the Index keeps Python strings (object dtype): pandas >= 3
    strings (Arrow) cannot hold the surrogate escapes of a name that is not
    valid UTF-8 (``os.fsdecode(b"caf\\xe9.wav")``, common on FAT/exFAT cards),
    and most ways of building an Index, Series or column from such names
    (``pd.Index(names)``, ``Index.map``, ``reset_index``,
    ``MultiIndex.from_tuples``, a DataFrame from records) raise
    ``UnicodeEncodeError``. opso_nb's clip tables build their file names
    through this function (:func:`make_clip_index`, :func:`as_clip_index`,
    :func:`reset_clip_index`), so such a name is kept exactly.
    """
    files = list(files)
    if all(_is_utf8(f) for f in set(files)):
        return pd.Index(files)
    return pd.Index(files, dtype=object)


def make_clip_index(files, start_times, end_times) -> pd.MultiIndex:
    """The ``(file, start_time, end_time)`` index of a clip table, for any file names.

    The file level is :func:`file_name_index` (pandas' usual strings, or
    Python strings when a name is not valid UTF-8); times are floats.
    Selecting with ``xs`` or ``loc``, iterating, comparing, ``isin`` and joins
    work with either. A few pandas operations rebuild the names as pandas
    strings and refuse the others: use :func:`reset_clip_index` instead of
    ``reset_index``, :func:`as_clip_index` instead of
    ``MultiIndex.from_tuples``, and :func:`utf8_names` before writing CSV or
    Parquet.
    """
    return pd.MultiIndex.from_arrays(
        [file_name_index(files), pd.Index(np.asarray(start_times, dtype=float)),
         pd.Index(np.asarray(end_times, dtype=float))],
        names=CLIP_INDEX)


def as_clip_index(clips) -> pd.MultiIndex:
    """``clips`` as a clip index (see :func:`make_clip_index`), whatever its file names.

    Parameters
    ----------
    clips : MultiIndex, DataFrame or iterable of (file, start_time, end_time)
        A clip index, a clip table (its index is used) or clip tuples.
    """
    if isinstance(clips, (pd.DataFrame, pd.Series)):
        clips = clips.index
    if isinstance(clips, pd.MultiIndex):
        if clips.nlevels != 3:
            raise ValueError(f"a clip index has the levels {CLIP_INDEX}, got {list(clips.names)}")
        return make_clip_index(*(clips.get_level_values(i) for i in range(3)))
    rows = list(clips)
    if any(len(row) != 3 for row in rows):
        raise ValueError("clips must be (file, start_time, end_time) tuples")
    return make_clip_index([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def reset_clip_index(table: pd.DataFrame) -> pd.DataFrame:
    """``table.reset_index()`` for a clip table with any file names.

    Columns ``file, start_time, end_time`` (from the index), then the columns
    of ``table``; a new range index. The ``file`` column is built by
    :func:`file_name_index`, so a name that is not valid UTF-8 is kept
    exactly (object dtype), where ``reset_index`` raises ``UnicodeEncodeError``.
    """
    index = table.index
    if list(index.names) != CLIP_INDEX:
        raise ValueError(f"table must be indexed by {CLIP_INDEX}, got {list(index.names)}")
    out = table.reset_index(drop=True)
    for position, name in reversed(list(enumerate(CLIP_INDEX))):
        values = index.get_level_values(position)
        if name == "file":
            values = file_name_index(values)
        out.insert(0, name, pd.Series(values, index=out.index))
    return out


def utf8_names(table: pd.DataFrame, columns=("file",)) -> pd.DataFrame:
    """``table`` with the names in ``columns`` as valid UTF-8 text (:func:`utf8_name`), to write CSV or Parquet.

    The store's rule for text formats: undecodable bytes of a name become
    ``\\xNN``; valid names (and values that are not strings) are unchanged.
    Columns missing from ``table`` are skipped; ``table`` itself is not changed.
    """
    renamed = {c: [utf8_name(v) if isinstance(v, str) else v for v in table[c]]
               for c in columns if c in table.columns and not all(_is_utf8(v) for v in set(table[c]))}
    return table.assign(**renamed) if renamed else table


def _is_utf8(name) -> bool:
    """False only for a ``str`` that cannot be encoded as UTF-8 (surrogate escapes of a non-UTF-8 name)."""
    if not isinstance(name, str):
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def empty_clip_table(columns, dtype="float32", text_columns=()) -> pd.DataFrame:
    """A clip table with no rows: index ``(file, start_time, end_time)``, ``columns`` of ``dtype``, then text columns."""
    table = pd.DataFrame(np.zeros((0, len(columns)), dtype=dtype), index=make_clip_index([], [], []),
                         columns=list(columns))
    for c in text_columns:
        table[c] = pd.Series([], dtype=object)
    return table


def error_stage(error, default: str = "score") -> str:
    """``"load"`` if reading audio failed (an :class:`~opso_nb.audio.AudioLoadError` anywhere in the
    exception's chain of causes), else ``default``."""
    while error is not None:
        if isinstance(error, AudioLoadError):
            return "load"
        error = error.__cause__
    return default


def _canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def settings_fingerprint(settings: dict, job: str = "") -> str:
    """16 hex characters identifying ``job`` run with ``settings`` (a JSON-able dict; order does not matter)."""
    return hashlib.sha1(_canonical_json({"job": job, "settings": settings}).encode()).hexdigest()[:16]


def _file_id(file) -> str:
    """Stable id of an input file name (any bytes), used to name its part, record and start mark."""
    return hashlib.sha1(os.fsencode(file)).hexdigest()[:20]


def _part_name(file, file_id: str, fmt: str) -> str:
    stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in Path(file).stem)[:60]
    return f"{stem}-{file_id[:12]}.{fmt}"


def file_signature(file):
    """(size, mtime_ns) of an input file, or None when it cannot be read (never counts as unchanged)."""
    try:
        st = os.stat(file)
    except (OSError, ValueError):
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _write_json(path: Path, value):
    # ensure_ascii keeps lone surrogates (non-UTF-8 file names) as \udcxx escapes: exact round trip.
    # No fsync: a record torn by a machine crash reads as missing, and its file is simply redone.
    with atomic_write(path, "w", fsync=False, encoding="ascii") as handle:
        json.dump(value, handle, ensure_ascii=True, default=str)


def _read_json(path: Path):
    """Parsed JSON, or None when missing or unreadable (a record is written atomically, so that is rare)."""
    try:
        return json.loads(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None


def _diff_settings(old: dict, new: dict, prefix: str = "") -> list:
    """``["key: old -> new", ...]`` for the top-level (and nested dict) settings that differ."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _diff_settings(a, b, f"{prefix}{key}.")
        elif _canonical_json(a) != _canonical_json(b):
            short = [s if len(s) <= 60 else s[:57] + "..." for s in (_canonical_json(a), _canonical_json(b))]
            changes.append(f"{prefix}{key}: {short[0]} -> {short[1]}")
    return changes


def _arrow_schema(columns, dtype, text_columns=()) -> pa.Schema:
    value_type = pa.from_numpy_dtype(np.dtype(dtype))
    return pa.schema([("file", pa.string()), ("start_time", pa.float64()), ("end_time", pa.float64())]
                     + [(str(c), value_type) for c in columns] + [(str(c), pa.string()) for c in text_columns])


# --------------------------------------------------------------------------- the store
class RunStore:
    """One run of a per-file batch job in an output folder: parts, records, failures, resume.

    Open it with :meth:`open` (to write) or :meth:`existing` (to read); see
    the module documentation for the layout and the guarantees.

    Attributes
    ----------
    root : Path
        The output folder.
    folder : Path
        This run's sub-folder ``<job>-<fingerprint>``.
    parts_folder : Path
        ``folder / "parts"``: reads as one dataset.
    fingerprint : str
        Identifies the settings.
    settings : dict
        The settings the run was opened with.
    columns : list of str
        Value columns of every part.
    changes : list of str
        How the settings differ from the folder's previous run of this job
        (empty when they are the same or there was none).
    """

    def __init__(self, root, folder, meta, writable, lock=None):
        self.root = Path(root)
        self.folder = Path(folder)
        self.parts_folder = self.folder / "parts"
        self._records_folder = self.folder / "records"
        self._started_folder = self.folder / "started"
        self.job = meta["job"]
        self.fingerprint = meta["fingerprint"]
        self.settings = meta["settings"]
        self.columns = [str(c) for c in meta["columns"]]
        self.text_columns = [str(c) for c in meta.get("text_columns", [])]
        self.dtype = np.dtype(meta.get("dtype", "float32"))
        self.format = meta.get("format", "parquet")
        self.changes: list = []
        self._writable = writable
        self._lock = lock
        self._guard = threading.Lock()  # begin() may be called from a prefetch thread
        self._begun: dict = {}  # file -> (attempt number, input signature) for files this process started
        self._suspects: dict = {}
        self._own_ids: set = set()  # records written by this process (known without reading them back)
        # a helper of a coordinator (lock=False, e.g. a Dask worker) only writes: reading every record of
        # a large run in each helper would cost O(files) per helper, so it reads single records on demand
        self._helper = writable and lock is None
        self._records = {} if self._helper else self._load_records()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, root, settings: dict, job: str, columns, dtype="float32", format: str = "parquet",
             on_change: str = "new", lock: bool = True, lock_timeout: float = 0,
             max_attempts: int = MAX_ATTEMPTS, text_columns=()) -> "RunStore":
        """Open (or resume) the run of ``job`` with ``settings`` in the output folder ``root``.

        Parameters
        ----------
        root : str or Path
            Output folder (created if missing).
        settings : dict
            Everything that changes the results (JSON-able). Same settings:
            the same run is resumed; other settings: see ``on_change``.
        job : str
            Kind of job ("predict", "ribbit", "embed" ...); part of the identity.
        columns : list of str
            Value columns of the parts (after ``file, start_time, end_time``).
        dtype : numpy dtype
            Type of the value columns.
        format : {"parquet", "csv"}
            Format of the parts.
        on_change : {"new", "refuse"}
            When the folder's last run of ``job`` used other settings: start a
            new run beside it (with a :class:`RunSettingsChanged` warning naming
            what changed) or raise :class:`SettingsChanged`.
        lock : bool
            Hold the folder's lock while open (one writer per folder). Only
            helpers of a coordinator that holds it (Dask workers) pass False.
        lock_timeout : float
            Seconds to wait for another run to release the folder (0: refuse
            at once with :class:`StoreLocked`; negative: wait forever).
        max_attempts : int
            Runs that may die while a file is in progress before it is
            quarantined (2: one retry).
        text_columns : list of str
            Text columns of the parts, after the value columns (e.g. a class
            name or an error of localized events). Written as UTF-8 (like
            file names, with :func:`utf8_name`); read back as Python strings.

        Raises
        ------
        StoreLocked
            Another run writes to ``root``.
        SettingsChanged
            With ``on_change="refuse"``, naming what changed.
        """
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if on_change not in ("new", "refuse"):
            raise ValueError(f"on_change must be 'new' or 'refuse', got {on_change!r}")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        held = _acquire(root, lock_timeout) if lock else None
        try:
            fingerprint = settings_fingerprint(settings, job)
            folder = root / f"{job}-{fingerprint}"
            previous = cls._latest_folder(root, job)
            changes = []
            if previous is not None and previous != folder:
                old = _read_json(previous / SETTINGS) or {}
                changes = _diff_settings(old.get("settings", {}), json.loads(_canonical_json(settings)))
                where = f"{root}: the last {job} run ({previous.name}) used other settings ({'; '.join(changes)})"
                if on_change == "refuse":
                    raise SettingsChanged(f"{where}; use the same settings to resume it or another output folder")
                warnings.warn(f"{where}; starting a new run in {folder.name} (the earlier one is kept)",
                              RunSettingsChanged, stacklevel=3)
            meta = {"store_version": STORE_VERSION, "job": job, "fingerprint": fingerprint,
                    "settings": settings, "columns": [str(c) for c in columns], "dtype": np.dtype(dtype).name,
                    "format": format}
            if text_columns:
                meta["text_columns"] = [str(c) for c in text_columns]
            if lock:
                cls._prepare_folder(root, folder, meta)
            elif not (folder / SETTINGS).exists():
                raise FileNotFoundError(f"{folder}: no run to join; the coordinator opens it first (lock=True)")
            meta = _read_json(folder / SETTINGS)
            if meta.get("format", format) != format or meta.get("columns") != [str(c) for c in columns] or \
                    meta.get("text_columns", []) != [str(c) for c in text_columns]:
                raise ValueError(f"{folder}: existing run has format {meta.get('format')!r} and columns "
                                 f"{meta.get('columns')} + {meta.get('text_columns', [])}; asked for {format!r} "
                                 f"and {list(columns)} + {list(text_columns)}")
            store = cls(root, folder, meta, writable=True, lock=held)
            store.changes = changes
            if lock:
                store._compact(reload=False)  # the records were just read
                store._collect_suspects(int(max_attempts))
            return store
        except BaseException:
            if held is not None:
                held.release()
            raise

    @classmethod
    def _prepare_folder(cls, root: Path, folder: Path, meta: dict):
        for sub in ("parts", "records", "started"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for where in (root, folder, folder / "parts", folder / "records", folder / "started"):
            remove_stale_temp_files(where)
        if not (folder / SETTINGS).exists():
            _write_json(folder / SETTINGS, meta)
        latest = _read_json(root / LATEST) or {}
        if latest.get(meta["job"]) != folder.name:
            latest[meta["job"]] = folder.name
            _write_json(root / LATEST, latest)

    @staticmethod
    def _latest_folder(root: Path, job=None):
        """The run folder used last in ``root`` (for ``job``; any job when None), or None."""
        latest = _read_json(root / LATEST) or {}
        names = list(latest.values()) if job is None else [latest[job]] if job in latest else []
        candidates = [root / n for n in names if (root / n / SETTINGS).exists()]
        if not candidates:  # no pointer (e.g. removed): the most recently created run of the job
            candidates = [p.parent for p in root.glob(f"{job or '*'}-*/{SETTINGS}")]
        if not candidates:
            return None
        return max(candidates, key=lambda p: (p / SETTINGS).stat().st_mtime_ns)

    @classmethod
    def existing(cls, path, job=None) -> "RunStore":
        """Open a run to read it (no lock): ``path`` is a run folder, or an output folder (its latest run of ``job``).

        Raises
        ------
        FileNotFoundError
            No run in ``path``.
        """
        path = Path(path)
        if (path / SETTINGS).exists():
            folder = path
            root = path.parent
        else:
            folder = cls._latest_folder(path, job)
            root = path
            if folder is None:
                what = f"{job} run" if job else "run"
                raise FileNotFoundError(f"{path}: no opso_nb {what} in this folder (no {SETTINGS} found)")
        meta = _read_json(folder / SETTINGS)
        if not isinstance(meta, dict) or "fingerprint" not in meta:
            raise ValueError(f"{folder / SETTINGS}: not an opso_nb run description; use a new output folder")
        return cls(root, folder, meta, writable=False)

    # ------------------------------------------------------------------ context
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Release files started but not finished, compact the records, write ``failures.csv``, unlock.

        A run that ends without :meth:`close` (killed) keeps its start marks:
        the next run treats those files as suspects.
        """
        if not self._writable:
            return
        try:
            for file in list(self._begun):
                self.release(file)
            if self._lock is not None:
                self._compact()
                write_failures_csv(self._failures_of(self._records.values()), self.folder / FAILURES)
        finally:
            self._writable = False
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # ------------------------------------------------------------------ records
    def _record_path(self, file) -> Path:
        return self._records_folder / f"{_file_id(file)}.json"

    def _started_path(self, file) -> Path:
        return self._started_folder / f"{_file_id(file)}.json"

    def _load_records(self) -> dict:
        manifest = _read_json(self.folder / MANIFEST) or {}
        records = dict(manifest.get("files", {}))
        for path in sorted(self._records_folder.glob("[!.]*.json")):
            rec = _read_json(path)
            if isinstance(rec, dict) and "file" in rec:
                records[rec["file"]] = rec
        return records

    def _compact(self, reload: bool = True):
        """Fold ``records/*.json`` into ``manifest.json`` (atomically), then drop the folded records.

        ``reload`` reads the records this process did not write (helpers sharing the run may have).
        """
        folded = sorted(self._records_folder.glob("[!.]*.json"))
        if not folded:
            return
        for path in folded if reload else ():
            if path.stem not in self._own_ids:
                rec = _read_json(path)
                if isinstance(rec, dict) and "file" in rec:
                    self._records[rec["file"]] = rec
        _write_json(self.folder / MANIFEST, {"store_version": STORE_VERSION, "files": self._records})
        for path in folded:  # only after the manifest holds them
            path.unlink(missing_ok=True)

    def _collect_suspects(self, max_attempts: int):
        """Files a dead run left in progress: retried (suspects) or, after ``max_attempts``, quarantined."""
        for path in sorted(self._started_folder.glob("[!.]*.json")):
            mark = _read_json(path)
            if not isinstance(mark, dict) or "file" not in mark:
                path.unlink(missing_ok=True)
                continue
            file, attempts = mark["file"], int(mark.get("attempts", 1))
            if attempts >= max_attempts:
                reason = (f"the run stopped abruptly (killed, e.g. for using too much memory) {attempts} times "
                          "while this file was being processed; skipped until the file changes")
                self._put_record(file, "quarantined", None, 0,
                                 [failure_record(file, reason, stage="quarantine")],
                                 key=mark.get("key", ""), signature=mark.get("signature"), attempts=attempts)
                path.unlink(missing_ok=True)
            else:
                self._suspects[file] = attempts

    def records(self) -> dict:
        """``{file: record}`` of every finished, failed or quarantined file of this run.

        A helper (``lock=False``) reads them from disk at each call.
        """
        if not self._writable:
            self._records = self._load_records()
        elif self._helper:
            return {**self._load_records(), **self._records}
        return dict(self._records)

    # ------------------------------------------------------------------ queries
    def is_done(self, file, key: str | None = "") -> bool:
        """True if ``file`` was finished (or quarantined) by this run's settings and has not changed since.

        Parameters
        ----------
        file : str
            Input file.
        key : str or None
            Optional extra identity of the work asked for this file (e.g. a
            hash of the clip times of a clip table); a different key redoes it.
            None accepts any key (for a coordinator that does not know the
            key its helpers will compute, as for whole files, where the key
            follows from the file and the settings).

        Notes
        -----
        A helper (``lock=False``) knows the records it wrote and reads the
        record of any other file from disk, so it sees what other helpers of
        the same session finished (not files compacted by an earlier run,
        which its coordinator does not hand out). A coordinator also reads a
        record it does not know from disk: its helpers wrote it.
        """
        rec = self._records.get(str(file))
        if rec is None and self._writable:  # e.g. written since by a helper (a Dask worker) of this run
            rec = _read_json(self._record_path(str(file)))
            rec = rec if isinstance(rec, dict) and rec.get("file") == str(file) else None
        if rec is None or rec.get("status") not in ("done", "quarantined") or \
                (key is not None and rec.get("key", "") != key):
            return False
        if rec.get("signature") is None or rec["signature"] != file_signature(file):
            return False
        return rec.get("part") is None or (self.parts_folder / rec["part"]).exists()

    def started(self, file) -> dict | None:
        """The start mark of ``file`` (``attempts``, ``pid``, ``host``, ``started_ns`` ...) if it is in progress, else None.

        Read from disk, so a coordinator sees the marks its helpers wrote: a
        worker that died while its mark was newer than the run's start was
        working on that file.
        """
        mark = _read_json(self._started_path(str(file)))
        return mark if isinstance(mark, dict) and mark.get("file") == str(file) else None

    def suspects(self) -> list:
        """Files a killed run left in progress (to be retried once, on their own, before the others)."""
        return list(self._suspects)

    def summary(self) -> dict:
        """Counts for a run report: files done / failed / quarantined / in progress, rows, failures."""
        records = self.records()
        status = pd.Series([r.get("status") for r in records.values()], dtype=object)
        return {
            "folder": str(self.folder),
            "fingerprint": self.fingerprint,
            "files_done": int((status == "done").sum()),
            "files_failed": int((status == "failed").sum()),
            "files_quarantined": int((status == "quarantined").sum()),
            "files_in_progress": len(list(self._started_folder.glob("[!.]*.json"))),
            "rows": int(sum(r.get("n_rows", 0) for r in records.values())),
            "failures": int(sum(len(r.get("failures", [])) for r in records.values())),
        }

    # ------------------------------------------------------------------ writing
    def _check_writable(self):
        if not self._writable:
            raise RuntimeError(f"{self.folder}: this run is closed or opened read-only")

    def next_attempt(self, file) -> int:
        """The attempt number :meth:`begin` gives ``file``: 1 + the runs that died while it was in progress."""
        return self._suspects.get(str(file), 0) + 1

    def begin(self, file, key: str = "", attempt: int | None = None) -> int:
        """Mark ``file`` as in progress (before any of its audio is read); returns the attempt number (1, 2 ...).

        The mark stays if the process dies, which is how the next run finds
        files that may have killed it.

        Parameters
        ----------
        file : str
            Input file.
        key : str
            See :meth:`is_done`.
        attempt : int, optional
            The attempt number to record. A helper (``lock=False``) does not
            know the strikes of earlier runs: its coordinator passes
            :meth:`next_attempt`. Default: this store's own count.
        """
        self._check_writable()
        file = str(file)
        with self._guard:
            attempt = self.next_attempt(file) if attempt is None else int(attempt)
            signature = file_signature(file)
            self._begun[file] = (attempt, signature)
        _write_json(self._started_path(file), {"file": file, "key": key, "attempts": attempt,
                                               "signature": signature, "pid": os.getpid(),
                                               "host": socket.gethostname(), "started_ns": time.time_ns()})
        return attempt

    def release(self, file):
        """Forget that ``file`` was started without being finished (a clean stop, not a crash).

        For a file this process did not start, the coordinator of helpers
        (the store that holds the lock) releases the mark a helper left, e.g.
        for tasks cancelled when a distributed run is stopped.
        """
        file = str(file)
        with self._guard:
            begun = self._begun.pop(file, None)
        if begun is None and (self._lock is None or not self._started_path(file).exists()):
            return
        previous = self._suspects.get(file, 0)
        if previous:  # keep the strikes of earlier crashed runs
            mark = _read_json(self._started_path(file)) or {"file": file}
            _write_json(self._started_path(file), {**mark, "attempts": previous})
        else:
            self._started_path(file).unlink(missing_ok=True)

    def _put_record(self, file, status, part, n_rows, failures, key="", signature=None, attempts=1):
        rec = {
            "file": file, "status": status, "key": key, "part": part, "format": self.format, "n_rows": int(n_rows),
            "signature": signature,
            "failures": [[_nan_to_none(f["start_time"]), _nan_to_none(f["end_time"]), f["stage"], f["error"]]
                         for f in failures],
            "attempts": int(attempts), "finished_ns": time.time_ns(),
        }
        _write_json(self._record_path(file), rec)
        self._records[file] = rec
        self._own_ids.add(self._record_path(file).stem)

    def _finish(self, file, status, part, n_rows, failures, key):
        with self._guard:
            attempt, signature = self._begun.pop(file, (1, None))
        if signature is None:
            signature = file_signature(file)
        self._put_record(file, status, part, n_rows, failures, key, signature, attempt)
        self._started_path(file).unlink(missing_ok=True)
        self._suspects.pop(file, None)

    def write(self, file, table: pd.DataFrame | None, failures=(), key: str = ""):
        """Store ``file``'s results: its part (atomically), then its record; clears its start mark.

        Parameters
        ----------
        file : str
            Input file.
        table : DataFrame or None
            Rows indexed by ``(file, start_time, end_time)`` with this run's
            value columns. None or empty: no part (the file still counts as done).
        failures : iterable of dict
            Failure records (:func:`opso_nb.failures.failure_record`) of
            clips of this file that could not be computed.
        key : str
            See :meth:`is_done`.
        """
        self._check_writable()
        file = str(file)
        part = None
        n_rows = 0 if table is None else len(table)
        if n_rows:
            part = _part_name(file, _file_id(file), self.format)
            self._write_part(self.parts_folder / part, table)
        self._finish(file, "done", part, n_rows, _failure_dicts(failures), key)

    def fail(self, file, failures, key: str = ""):
        """Record that the whole of ``file`` failed (it is tried again by the next run); clears its start mark."""
        self._check_writable()
        self._finish(str(file), "failed", None, 0, _failure_dicts(failures), key)

    def quarantine(self, file, reason: str, key: str = "", attempts: int | None = None):
        """Record that ``file`` kills the processes that handle it: skipped until it changes; clears its start mark.

        :meth:`open` does this itself for files that were in progress each time
        a run died; a distributed coordinator calls it for a file whose task
        killed every worker that ran it. The failures table gets one row with
        stage ``"quarantine"`` and ``reason``.
        """
        self._check_writable()
        file = str(file)
        with self._guard:
            begun = self._begun.pop(file, None)
        attempts = attempts if attempts is not None else begun[0] if begun else self.next_attempt(file)
        self._put_record(file, "quarantined", None, 0, [failure_record(file, reason, stage="quarantine")],
                         key=key, signature=file_signature(file), attempts=attempts)
        self._started_path(file).unlink(missing_ok=True)
        self._suspects.pop(file, None)

    def reset(self):
        """Forget every result of this run (the next :meth:`is_done` is False for every file)."""
        self._check_writable()
        for folder in (self._records_folder, self.parts_folder, self._started_folder):
            for path in folder.iterdir():
                path.unlink(missing_ok=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)
        (self.folder / FAILURES).unlink(missing_ok=True)
        self._records, self._suspects = {}, {}

    def _write_part(self, path: Path, table: pd.DataFrame):
        index = table.index if list(table.index.names) == CLIP_INDEX else \
            make_clip_index(table["file"], table["start_time"], table["end_time"])
        missing = [c for c in self.columns + self.text_columns if c not in table.columns]
        if missing:
            raise ValueError(f"{path.name}: table lacks columns {missing}")
        # built column by column: reset_index() cannot hold names that are not valid UTF-8 (pandas >= 3)
        columns = {"file": [utf8_name(f) for f in index.get_level_values(0)],
                   "start_time": index.get_level_values(1).to_numpy(dtype=float),
                   "end_time": index.get_level_values(2).to_numpy(dtype=float),
                   **{c: table[c].to_numpy(dtype=self.dtype) for c in self.columns},
                   **{c: ["" if v is None else utf8_name(str(v)) for v in table[c].tolist()]
                      for c in self.text_columns}}
        with atomic_path(path) as tmp:
            if self.format == "parquet":
                schema = _arrow_schema(self.columns, self.dtype, self.text_columns)
                pq.write_table(pa.table(columns, schema=schema), tmp)
            else:
                pd.DataFrame(columns).to_csv(tmp, index=False)

    def _read_part(self, rec) -> pd.DataFrame:
        path = self.parts_folder / rec["part"]
        if rec.get("format", "parquet") == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={"file": str, **{c: str for c in self.text_columns}})
            for c in self.text_columns:  # an empty text is "", not NaN
                df[c] = df[c].fillna("")
        # the exact name from the record (the part holds its UTF-8 rendering)
        index = make_clip_index([rec["file"]] * len(df), df["start_time"], df["end_time"])
        table = pd.DataFrame({c: df[c].to_numpy(dtype=self.dtype) for c in self.columns}, index=index)
        for c in self.text_columns:  # Python strings (object), like the file names
            table[c] = pd.Series(df[c].astype(object).tolist(), index=index, dtype=object)
        return table

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _failures_of(records) -> pd.DataFrame:
        return failures_frame([(rec["file"], _none_to_nan(s), _none_to_nan(e), stage, error)
                               for rec in records for s, e, stage, error in rec.get("failures", [])])

    def read(self, files=None):
        """Everything stored: ``(table, failures)``.

        Parameters
        ----------
        files : list of str, optional
            Only these input files, in this order (default: every file, in the
            order they finished).

        Returns
        -------
        table : DataFrame
            Indexed by ``(file, start_time, end_time)``; this run's value columns.
        failures : DataFrame
            Columns of :data:`opso_nb.failures.FAILURE_COLUMNS`.
        """
        records = self.records()
        if files is None:
            chosen = sorted(records.values(), key=lambda r: r.get("finished_ns", 0))
        else:
            chosen = [records[str(f)] for f in dict.fromkeys(str(f) for f in files) if str(f) in records]
        frames = [self._read_part(rec) for rec in chosen if rec.get("part")]
        table = pd.concat(frames) if frames else empty_clip_table(self.columns, self.dtype, self.text_columns)
        return table, self._failures_of(chosen)


def read_results(path, job: str | None = "predict", files=None):
    """Open a clip table wherever a run left it: ``(table, failures)``.

    Parameters
    ----------
    path : str or Path
        An output folder (its latest run of ``job``, else its latest run of
        any job), one run's folder, its ``parts/`` folder, a folder of Parquet
        files with ``file, start_time, end_time`` columns (e.g. written by
        ``dask.dataframe.to_parquet``), or one ``.parquet`` / ``.csv`` table.
    job : str or None
        Preferred job of an output folder holding several ("predict").
    files : list of str, optional
        Only these input files, in this order (run folders only).

    Returns
    -------
    table : DataFrame
        Indexed by ``(file, start_time, end_time)``.
    failures : DataFrame
        The run's failures table (empty for plain tables).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        ``path`` holds no clip table.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if path.name == "parts" and (path.parent / SETTINGS).exists():
            path = path.parent
        if (path / SETTINGS).exists() or any(path.glob(f"*/{SETTINGS}")):
            try:
                run = RunStore.existing(path, job=job)
            except FileNotFoundError:
                run = RunStore.existing(path)
            return run.read(files)
        table = pd.read_parquet(path)
    elif path.suffix.lower() == ".csv":
        # raw name bytes that are not UTF-8 (written by another tool) read back as the exact names
        table = pd.read_csv(path, encoding_errors="surrogateescape", dtype={"file": object})
        if "file" in table.columns:  # pandas' usual strings unless a name cannot be one
            table["file"] = pd.Series(file_name_index(table["file"]), index=table.index)
    else:
        table = pd.read_parquet(path)
    if list(table.index.names) != CLIP_INDEX:
        missing = [c for c in CLIP_INDEX if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: not a score table (no column(s) {missing}; expected file, start_time, "
                             "end_time and one column per class)")
        table = table.set_index(CLIP_INDEX)
    return table, failures_frame()


def _acquire(root: Path, timeout: float) -> filelock.BaseFileLock:
    lock = filelock.FileLock(root / LOCK_NAME, timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        owner = _read_json(root / (LOCK_NAME + ".owner")) or {}
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["since"])) if "since" in owner else "?"
        raise StoreLocked(
            f"{root}: another run is writing to this output folder (process {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')}, since {since}); wait for it to finish (results are kept and a new run "
            "resumes from them) or choose another output folder"
        ) from None
    _write_json(root / (LOCK_NAME + ".owner"), {"pid": os.getpid(), "host": socket.gethostname(),
                                                "since": time.time()})
    return lock


def _failure_dicts(failures) -> list:
    failures = list(failures)
    return failures_frame(failures).to_dict("records") if failures else []  # most files have none


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def _none_to_nan(value):
    return np.nan if value is None else float(value)



# --------------------------------------------------------------------------- the generic per-file loop
def process_files(files, compute, run: RunStore | None = None, progress: bool = False, desc: str = "files",
                  progress_callback=None, raise_errors: bool = False):
    """Apply ``compute`` to each file; the batch loop of any job that handles one file at a time.

    Parameters
    ----------
    files : list of str
        Input files.
    compute : callable
        ``compute(file) -> (table, failures)``: a clip table of the run's
        value columns (or None) and a list of failure records for parts of
        the file. An exception means the whole file failed; it is recorded
        (stage ``"load"`` for audio that cannot be read, else ``"score"``)
        and the batch goes on.
    run : RunStore, optional
        With a run: finished files are skipped, files a killed run left in
        progress are retried first, and each file is recorded as it finishes.
    progress : bool
        Show a ``tqdm.auto`` bar (files).
    desc : str
        Label of the bar.
    progress_callback : callable, optional
        Called as ``progress_callback(n_done, n_todo, file)`` after each file.
    raise_errors : bool
        Let ``compute``'s exceptions propagate instead of recording them.

    Returns
    -------
    tables : dict
        ``{file: table}`` for the files computed in this call.
    failures : list of dict
        Their failure records.
    """
    files = [str(f) for f in dict.fromkeys(files)]
    if run is not None:
        suspects = set(run.suspects())
        todo = [f for f in files if f in suspects and not run.is_done(f)]
        todo += [f for f in files if f not in suspects and not run.is_done(f)]
    else:
        todo = files
    bar = tqdm(total=len(todo), desc=desc, unit="file") if progress else None
    tables, failures = {}, []
    try:
        for i, file in enumerate(todo):
            if run is not None:
                run.begin(file)
            try:
                table, file_failures = compute(file)
            except Exception as err:  # one bad file never ends the batch
                if raise_errors:
                    raise
                file_failures = [failure_record(file, err, stage=error_stage(err))]
                if run is not None:
                    run.fail(file, file_failures)
            else:
                tables[file] = table
                if run is not None:
                    run.write(file, table, file_failures)
            failures.extend(file_failures)
            if bar is not None:
                bar.update(1)
            if progress_callback is not None:
                progress_callback(i + 1, len(todo), file)
    finally:
        if bar is not None:
            bar.close()
    return tables, failures
