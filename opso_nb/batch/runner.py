"""Run a per-file job over many files on Dask, into one resumable run store.

The coordinator (the process that calls :func:`run_batch`) opens the run
(holding the output folder's lock), decides which files are left, and hands
them to Dask workers in small tasks. Each task computes its files and writes
each file's part and record itself (the run opened with ``lock=False``), so
results never travel through the scheduler: a task returns only a few numbers
per file. Whatever happens to a worker, each file ends with exactly one
record: done (its part), failed (with the reason; tried again by the next
run) or quarantined (it killed every worker that tried it).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from opso_nb.batch.jobs import BatchJob, JobSetupError
from opso_nb.batch.results import BatchResult, format_summary
from opso_nb.failures import failure_record
from opso_nb.files import list_audio_files
from opso_nb.store import SETTINGS, RunStore, error_stage

__all__ = ["run_batch", "local_client", "input_files", "BatchInterrupted", "DEFAULT_GROUP_MEGABYTES"]

#: Short files are handed out in groups of about this many megabytes (one task each), so the
#: scheduler's cost per task (about a millisecond) stays small next to the work of the task.
DEFAULT_GROUP_MEGABYTES = 32.0
#: At most this many files per task.
DEFAULT_MAX_FILES_PER_TASK = 100
#: Tasks kept in flight per worker thread (at least MIN_TASKS_IN_FLIGHT): enough that tiny tasks are not
#: held up by the round trip to the coordinator, few enough that a million-file run never puts a million
#: tasks on the scheduler.
TASKS_PER_THREAD = 8
MIN_TASKS_IN_FLIGHT = 64
#: A file whose task was on a dying worker this many times without ever having been started there
#: (queued behind the file that killed it) is quarantined all the same: bounded retries.
MAX_INNOCENT_KILLS = 3
#: A file that was running on workers that died is quarantined after this many of its tasks were killed.
MAX_RUNNING_KILLS = 2


class BatchInterrupted(RuntimeError):
    """Raised when a ``progress_callback`` returns False: the run stopped early.

    Finished files are in the run folder; calling :func:`run_batch` again resumes.
    """


def _distributed():
    try:  # Dask is optional (the dask extra)
        import distributed
    except ImportError as err:
        raise ImportError("running batches needs Dask: pip install 'opso_nb[dask]'") from err
    return distributed


# --------------------------------------------------------------------------- inputs
def input_files(files, recursive: bool = True) -> list:
    """The audio files a batch runs over: a folder's tree, one file, or a list of files and folders.

    Folders are searched with :func:`opso_nb.files.list_audio_files` (sorted;
    sub-folders too when ``recursive``); listed files are kept as given, in
    order, even when they are not audio (they are then reported as failures).
    Each file appears once.

    Raises
    ------
    FileNotFoundError
        ``files`` is a single path that does not exist.
    """
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    out = []
    for item in files:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            out += list_audio_files(item, recursive=recursive)
        else:
            out.append(str(item))
    if len(files) == 1 and isinstance(files[0], (str, os.PathLike)) and not Path(files[0]).exists():
        raise FileNotFoundError(f"{files[0]}: no such file or folder")
    return list(dict.fromkeys(out))


def _group(files, group_bytes: float, max_files: int) -> list:
    """Consecutive files in groups of at most ``group_bytes`` (a larger file alone) and ``max_files``."""
    groups, current, size = [], [], 0
    for file in files:
        try:
            n = os.stat(file).st_size
        except OSError:
            n = 0
        if current and (size + n > group_bytes or len(current) >= max_files):
            groups.append(current)
            current, size = [], 0
        current.append(file)
        size += n
    if current:
        groups.append(current)
    return groups


# --------------------------------------------------------------------------- where it runs
def local_client(n_workers: int | None = None, threads_per_worker: int = 1, memory_limit="auto",
                 allowed_failures: int | None = None, dashboard_address: str = ":0", profile: bool = False,
                 **kwargs):
    """A ``distributed.Client`` on a new ``LocalCluster`` sized to this machine: one process per core.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: the cores this process may use).
    threads_per_worker : int
        Threads per worker (1: one file at a time per process; torch and
        numpy then use one core each, which scales best).
    memory_limit : str or int
        Per worker ("auto": the machine's memory shared evenly). A worker
        above it is restarted by its nanny, and its task retried elsewhere.
    allowed_failures : int, optional
        Times a task may be running on a worker that dies before it is given
        up (Dask's ``distributed.scheduler.allowed-failures``, default 3).
    dashboard_address : str
        Where the Dask dashboard listens (":0", the default: any free port, so
        several clusters on one machine never collide; ":8787": Dask's usual port).
    profile : bool
        Run Dask's sampling profiler in the workers (the dashboard's Profile
        page). Off by default: it samples the working thread's stack every
        10 ms while holding the interpreter lock, which made CNN prediction
        up to twice as slow on a busy machine.

    Notes
    -----
    Workers also run with glibc's default memory management: Dask otherwise
    sets ``MALLOC_TRIM_THRESHOLD_=65536`` in them, which made CNN prediction
    about 1.4 times slower (large arrays are then mapped and zeroed afresh
    for every clip). Other keyword arguments go to ``LocalCluster``.

    Returns
    -------
    distributed.Client
        ``client.close()`` also shuts the cluster down.
    """
    distributed = _distributed()
    import dask

    if n_workers is None:
        n_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # saturation 1.0: a worker holds only the tasks it runs, so a worker's death counts against the task that
    # killed it and not also against one queued behind it
    config = {"distributed.scheduler.worker-saturation": 1.0, "distributed.worker.profile.enabled": bool(profile),
              # glibc's own malloc tuning: Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536, which also fixes the
              # mmap threshold, so each clip's arrays are mapped and zeroed afresh (~1.4x slower prediction)
              "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    if allowed_failures is not None:
        config["distributed.scheduler.allowed-failures"] = int(allowed_failures)
    options = dict(n_workers=int(n_workers), threads_per_worker=int(threads_per_worker), processes=True,
                   memory_limit=memory_limit, dashboard_address=dashboard_address,
                   silence_logs=logging.CRITICAL)  # worker deaths are reported by run_batch itself
    options.update(kwargs)
    with dask.config.set(config):
        return distributed.Client(**options)  # a client that makes its LocalCluster also closes it


class _Connection:
    """The client a run uses, and whether the run made it (then it closes it, and its cluster)."""

    def __init__(self, scheduler, n_workers, allowed_failures):
        distributed = _distributed()
        self.owned = True
        if scheduler is None:
            self.client = local_client(n_workers=n_workers, allowed_failures=allowed_failures)
        elif isinstance(scheduler, distributed.Client):
            self.client, self.owned = scheduler, False
        elif isinstance(scheduler, str):
            self.client = distributed.Client(scheduler)
        elif hasattr(scheduler, "scheduler_address"):  # a cluster object: LocalCluster, SLURMCluster ...
            self.client = distributed.Client(scheduler)
        else:
            raise TypeError(f"scheduler must be None, an address, a distributed.Client or a cluster, got "
                            f"{type(scheduler).__name__}")

    def close(self):
        if self.owned:
            self.client.close()


# --------------------------------------------------------------------------- on the workers
_HELPERS: dict = {}
_HELPERS_LOCK = threading.Lock()


def _helper_store(folder: str, session: str) -> RunStore:
    """This worker's writer for the run (``lock=False``), opened once per session."""
    with _HELPERS_LOCK:
        store = _HELPERS.get((folder, session))
        if store is None:
            try:
                meta = json.loads((Path(folder) / SETTINGS).read_text(encoding="ascii"))
            except (OSError, ValueError) as err:
                raise JobSetupError(f"{folder}: this worker cannot read the run's {SETTINGS} ({err}); the output "
                                    "folder must be on storage every worker sees, at the same path") from None
            store = RunStore.open(Path(folder).parent, meta["settings"], job=meta["job"], columns=meta["columns"],
                                  dtype=meta.get("dtype", "float32"), format=meta.get("format", "parquet"),
                                  lock=False)
            _HELPERS.clear()  # a worker serves one run at a time; forget earlier sessions
            _HELPERS[(folder, session)] = store
        return store


def _failure_list(failures) -> list:
    """Failure records as a list of dicts (jobs may return a failures DataFrame, as the serial calls do)."""
    if failures is None:
        return []
    if hasattr(failures, "to_dict"):
        return failures.to_dict("records")
    return list(failures)


def _whole_file_failed(table, failures) -> bool:
    """No rows and a failure of the whole file (NaN times): recorded as failed, so the next run tries again."""
    return (table is None or len(table) == 0) and any(np.isnan(f.get("start_time", np.nan)) for f in failures)


def _process_file(job: BatchJob, run: RunStore, file: str, attempt) -> dict:
    started = time.perf_counter()
    status = {"file": file, "rows": 0, "failures": 0, "error": "", "audio_seconds": 0.0,
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    if run.is_done(file, key=None):  # finished by an earlier try of this task (its worker died after)
        return {**status, "status": "skipped", "seconds": 0.0}
    run.begin(file, attempt=attempt)
    try:
        table, failures = job.compute(file)
        failures = _failure_list(failures)
    except JobSetupError:
        run.release(file)
        raise
    except Exception as err:  # a bad file never ends the batch: it is recorded with its reason
        table, failures = None, [failure_record(file, err, stage=error_stage(err))]
    if _whole_file_failed(table, failures):
        run.fail(file, failures)
        outcome = "failed"
    else:
        key = job.record_key(file, table) if table is not None else ""
        run.write(file, table, failures, key=key)
        outcome = "done"
        status.update(rows=0 if table is None else len(table), audio_seconds=job.audio_seconds(file))
    status.update(status=outcome, failures=len(failures), error=failures[0]["error"] if failures else "",
                  seconds=time.perf_counter() - started)
    return status


def _run_task(job: BatchJob, files: list, folder: str, session: str, attempts: dict) -> list:
    """One Dask task: process ``files`` in order; returns one small status dict per file."""
    job.loaded  # noqa: B018  (load the model once per worker; JobSetupError stops the run)
    run = _helper_store(folder, session)
    return [_process_file(job, run, file, attempts.get(file)) for file in files]


# --------------------------------------------------------------------------- the coordinator
class _Coordinator:
    def __init__(self, client, job, run, tasks, attempts, total_files, progress, progress_callback, retries):
        self.client = client
        self.job = job
        self.run = run
        self.pending = deque(tasks)  # lists of files; suspects first, alone
        self.attempts = attempts
        self.total = total_files
        self.progress_callback = progress_callback
        self.retries = retries
        self.session = uuid.uuid4().hex
        self.started_ns = time.time_ns()
        self.kills: dict = {}  # file -> times its task was given up because its workers died
        self.in_flight: dict = {}
        self.counts = {"done": 0, "failed": 0, "quarantined": 0, "clip_failures": 0, "rows": 0}
        self.audio_seconds = 0.0
        self.finished = 0
        self.n_tasks = 0
        self.bar = tqdm(total=total_files, desc=run.job, unit="file") if progress else None
        self._threads = (0.0, 0)  # (time read, total threads)

    def threads(self) -> int:
        when, n = self._threads
        if time.monotonic() - when > 2.0:
            n = sum(self.client.nthreads().values())
            self._threads = (time.monotonic(), n)
        return n

    def submit(self, files):
        future = self.client.submit(_run_task, self.job, files, str(self.run.folder), self.session,
                                    {f: self.attempts[f] for f in files if f in self.attempts},
                                    key=f"{self.run.job}-{self.session[:8]}-{self.n_tasks}", pure=False,
                                    retries=self.retries)
        self.n_tasks += 1
        self.in_flight[future.key] = (future, files)
        return future

    def top_up(self, completed):
        window = max(MIN_TASKS_IN_FLIGHT, TASKS_PER_THREAD * self.threads())
        while self.pending and len(self.in_flight) < window:
            completed.add(self.submit(self.pending.popleft()))

    def file_finished(self, file) -> bool:
        self.finished += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failed=self.counts["failed"] + self.counts["quarantined"], refresh=False)
        if self.progress_callback is not None:
            return self.progress_callback(self.finished, self.total, file) is not False
        return True

    def handle(self, future, files) -> bool:
        """Account for a finished task; False when the user asked to stop."""
        from distributed.scheduler import KilledWorker

        keep_going = True
        if future.status == "finished":
            for status in future.result():
                kind = "done" if status["status"] == "skipped" else status["status"]
                self.counts[kind] += 1
                self.counts["rows"] += status["rows"]
                self.counts["clip_failures"] += status["failures"] if kind == "done" else 0
                self.audio_seconds += status["audio_seconds"]
                keep_going = self.file_finished(status["file"]) and keep_going
            return keep_going
        if future.status == "cancelled":  # by the scheduler (restarted) or another client: not a file's fault
            raise RuntimeError(f"the Dask scheduler cancelled task {future.key}; run again to resume")
        error = future.exception()
        if isinstance(error, JobSetupError):
            raise error
        if isinstance(error, KilledWorker):
            if len(files) > 1:  # which file killed them? each alone, before the others
                self.pending.extendleft([f] for f in reversed(files))
                return True
            file = files[0]
            self.kills[file] = self.kills.get(file, 0) + 1
            if self.run.is_done(file, key=None):
                self.counts["done"] += 1  # written before its worker died (the result, not the work, was lost)
                return self.file_finished(file)
            was_running = self._was_running_on(file, getattr(error, "last_worker", None))
            # A file running when its worker died may have shared the process with the one that killed it
            # (workers with several threads, a busy machine): one more task of its own before quarantine.
            if self.kills[file] < (MAX_RUNNING_KILLS if was_running else MAX_INNOCENT_KILLS):
                self.pending.appendleft([file])
                return True
            self.run.quarantine(file, "every Dask worker that processed this file died (killed, e.g. for using "
                                      "too much memory); skipped until the file changes")
            self.counts["quarantined"] += 1
            return self.file_finished(file)
        # not a file's fault (those are recorded by the task): e.g. the run folder could not be written
        for file in files:
            if not self.run.is_done(file, key=None):
                self.run.fail(file, [failure_record(file, error, stage="write")])
                self.counts["failed"] += 1
            keep_going = self.file_finished(file) and keep_going
        return keep_going

    def _was_running_on(self, file, worker) -> bool:
        """True if ``file`` was being processed by ``worker`` (the last one that died with its task).

        Dask counts a death against every task assigned to the worker, queued ones too; the file's start
        mark (written by the process that began it, in this run) tells whether it was really running there.
        A start mark left by another process is not this death's doing.
        """
        mark = self.run.started(file)
        if mark is None or int(mark.get("started_ns", 0)) < self.started_ns:
            return False
        pid = getattr(worker, "pid", None)
        return not pid or int(mark.get("pid", -1)) == int(pid)  # no pid known: assume it was running

    def execute(self):
        distributed = _distributed()
        completed = distributed.as_completed()
        self.top_up(completed)
        for future in completed:
            _, files = self.in_flight.pop(future.key)
            if not self.handle(future, files):
                raise BatchInterrupted(f"stopped after {self.finished} of {self.total} files; finished files are in "
                                       f"{self.run.folder}, run again to resume")
            self.top_up(completed)

    def abandon(self):
        """Cancel the tasks still queued or running (a running task finishes on its worker, unseen)."""
        futures = [future for future, _ in self.in_flight.values()]
        if futures:
            self.client.cancel(futures)

    def release_unfinished(self):
        for _, files in self.in_flight.values():
            for file in files:
                self.run.release(file)
        self.in_flight.clear()

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()


def run_batch(job: BatchJob, files, output_path, scheduler=None, n_workers: int | None = None,
              recursive: bool = True, resume: bool = True, on_change: str = "new", progress: bool = True,
              progress_callback=None, group_megabytes: float = DEFAULT_GROUP_MEGABYTES,
              max_files_per_task: int = DEFAULT_MAX_FILES_PER_TASK, retries: int = 1,
              allowed_failures: int | None = None, verbose: bool = True) -> BatchResult:
    """Run ``job`` over ``files`` on Dask, into a resumable run folder; the same folder a serial call writes.

    Parameters
    ----------
    job : BatchJob
        What to compute per file (:mod:`opso_nb.batch.jobs`, :mod:`opso_nb.batch.ml_jobs`).
    files : path, or list of paths
        A folder (searched recursively by default for audio files), one file,
        or a list of files and folders (see :func:`input_files`).
    output_path : str or Path
        Output folder of the run (:class:`opso_nb.store.RunStore`): one
        sub-folder per job and settings, with one part per input file in
        ``parts/`` (Parquet by default). Every worker must see it at the same
        path (shared storage on a cluster), and the audio files too: workers
        read them themselves, nothing goes through the scheduler.
    scheduler : None, str, distributed.Client or cluster
        Where to run: None starts a ``LocalCluster`` sized to this machine
        (:func:`local_client`, closed at the end); an address
        (``"tcp://10.0.0.5:8786"``) connects to a running scheduler; a
        ``Client`` you made (kept open), or a cluster object such as
        ``dask_jobqueue.SLURMCluster``.
    n_workers : int, optional
        Workers of the LocalCluster started when ``scheduler`` is None.
    recursive : bool
        Search sub-folders of folders in ``files``.
    resume : bool
        Skip files this run finished before and that have not changed since
        (False: compute every file again).
    on_change : {"new", "refuse"}
        When the folder's last run of this job used other settings: start a
        new run beside it (with a warning) or raise
        :class:`opso_nb.store.SettingsChanged`.
    progress : bool
        Show a progress bar (files; ``tqdm.auto``: a widget in notebooks).
    progress_callback : callable, optional
        ``progress_callback(n_finished, n_files, file)`` after each file;
        return False to stop (:class:`BatchInterrupted`; finished files are kept).
    group_megabytes : float
        Files smaller than this are handed out in groups of about this size,
        one task each, so that the scheduler's cost per task (about a
        millisecond) stays small next to the work (0: one file per task).
        Groups are kept small enough that every worker gets several.
    max_files_per_task : int
        At most this many files per task.
    retries : int
        Times a task that raised (not a file's error: those are recorded; e.g.
        the output folder briefly unreachable) is tried again.
    allowed_failures : int, optional
        For the LocalCluster started here: times a task may be on a worker
        that dies before it is given up (Dask's default 3). A group whose
        workers died is split into its files, each tried alone; a file that
        still kills every worker it meets is quarantined (failures table,
        stage ``"quarantine"``) and the run goes on.
    verbose : bool
        Print the dashboard link and a summary at the end.

    Returns
    -------
    BatchResult
        ``.table`` and ``.failures`` (read on first use), ``.summary`` (files
        done, skipped, failed, quarantined; audio hours; audio hours per
        second), ``.parts_folder`` and ``.to_dask()``.

    Raises
    ------
    BatchInterrupted
        ``progress_callback`` returned False.
    opso_nb.store.StoreLocked
        Another run writes to ``output_path``.
    JobSetupError
        The job could not be set up on a worker (model file missing there ...).
    """
    started = time.perf_counter()
    files = input_files(files, recursive=recursive)
    job.prepare()
    description = job.describe()
    group_bytes = float(group_megabytes) * 1e6
    connection = None
    coordinator = None
    with RunStore.open(output_path, description.settings, job=description.job, columns=description.columns,
                       dtype=description.dtype, format=description.format, on_change=on_change) as run:
        if not resume:
            run.reset()
        done_before = [f for f in files if run.is_done(f, key=None)]
        skipped = set(done_before)
        suspects = [f for f in run.suspects() if f in set(files) and f not in skipped]
        others = [f for f in files if f not in skipped and f not in set(suspects)]
        attempts = {f: run.next_attempt(f) for f in suspects}
        try:
            if suspects or others:
                connection = _Connection(scheduler, n_workers, allowed_failures)
                client = connection.client
                if verbose and connection.owned and getattr(client, "dashboard_link", None):
                    print(f"Dask dashboard: {client.dashboard_link}")
                threads = max(1, sum(client.nthreads().values()))
                per_task = max(1, min(int(max_files_per_task), -(-len(others) // (4 * threads))))
                tasks = [[f] for f in suspects]
                tasks += _group(others, group_bytes, per_task) if group_bytes > 0 else [[f] for f in others]
                coordinator = _Coordinator(client, job, run, tasks, attempts, len(suspects) + len(others),
                                           progress, progress_callback, retries)
                coordinator.execute()
        except BaseException:
            if coordinator is not None:
                coordinator.abandon()
                if connection is not None and connection.owned:
                    connection.close()  # workers stop before their marks are released
                    connection = None
                coordinator.release_unfinished()
            raise
        finally:
            if coordinator is not None:
                coordinator.close_bar()
            if connection is not None:
                connection.close()
        folder = run.folder
    counts = coordinator.counts if coordinator is not None else {}
    wall = time.perf_counter() - started
    audio_hours = (coordinator.audio_seconds if coordinator is not None else 0.0) / 3600
    summary = {
        "job": description.job, "folder": str(folder), "files": len(files),
        "done": counts.get("done", 0), "skipped": len(done_before), "failed": counts.get("failed", 0),
        "quarantined": counts.get("quarantined", 0), "clip_failures": counts.get("clip_failures", 0),
        "rows": counts.get("rows", 0), "audio_hours": audio_hours, "seconds": wall,
        "audio_hours_per_second": audio_hours / wall if wall > 0 else 0.0,
    }
    result = BatchResult(folder, files, summary)
    if verbose:
        print(format_summary(summary))
    return result
