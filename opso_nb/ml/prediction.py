"""Score audio with a trained model: clips read on demand, batched, streamed to a resumable store.

:func:`predict` is what :meth:`opso_nb.ml.cnn.CNN.predict` runs. It works for a
handful of short clips and for folders of 10-hour recordings alike:

* clips are read on demand (a 10-hour file is never loaded whole), a run of
  consecutive clips of one file at a time: with the default spectrogram
  preprocessor one read, one short-time transform and one batched tensor
  conversion per run (:mod:`opso_nb.ml.clip_runs`, the same values as clip
  by clip), prepared in a background thread (or ``num_workers`` processes)
  while the network scores the previous run;
* with ``output_path`` (a folder) each input file's results are written to a
  :class:`opso_nb.store.RunStore` as soon as the file is done: one part per
  file plus a small record. Running again with the same folder and settings
  skips unchanged finished files, so a run killed after 20 hours keeps 20
  hours; other settings start a new run beside the old one; a file that was
  being scored when a run died is retried once on its own, then quarantined;
* what could not be scored is reported in the :mod:`opso_nb.failures` table
  (stage ``"load"``, ``"preprocess"`` or ``"score"``, the last for clips whose
  outputs came out NaN or infinite) and the other files are scored.

The loop is not tied to class scores: :class:`NetworkOutput` is the hook for
"what the network returns" for each batch. :class:`ClassScores` (the default)
gives one score per class; an embedding (a layer's activations) or a model
that is not a torch module is another subclass, and reuses this loop, its
workers, its failure handling and its store unchanged.

The model needs ``.preprocessor`` (``forward(sample, bypass_augmentations=True)``
returning a sample whose ``.data`` is a tensor, e.g. ``[C, H, W]``) and
``.sample_duration`` (s); :class:`ClassScores` also uses ``.network``,
``.classes`` and optionally ``.device``, ``.use_amp`` and ``.channels_last``.
"""
from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import param
import torch
from tqdm.auto import tqdm

from opso_nb import __version__
from opso_nb.audio import AudioLoadError, audio_info
from opso_nb.failures import failure_record, failures_frame, summarize_failures
from opso_nb.files import list_audio_files
from opso_nb.ml.clip_runs import ClipRunPipeline
from opso_nb.ml.utils import (
    ACTIVATION_LAYERS,
    apply_activation_layer,
    autocast_dtype,
    loader_worker_init,
    network_forward,
    prepare_network,
)
from opso_nb.sample import AudioSample
from opso_nb.store import RunStore, empty_clip_table, error_stage, make_clip_index, write_failures_csv
from opso_nb.utils import CLIP_INDEX, generate_clip_times_df

__all__ = [
    "predict",
    "apply_activation",
    "load_prediction_output",
    "PredictionSettings",
    "PredictionInterrupted",
    "NetworkOutput",
    "ClassScores",
    "ACTIVATION_LAYERS",
]

#: Clips a worker reads and preprocesses as one unit (one file read and one transform
#: per unit when the preprocessor has a batched form). Large enough to amortise a seek
#: and a DataLoader round trip, small enough that progress and memory stay fine-grained.
DEFAULT_CHUNK_CLIPS = 32
FINAL_CLIPS = (None, "remainder", "full", "extend")
NON_FINITE = "non-finite output (NaN or inf): the clip's audio holds NaN/inf samples or the network overflowed"


class PredictionInterrupted(RuntimeError):
    """Raised when a ``progress_callback`` returns False: the run stopped early.

    Files finished so far are in ``output_path`` (if given); running again resumes.
    """


def apply_activation(logits, activation_layer=None):
    """Apply an activation to raw model outputs ``[n_clips, n_classes]``.

    Same as :func:`opso_nb.ml.utils.apply_activation_layer` (used in training too,
    so validation and prediction scores agree): None keeps raw logits;
    "sigmoid" maps each score to [0, 1]; "softmax" makes each row sum to 1;
    "softmax_and_logit" applies softmax then the logit transform (finite reals).
    """
    return apply_activation_layer(logits, activation_layer)


# --------------------------------------------------------------------------- what the network returns
class NetworkOutput:
    """What the inference loop computes from each batch of preprocessed clips: the hook behind :func:`predict`.

    :func:`predict` reads clips, stacks them into batches, calls this object
    on each batch inside :meth:`running`, checks that every value is finite
    and stores the rows. Subclass it to get something else from the same loop
    and store: e.g. embeddings (activations of the penultimate layer, one
    column per dimension) or the outputs of a pre-trained model that is not
    a torch module. Pass the instance as ``predict(..., network_output=...)``.

    Attributes a subclass sets
    --------------------------
    columns : list of str
        Name of each value returned per clip (class names, ``"dim_0"`` ...).
    dtype : numpy dtype
        Type of the values (default float32).
    job : str
        Name of the job in a stored run's folder name ("predict", "embed" ...).
    """

    columns: list = []
    dtype = np.float32
    job = "predict"

    def settings(self) -> dict:
        """Everything that changes the values (weights hash, layer, activation ...): part of a stored run's identity."""
        raise NotImplementedError

    @contextlib.contextmanager
    def running(self):
        """Context around the whole loop (e.g. evaluation mode, device, ``torch.inference_mode``)."""
        yield

    def __call__(self, batch: torch.Tensor):
        """Values for a batch of stacked preprocessor tensors (``[n, C, H, W]``): ``[n, len(columns)]``."""
        raise NotImplementedError


def weights_fingerprint(network) -> str:
    """16 hex characters hashing a torch module's class and every tensor of its state (weights, buffers)."""
    h = hashlib.sha1(f"{type(network).__module__}.{type(network).__qualname__}".encode())
    for name, tensor in network.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class ClassScores(NetworkOutput):
    """One score per class: the network's outputs after ``activation_layer`` (the default of :func:`predict`).

    Parameters
    ----------
    model : CNN or similar
        Uses ``network`` (a ``torch.nn.Module``), ``classes`` and optionally
        ``device``, ``use_amp`` (mixed precision; models without it run in
        float32) and ``channels_last``.
    activation_layer : {None, "sigmoid", "softmax", "softmax_and_logit"}
        Applied to the raw outputs (None: raw logits).
    """

    def __init__(self, model, activation_layer=None):
        if activation_layer not in ACTIVATION_LAYERS:
            raise ValueError(f"activation_layer must be one of {ACTIVATION_LAYERS}, got {activation_layer!r}")
        self.network = model.network
        self.columns = [str(c) for c in model.classes]
        self.activation_layer = activation_layer
        self.device = torch.device(getattr(model, "device", None) or "cpu")
        self.amp_dtype = autocast_dtype(self.device, getattr(model, "use_amp", False))
        self.channels_last = bool(getattr(model, "channels_last", False))

    def settings(self) -> dict:
        return {"output": "class_scores", "classes": self.columns, "activation_layer": self.activation_layer,
                "network": weights_fingerprint(self.network),
                "precision": str(self.amp_dtype or torch.float32)}  # mixed-precision scores differ slightly

    @contextlib.contextmanager
    def running(self):
        was_training = self.network.training
        self.network.eval()
        prepare_network(self.network, self.device, self.channels_last)
        try:
            with torch.inference_mode():
                yield
        finally:
            self.network.train(was_training)

    def __call__(self, batch):
        out = network_forward(self.network, batch, self.device, self.amp_dtype, self.channels_last,
                              self.activation_layer)
        if out.shape[1] != len(self.columns):
            raise ValueError(f"network returned {out.shape[1]} outputs per clip but the model has "
                             f"{len(self.columns)} classes {self.columns}")
        return out.numpy()


# --------------------------------------------------------------------------- planning
def _resolve_overlap(sample_duration, clip_overlap, clip_overlap_fraction, overlap_fraction) -> float:
    """Overlap between consecutive clips in seconds, from whichever spelling was given."""
    given = {k: v for k, v in dict(clip_overlap=clip_overlap, clip_overlap_fraction=clip_overlap_fraction,
                                   overlap_fraction=overlap_fraction).items() if v is not None}
    seconds = set()
    for name, value in given.items():
        if not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        s = float(value) if name == "clip_overlap" else float(value) * sample_duration
        if name != "clip_overlap" and not (0 <= value < 1):
            raise ValueError(f"{name} must be in [0, 1), got {value}")
        seconds.add(round(s, 9))
    if len(seconds) > 1:
        raise ValueError(f"conflicting overlaps given: {given}; give only one of them")
    overlap = seconds.pop() if seconds else 0.0
    if overlap >= sample_duration:
        raise ValueError(f"clip overlap ({overlap} s) must be shorter than the sample duration ({sample_duration} s)")
    return overlap


@dataclass
class _FileJob:
    file: str
    times: np.ndarray  # (n, 2) start, end in seconds

    @property
    def key(self) -> str:
        """Identity of the clips asked for this file (a clip table may ask other clips of the same file)."""
        return hashlib.sha1(np.ascontiguousarray(self.times, dtype=float).tobytes()).hexdigest()[:12]


def _jobs_from_clip_table(df):
    starts = df.index.get_level_values(1).to_numpy(dtype=float)
    ends = df.index.get_level_values(2).to_numpy(dtype=float)
    bad = np.isnan(starts) | np.isnan(ends) | (ends <= starts)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"samples: row {row} ({df.index[row]}) has a missing time or does not end after it starts")
    rows_of = {}
    for i, f in enumerate(df.index.get_level_values(0).astype(str)):
        rows_of.setdefault(f, []).append(i)
    return [_FileJob(f, np.stack([starts[rows], ends[rows]], axis=1)) for f, rows in rows_of.items()]


def _file_list(samples) -> list:
    if isinstance(samples, pd.DataFrame):
        files = [str(f) for f in samples.index]
    elif isinstance(samples, (str, Path)):
        files = list_audio_files(samples) if Path(samples).is_dir() else [str(samples)]
    else:
        files = [str(f) for f in samples]
    if len(set(files)) != len(files):
        dupes = sorted(f for f, n in Counter(files).items() if n > 1)
        warnings.warn(f"samples lists some files more than once; scoring each once: {dupes[:3]}", stacklevel=4)
        files = list(dict.fromkeys(files))
    return files


def _plan_jobs(samples, sample_duration, split_files_into_clips, overlap, final_clip, raise_errors):
    """Group the requested clips by file, keeping order. Returns (jobs, whole-file failures, input kind)."""
    if isinstance(samples, pd.DataFrame) and (
            list(samples.index.names) == CLIP_INDEX or all(c in samples.columns for c in CLIP_INDEX)):
        df = samples if list(samples.index.names) == CLIP_INDEX else samples.set_index(CLIP_INDEX)
        return _jobs_from_clip_table(df), [], "clips"
    jobs, failures = [], []
    for f in _file_list(samples):
        try:
            duration = audio_info(f).duration
        except AudioLoadError as err:
            if raise_errors:
                raise
            failures.append(failure_record(f, err, stage="load"))
            continue
        if split_files_into_clips:
            times = generate_clip_times_df(duration, sample_duration, overlap, final_clip).to_numpy(dtype=float)
        else:
            times = np.array([[0.0, round(duration, 10)]])
        jobs.append(_FileJob(f, times.reshape(-1, 2)))
    return jobs, failures, "files"


def _preprocessor_description(preprocessor):
    """Settings of the preprocessor (changed settings must not reuse stored results)."""
    try:
        return preprocessor.to_dict()
    except (AttributeError, TypeError, ValueError):  # cannot describe itself: its type is all we know
        return f"{type(preprocessor).__module__}.{type(preprocessor).__qualname__}"


# --------------------------------------------------------------------------- reading clips
def _tensor_of(sample):
    data = getattr(sample, "data", sample)
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"preprocessor returned {type(data).__name__}, expected a tensor [C, H, W]")
    return data


class _ChunkDataset:
    """Map-style dataset whose items are runs of consecutive clips of one file (preprocessed, stacked).

    Clips go through :class:`~opso_nb.ml.clip_runs.ClipRunPipeline` (one read
    and one transform for the run, same values) when the preprocessor has a
    batched form; the others, and every clip of a run the batched path could
    not do, go through the preprocessor one by one, which reports each
    failing clip.
    """

    def __init__(self, jobs, preprocessor, bypass_augmentations, raise_errors, chunk_clips, channels_last=False):
        self.preprocessor = preprocessor
        self.bypass_augmentations = bypass_augmentations
        self.raise_errors = raise_errors
        self.jobs = jobs
        self.items = [(j, lo, min(lo + chunk_clips, len(job.times)))
                      for j, job in enumerate(jobs) for lo in range(0, len(job.times), chunk_clips)]
        self.clip_runs = ClipRunPipeline.plan(preprocessor, bypass_augmentations)
        # the network's memory layout, made here so that the forward pass's thread does not copy the batch again
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        j, lo, hi = self.items[i]
        job = self.jobs[j]
        batched, tensors = self._batched(job.file, job.times[lo:hi])
        if len(batched) == hi - lo:  # the usual case: the whole run at once
            return {"job": j, "lo": lo, "hi": hi, "data": tensors, "ok": np.ones(hi - lo, dtype=bool),
                    "failures": []}
        by_clip = dict(zip(batched.tolist(), tensors if tensors is not None else []))
        kept, ok, failures = [], np.zeros(hi - lo, dtype=bool), []
        for k in range(lo, hi):
            start, end = (float(t) for t in job.times[k])
            try:
                t = by_clip.get(k - lo)
                if t is None:
                    sample = AudioSample(job.file, start_time=start, duration=end - start)
                    t = _tensor_of(self.preprocessor.forward(sample, bypass_augmentations=self.bypass_augmentations))
                if kept and t.shape != kept[0].shape:
                    raise ValueError(f"preprocessed shape {tuple(t.shape)} differs from {tuple(kept[0].shape)}")
                kept.append(t)
                ok[k - lo] = True
            except Exception as err:  # any clip that cannot be prepared is reported, never fatal
                if self.raise_errors:
                    raise
                failures.append(failure_record(job.file, err, start, end, stage=error_stage(err, "preprocess")))
        data = torch.stack(kept).contiguous() if kept else None
        return {"job": j, "lo": lo, "hi": hi, "data": data, "ok": ok, "failures": failures}

    def _batched(self, file, times):
        """(indices into ``times``, tensors) of the clips done as one run; none without a batched form."""
        if self.clip_runs is not None:
            try:
                return self.clip_runs(file, times, self.memory_format)
            except Exception:  # e.g. NaN samples in the run: clip by clip names the clips that fail
                pass
        return np.zeros(0, dtype=int), None


class _MarkingOrder(torch.utils.data.Sampler):
    """Chunk indices in order; calls ``on_start(job index)`` just before a job's first chunk is handed out.

    Iterated in the main process (also by a DataLoader with workers), so a
    file is marked as started before any of its audio is read.
    """

    def __init__(self, dataset, on_start):
        self.dataset, self.on_start = dataset, on_start

    def __len__(self):
        return len(self.dataset)

    def __iter__(self):
        for i, (j, lo, _) in enumerate(self.dataset.items):
            if lo == 0:
                self.on_start(j)
            yield i


def _prefetch(dataset, order, depth: int = 2):
    """Yield ``dataset[i]`` for ``i`` in ``order``, preparing the next items in a background thread.

    With ``num_workers=0`` this overlaps reading/preprocessing (numpy, soundfile and
    most torch ops release the GIL) with the forward pass of the previous batch.
    The thread runs torch operations on one thread of its own, leaving the
    others to the network.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        # one thread for preprocessing's torch operations: with the forward pass's threads they would
        # otherwise oversubscribe the cores, and small operations stall at every parallel barrier
        torch.set_num_threads(1)
        try:
            for i in order:
                if stop.is_set():
                    return
                q.put((True, dataset[i]))
        except BaseException as err:  # handed to the consumer, raised there
            q.put((False, err))
            return
        q.put((True, done))

    thread = threading.Thread(target=produce, daemon=True, name="predict-prefetch")
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _identity(item):
    return item


def _chunks(dataset, order, num_workers, isolated):
    """Items of ``dataset`` in ``order``: in this thread (isolated), a prefetch thread, or DataLoader workers."""
    if isolated or len(dataset) <= 1:
        return (dataset[i] for i in order)
    if num_workers > 0:
        return torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=order, num_workers=num_workers, worker_init_fn=loader_worker_init,
            prefetch_factor=2, persistent_workers=False, collate_fn=_identity,
        )
    return _prefetch(dataset, order)


# --------------------------------------------------------------------------- the inference loop
class _InferenceRun:
    """Runs :class:`NetworkOutput` over the clips of a list of files; hands each finished file to ``on_file``.

    ``on_file(job, values, failures)`` gets the file's ``[n_clips, n_columns]``
    values (NaN rows where a clip failed) and its failure records.
    """

    def __init__(self, output, preprocessor, batch_size, num_workers, chunk_clips, bypass_augmentations,
                 raise_errors, on_file, on_start=None, total=0, done=0, progress=False, progress_callback=None,
                 where=None):
        self.output = output
        self.preprocessor = preprocessor
        self.batch_size, self.num_workers, self.chunk_clips = batch_size, num_workers, chunk_clips
        self.bypass_augmentations, self.raise_errors = bypass_augmentations, raise_errors
        self.on_file, self.on_start = on_file, on_start or (lambda job: None)
        self.total, self.done = int(total), int(done)
        self.progress_callback, self.where = progress_callback, where
        self.bar = tqdm(total=self.total, initial=self.done, unit="clip", desc="predicting") if progress else None

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def run(self, jobs, isolated=False):
        """Score ``jobs``; ``isolated``: one chunk at a time in this thread (files suspected of killing a run)."""
        dataset = _ChunkDataset(jobs, self.preprocessor, self.bypass_augmentations, self.raise_errors,
                                self.chunk_clips, getattr(self.output, "channels_last", False))
        order = _MarkingOrder(dataset, lambda j: self.on_start(jobs[j]))
        n_columns = len(self.output.columns)
        buffers = {}
        for item in _chunks(dataset, order, self.num_workers, isolated):
            j, lo, hi = item["job"], item["lo"], item["hi"]
            job = jobs[j]
            if j not in buffers:
                # column-major: the file's table and its Parquet columns are then views of this buffer, not
                # copies (BirdNET's 7,546 columns over a 10-hour file: 362 MB, once)
                buffers[j] = (np.full((len(job.times), n_columns), np.nan, dtype=self.output.dtype, order="F"),
                              [], [0])
            values, failures, received = buffers[j]
            if item["data"] is not None:
                values[lo + np.flatnonzero(item["ok"])] = self._forward(item["data"])
            failures.extend(item["failures"])
            received[0] += hi - lo
            if received[0] == len(job.times):
                del buffers[j]
                self.on_file(job, values, _non_finite_failures(job, values, failures))
            self._advance(hi - lo, job.file)
        for job in jobs:  # files with no clips at all (an empty clip-table group) still count as done
            if len(job.times) == 0:
                self.on_start(job)
                self.on_file(job, np.zeros((0, n_columns), self.output.dtype), [])

    def _forward(self, data):
        outs = [np.asarray(self.output(data[b:b + self.batch_size]), dtype=self.output.dtype)
                for b in range(0, data.shape[0], self.batch_size)]
        return np.concatenate(outs)

    def _advance(self, n_clips, file):
        self.done += n_clips
        if self.bar is not None:
            self.bar.update(n_clips)
        if self.progress_callback is not None and self.progress_callback(self.done, self.total, file) is False:
            raise PredictionInterrupted(
                f"prediction stopped after {self.done} of {self.total} clips"
                + (f"; finished files are in {self.where}, run again to resume" if self.where else ""))


def _non_finite_failures(job, values, failures):
    """Add a "score" failure for each clip whose values came out NaN/inf (and make its row all NaN)."""
    failed = {(f["start_time"], f["end_time"]) for f in failures}
    # row blocks: a test over the whole buffer at once would take one byte per value (90 MB for BirdNET, 10 h)
    finite = [np.isfinite(values[i:i + 1024]).all(axis=1) for i in range(0, len(values), 1024)]
    bad = np.flatnonzero(~np.concatenate(finite)) if finite else np.zeros(0, dtype=int)
    extra = []
    for k in bad:
        start, end = float(job.times[k, 0]), float(job.times[k, 1])
        values[k] = np.nan
        if (start, end) not in failed:
            extra.append(failure_record(job.file, NON_FINITE, start, end, stage="score"))
    return failures + extra


def _clip_table(job, values, columns):
    return pd.DataFrame(values, index=make_clip_index([job.file] * len(job.times), job.times[:, 0], job.times[:, 1]),
                        columns=columns, copy=False)


def _report_failures(failures, invalid_samples_log):
    if invalid_samples_log is not None:
        write_failures_csv(failures, invalid_samples_log)
    if len(failures):
        n_score = int((failures["stage"] == "score").sum())
        non_finite = f" ({n_score} with NaN/inf outputs, stage 'score')" if n_score else ""
        warnings.warn(f"some clips or files could not be scored{non_finite}: {summarize_failures(failures)}; "
                      "use return_invalid_samples=True to get the table", stacklevel=3)


# --------------------------------------------------------------------------- predict
def predict(
    model,
    samples,
    batch_size: int = 1,
    num_workers: int = 0,
    activation_layer: str | None = None,
    split_files_into_clips: bool = True,
    clip_overlap: float | None = None,
    clip_overlap_fraction: float | None = None,
    overlap_fraction: float | None = None,
    final_clip: str | None = None,
    bypass_augmentations: bool = True,
    invalid_samples_log=None,
    raise_errors: bool = False,
    return_invalid_samples: bool = False,
    output_path=None,
    progress: bool = True,
    progress_callback=None,
    output_format: str = "parquet",
    return_scores: bool = True,
    chunk_clips: int | None = None,
    network_output: NetworkOutput | None = None,
    wandb_session=None,
):
    """Score clips of audio files with a model.

    Parameters
    ----------
    model : CNN or similar
        Has ``network``, ``classes``, ``sample_duration`` (s), ``preprocessor``
        and optionally ``device``.
    samples : list of paths, path, folder, or DataFrame
        Audio files (each split into clips of ``model.sample_duration`` s; a
        folder means its audio files), a DataFrame indexed by file, or a clip
        table indexed (or with columns) ``(file, start_time, end_time)``, which
        is scored clip by clip. An empty list gives an empty table.
    batch_size : int
        Clips per forward pass.
    num_workers : int
        Processes that read and preprocess clips (0: in this process). Each
        worker handles runs of consecutive clips of one file.
    activation_layer : {None, "sigmoid", "softmax", "softmax_and_logit"}
        Applied to the raw outputs (None: raw logits).
    split_files_into_clips : bool
        False scores each file (or row) as one sample, from 0 s to its end.
    clip_overlap : float, optional
        Seconds shared by consecutive clips (default 0).
    clip_overlap_fraction, overlap_fraction : float, optional
        The same overlap as a fraction of the sample duration (both spellings
        accepted; e.g. 0.5 with 5 s clips gives starts 0, 2.5, 5, ...).
    final_clip : {None, "remainder", "full", "extend"}
        What to do with the end of a file that does not fill a whole clip (see
        :func:`opso_nb.utils.generate_clip_times_df`). A file shorter than one
        clip gives one clip ``(0, duration)`` (``(0, sample_duration)`` with
        "extend"), which the preprocessor pads to the sample duration.
    bypass_augmentations : bool
        Skip augmentation actions of the preprocessor (default True).
    invalid_samples_log : str or Path, optional
        Write the failures table to this CSV.
    raise_errors : bool
        Raise on the first unreadable file or clip instead of recording it.
    return_invalid_samples : bool
        Also return the failures table.
    output_path : str or Path, optional
        Output folder of a resumable run (:class:`opso_nb.store.RunStore`):
        one part per input file, written as each file finishes. Rerunning
        with the same folder and settings resumes; other settings (model
        weights, preprocessor, clip settings, activation ...) start a new run
        beside the old one. A second process using the same folder at the
        same time is refused (:class:`opso_nb.store.StoreLocked`).
    progress : bool
        Show a ``tqdm.auto`` progress bar (clips).
    progress_callback : callable, optional
        Called as ``progress_callback(done_clips, total_clips, file)`` after
        each run of clips; return ``False`` to stop early
        (:class:`PredictionInterrupted` is raised; finished files are kept).
    output_format : {"parquet", "csv"}
        Format of the parts in ``output_path``.
    return_scores : bool
        False returns None instead of the table (useful with ``output_path``
        for very large runs; read it later with :func:`load_prediction_output`).
    chunk_clips : int, optional
        Consecutive clips one worker loads as a unit (default max(batch_size, 32)).
    network_output : NetworkOutput, optional
        What to compute for each batch (default :class:`ClassScores` with
        ``activation_layer``): the hook for embeddings and other models.
    wandb_session : ignored
        Accepted for OpenSoundscape compatibility.

    Returns
    -------
    DataFrame, or (DataFrame, DataFrame)
        Scores indexed by (file, start_time, end_time), one column per class;
        clips that failed have NaN scores. With ``return_invalid_samples``
        also the failures table (:data:`opso_nb.failures.FAILURE_COLUMNS`;
        whole-file failures have NaN times). Files come in input order, clips
        in time (or table) order.

    Warns
    -----
    UserWarning
        When anything could not be scored (including clips with NaN/inf
        outputs), summarising the failures.
    """
    batch_size, num_workers = int(batch_size), int(num_workers)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if output_format not in ("parquet", "csv"):
        raise ValueError(f"output_format must be 'parquet' or 'csv', got {output_format!r}")
    if final_clip not in FINAL_CLIPS:
        raise ValueError(f"final_clip must be None, 'remainder', 'full' or 'extend', got {final_clip!r}")
    output = network_output if network_output is not None else ClassScores(model, activation_layer)
    sample_duration = float(model.sample_duration)
    overlap = _resolve_overlap(sample_duration, clip_overlap, clip_overlap_fraction, overlap_fraction)
    jobs, failures, kind = _plan_jobs(samples, sample_duration, split_files_into_clips, overlap, final_clip,
                                      raise_errors)
    settings = {"input": kind, "sample_duration": sample_duration, "overlap": overlap, "final_clip": final_clip,
                "split_files_into_clips": bool(split_files_into_clips),
                "bypass_augmentations": bool(bypass_augmentations),
                "preprocessor": _preprocessor_description(model.preprocessor), "opso_nb": __version__}
    loop = dict(preprocessor=model.preprocessor, batch_size=batch_size, num_workers=num_workers,
                chunk_clips=int(chunk_clips or max(batch_size, DEFAULT_CHUNK_CLIPS)),
                bypass_augmentations=bypass_augmentations, raise_errors=raise_errors, progress=progress,
                progress_callback=progress_callback)
    if output_path is None:
        results = _predict_in_memory(output, jobs, loop, return_scores)
    else:
        results = _predict_to_store(output, jobs, failures, settings, loop, Path(output_path), output_format,
                                    return_scores)
    scores_by_file, run_failures = results
    failures = failures_frame(failures + run_failures)
    _report_failures(failures, invalid_samples_log)
    scores = None
    if return_scores:
        frames = [scores_by_file[job.file] for job in jobs if job.file in scores_by_file]
        scores = pd.concat(frames) if frames else empty_clip_table(output.columns, output.dtype)
    return (scores, failures) if return_invalid_samples else scores


def _predict_in_memory(output, jobs, loop, return_scores):
    """Score every job; returns ({file: table}, failure records)."""
    scores, failures = {}, []

    def on_file(job, values, file_failures):
        failures.extend(file_failures)
        if return_scores:
            scores[job.file] = _clip_table(job, values, output.columns)

    total = int(sum(len(job.times) for job in jobs))
    run = _InferenceRun(output, on_file=on_file, total=total, **loop)
    try:
        with output.running():
            run.run(jobs)
    finally:
        run.close()
    return scores, failures


def _predict_to_store(output, jobs, load_failures, settings, loop, root, output_format, return_scores):
    """Score the jobs a stored run has not finished (suspects first, alone); returns ({file: table}, failures)."""
    scores, failures = {}, []
    settings = {**settings, "output": output.settings()}
    with RunStore.open(root, settings, job=output.job, columns=output.columns, dtype=output.dtype,
                       format=output_format) as run:
        for rec in load_failures:
            run.fail(rec["file"], [rec])
        finished = [job for job in jobs if run.is_done(job.file, job.key)]
        todo = [job for job in jobs if not run.is_done(job.file, job.key)]
        suspect_files = set(run.suspects())
        suspects = [job for job in todo if job.file in suspect_files]
        others = [job for job in todo if job.file not in suspect_files]

        def on_file(job, values, file_failures):
            table = _clip_table(job, values, output.columns)
            run.write(job.file, table, file_failures, key=job.key)
            failures.extend(file_failures)
            if return_scores:
                scores[job.file] = table

        total = int(sum(len(job.times) for job in jobs))
        done = int(sum(len(job.times) for job in finished))
        inference = _InferenceRun(output, on_file=on_file, on_start=lambda job: run.begin(job.file, job.key),
                                  total=total, done=done, where=root, **loop)
        try:
            with output.running():
                inference.run(suspects, isolated=True)
                inference.run(others)
        finally:
            inference.close()
        stored, stored_failures = run.read(files=[job.file for job in finished])
        failures.extend(stored_failures.to_dict("records"))
        if return_scores:
            scores.update(_split_by_file(stored))
    return scores, failures


def _split_by_file(table) -> dict:
    """``{file: rows}`` keeping order (no groupby: it cannot factorize names that are not valid UTF-8)."""
    rows_of = {}
    for row, file in enumerate(table.index.get_level_values(0)):
        rows_of.setdefault(file, []).append(row)
    return {file: table.iloc[rows] for file, rows in rows_of.items()}


def load_prediction_output(output_path, files=None):
    """Read the scores and failures of a (finished or interrupted) streamed prediction run.

    Parameters
    ----------
    output_path : str or Path
        The folder given to :func:`predict` (its most recent run is read), or
        one run's sub-folder.
    files : list of str, optional
        Only these input files, in this order (default: all finished files,
        in the order they finished).

    Returns
    -------
    (scores, failures) : (DataFrame, DataFrame)
        Scores indexed by (file, start_time, end_time); failures with the
        columns of :data:`opso_nb.failures.FAILURE_COLUMNS`.

    Raises
    ------
    FileNotFoundError
        ``output_path`` holds no prediction run.
    """
    return RunStore.existing(output_path, job="predict").read(files)


# --------------------------------------------------------------------------- settings object
class PredictionSettings(param.Parameterized):
    """Tunable settings of a prediction run (what the prediction dashboard shows as widgets).

    Examples
    --------
    >>> settings = PredictionSettings(overlap_fraction=0.5, activation_layer="sigmoid")
    >>> scores = settings.predict(model, files, output_path="scores/")  # doctest: +SKIP
    """

    batch_size = param.Integer(default=16, bounds=(1, 1024), doc="Clips per forward pass.")
    num_workers = param.Integer(default=0, bounds=(0, 64), doc="Processes that read and preprocess clips.")
    activation_layer = param.Selector(default="sigmoid", objects=list(ACTIVATION_LAYERS),
                                      doc="Activation applied to raw outputs (None: raw logits).")
    overlap_fraction = param.Number(default=0.0, bounds=(0.0, 0.95), doc="Overlap of consecutive clips (fraction).")
    final_clip = param.Selector(default=None, objects=list(FINAL_CLIPS),
                                doc="How to score the end of a file that is shorter than a clip.")
    output_format = param.Selector(default="parquet", objects=["parquet", "csv"], doc="Format of streamed parts.")

    def predict(self, model, samples, output_path=None, **kwargs):
        """Run :func:`predict` with these settings (keyword arguments override them)."""
        options = dict(
            batch_size=self.batch_size, num_workers=self.num_workers, activation_layer=self.activation_layer,
            overlap_fraction=self.overlap_fraction, final_clip=self.final_clip, output_format=self.output_format,
        )
        options.update(kwargs)
        return predict(model, samples, output_path=output_path, **options)
