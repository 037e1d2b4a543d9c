"""Score audio with a trained model: clips read on demand, batched, streamed to disk, resumable.

:func:`predict` is what :meth:`opso_nb.ml.cnn.CNN.predict` runs. It works for a
handful of short clips and for folders of 10-hour recordings alike:

* clips are read on demand with offset/duration reads (a 10-hour file is never
  loaded whole); each worker reads a run of consecutive clips of one file;
* with ``output_path`` (a folder) the scores of each input file are written
  atomically to their own Parquet (or CSV) part as soon as the file is done,
  and ``manifest.json`` records each finished file's size and modification
  time. Running again with the same ``output_path`` skips unchanged finished
  files and redoes changed ones, so a run killed after 20 hours keeps 20 hours;
* a file that cannot be read is reported (file, start_time, end_time, error)
  and the other files are scored.

The model only needs ``.network`` (a ``torch.nn.Module``), ``.classes``,
``.sample_duration`` (s), ``.preprocessor`` (with
``forward(sample, bypass_augmentations=True)`` returning a sample whose
``.data`` is a ``[C, H, W]`` tensor) and optionally ``.device``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import param

from opso_nb.utils import CLIP_INDEX, atomic_path, atomic_write, generate_clip_times_df

__all__ = [
    "predict",
    "apply_activation",
    "load_prediction_output",
    "PredictionSettings",
    "PredictionInterrupted",
    "ACTIVATION_LAYERS",
]

ACTIVATION_LAYERS = (None, "sigmoid", "softmax", "softmax_and_logit")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
INVALID_COLUMNS = ["file", "start_time", "end_time", "error"]

#: Clips a worker reads and preprocesses as one unit (one file read per unit when
#: the preprocessor accepts pre-loaded audio). Large enough to amortise a seek and
#: a DataLoader round trip, small enough that progress and memory stay fine-grained.
DEFAULT_CHUNK_CLIPS = 32


class PredictionInterrupted(RuntimeError):
    """Raised when a ``progress_callback`` returns False: the run stopped early.

    Files finished so far are in ``output_path`` (if given); running again resumes.
    """


# --------------------------------------------------------------------------- helpers
def apply_activation(logits, activation_layer=None):
    """Apply an activation to raw model outputs ``[n_clips, n_classes]``.

    Same as :func:`opso_nb.ml.utils.apply_activation_layer` (used in training too,
    so validation and prediction scores agree): None keeps raw logits;
    "sigmoid" maps each score to [0, 1]; "softmax" makes each row sum to 1;
    "softmax_and_logit" applies softmax then the logit transform (finite reals).
    """
    from opso_nb.ml.utils import apply_activation_layer

    return apply_activation_layer(logits, activation_layer)


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


class _SimpleSample:
    """Minimal clip description used when :mod:`opso_nb.sample` is not available."""

    def __init__(self, source, start_time=None, duration=None, labels=None):
        self.source = source
        self.start_time = start_time
        self.duration = duration
        self.labels = labels
        self.data = None
        self.trace = None


def _make_sample(file, start_time, duration):
    try:
        from opso_nb.sample import AudioSample
    except ImportError:  # preprocess package not built yet / stripped install
        return _SimpleSample(file, start_time, duration)
    return AudioSample(file, start_time=start_time, duration=duration)


def _tensor_of(sample):
    import torch

    data = getattr(sample, "data", sample)
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"preprocessor returned {type(data).__name__}, expected a tensor [C, H, W]")
    return data


def _file_signature(path) -> dict:
    st = os.stat(path)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _network_fingerprint(network) -> str:
    """Hash of all weights: a rerun with a different model must not reuse old parts."""
    h = hashlib.sha1()
    for name, tensor in network.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _preprocessor_fingerprint(preprocessor) -> str:
    """Settings of the preprocessor (changed settings must not reuse old parts)."""
    to_dict = getattr(preprocessor, "to_dict", None)
    try:
        desc = json.dumps(to_dict(), sort_keys=True, default=str) if callable(to_dict) else None
    except Exception:  # a preprocessor that cannot describe itself: fall back to its type
        desc = None
    if desc is None:
        desc = f"{type(preprocessor).__module__}.{type(preprocessor).__qualname__}"
    return hashlib.sha1(desc.encode()).hexdigest()[:16]


def _part_name(file: str, fmt: str) -> str:
    digest = hashlib.sha1(file.encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(file).stem)[:60]
    return f"{stem}-{digest}.{fmt}"


# --------------------------------------------------------------------------- jobs
@dataclass
class _FileJob:
    file: str
    times: np.ndarray  # (n, 2) start, end in seconds
    key: str = ""  # settings + clip-times fingerprint
    chunks: list = field(default_factory=list)


def _plan_jobs(samples, sample_duration, split_files_into_clips, overlap, final_clip, raise_errors):
    """Group the requested clips by file, keeping order. Returns (jobs, invalid rows, input_kind)."""
    from opso_nb.audio import AudioLoadError, audio_info

    invalid = []
    jobs: list[_FileJob] = []
    if isinstance(samples, pd.DataFrame):
        df = samples
        if list(df.index.names) == CLIP_INDEX or all(c in df.columns for c in CLIP_INDEX):
            if list(df.index.names) != CLIP_INDEX:
                df = df.set_index(CLIP_INDEX)
            files = df.index.get_level_values(0).astype(str).to_numpy()
            starts = df.index.get_level_values(1).to_numpy(dtype=float)
            ends = df.index.get_level_values(2).to_numpy(dtype=float)
            bad = np.isnan(starts) | np.isnan(ends) | (ends <= starts)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"samples: row {row} ({df.index[row]}) has a missing time or does not end after it starts"
                )
            order = {}
            for i, f in enumerate(files):
                order.setdefault(f, []).append(i)
            for f, rows in order.items():
                rows = np.asarray(rows)
                jobs.append(_FileJob(f, np.stack([starts[rows], ends[rows]], axis=1)))
            return jobs, invalid, "clips"
        file_list = [str(f) for f in df.index]
    elif isinstance(samples, (str, Path)):
        file_list = [str(samples)]
    else:
        file_list = [str(f) for f in samples]
    if len(set(file_list)) != len(file_list):
        dupes = sorted({f for f in file_list if file_list.count(f) > 1})
        warnings.warn(f"samples lists some files more than once; scoring each once: {dupes[:3]}", stacklevel=3)
        file_list = list(dict.fromkeys(file_list))
    for f in file_list:
        try:
            duration = audio_info(f).duration
        except AudioLoadError as err:
            if raise_errors:
                raise
            invalid.append((f, np.nan, np.nan, str(err)))
            continue
        if split_files_into_clips:
            times = generate_clip_times_df(duration, sample_duration, overlap, final_clip).to_numpy(dtype=float)
        else:
            times = np.array([[0.0, round(duration, 10)]])
        jobs.append(_FileJob(f, times.reshape(-1, 2)))
    return jobs, invalid, "files"


class _ChunkDataset:
    """Map-style dataset whose items are runs of consecutive clips of one file (preprocessed, stacked)."""

    def __init__(self, jobs, preprocessor, bypass_augmentations, raise_errors, chunk_clips):
        self.preprocessor = preprocessor
        self.bypass_augmentations = bypass_augmentations
        self.raise_errors = raise_errors
        self.jobs = jobs
        self.items = []
        for j, job in enumerate(jobs):
            for lo in range(0, len(job.times), chunk_clips):
                self.items.append((j, lo, min(lo + chunk_clips, len(job.times))))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import torch

        j, lo, hi = self.items[i]
        job = self.jobs[j]
        tensors, ok, errors = [], np.zeros(hi - lo, dtype=bool), []
        for k in range(lo, hi):
            start, end = job.times[k]
            try:
                sample = _make_sample(job.file, float(start), float(end - start))
                out = self.preprocessor.forward(sample, bypass_augmentations=self.bypass_augmentations)
                t = _tensor_of(out)
                if tensors and t.shape != tensors[0].shape:
                    raise ValueError(f"preprocessed shape {tuple(t.shape)} differs from {tuple(tensors[0].shape)}")
                tensors.append(t)
                ok[k - lo] = True
            except Exception as err:
                if self.raise_errors:
                    raise
                errors.append((k, f"{type(err).__name__}: {err}"))
        data = torch.stack(tensors).contiguous() if tensors else None
        return {"job": j, "lo": lo, "hi": hi, "data": data, "ok": ok, "errors": errors}


def _prefetch(dataset, depth: int = 2):
    """Yield ``dataset[i]`` in order, preparing the next items in a background thread.

    With ``num_workers=0`` this overlaps reading/preprocessing (numpy, soundfile and
    most torch ops release the GIL) with the forward pass of the previous batch.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for i in range(len(dataset)):
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


# --------------------------------------------------------------------------- manifest
def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        return {"version": MANIFEST_VERSION, "files": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: prediction manifest is unreadable ({err}); use a new output_path") from err
    if not isinstance(data, dict) or "files" not in data:
        raise ValueError(f"{path} is not an opso_nb prediction manifest; use a new output_path")
    return data


def _write_manifest(folder: Path, manifest: dict):
    with atomic_write(folder / MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, default=str)


def _write_part(path: Path, df: pd.DataFrame, fmt: str):
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            df.reset_index().to_parquet(tmp, index=False)
        else:
            df.reset_index().to_csv(tmp, index=False)


def _read_part(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype={"file": str})
        # scores are float32 in memory; CSV keeps enough digits for an exact round trip
        df = df.astype({c: np.float32 for c in df.columns if c not in CLIP_INDEX})
    return df.set_index(CLIP_INDEX)


def load_prediction_output(output_path, files=None):
    """Read the scores and failures of a (finished or interrupted) streamed prediction run.

    Parameters
    ----------
    output_path : str or Path
        The folder given to :func:`predict`.
    files : list of str, optional
        Only these input files (default: all finished files, in the order they finished).

    Returns
    -------
    (scores, invalid) : (DataFrame, DataFrame)
        Scores indexed by (file, start_time, end_time); failures with columns
        file, start_time, end_time, error.
    """
    folder = Path(output_path)
    manifest = _read_manifest(folder)
    entries = manifest["files"]
    wanted = list(entries) if files is None else [str(f) for f in files]
    frames, invalid = [], []
    for f in wanted:
        entry = entries.get(f)
        if entry is None:
            continue
        frames.append(_read_part(folder / entry["part"], entry.get("format", "parquet")))
        invalid.extend((f, s, e, msg) for s, e, msg in entry.get("errors", []))
    for f, msg in manifest.get("failed_files", {}).items():
        if files is None or f in wanted:
            invalid.append((f, np.nan, np.nan, msg))
    classes = manifest.get("classes", [])
    scores = pd.concat(frames) if frames else _empty_scores(classes)
    return scores, pd.DataFrame(invalid, columns=INVALID_COLUMNS)


def _empty_scores(classes):
    index = pd.MultiIndex.from_arrays([[], [], []], names=CLIP_INDEX)
    return pd.DataFrame(np.zeros((0, len(classes)), dtype=np.float32), index=index, columns=list(classes))


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
    wandb_session=None,
):
    """Score clips of audio files with a model.

    Parameters
    ----------
    model : CNN or similar
        Has ``network``, ``classes``, ``sample_duration`` (s), ``preprocessor``
        and optionally ``device``.
    samples : list of paths, path, or DataFrame
        Audio files (each split into clips of ``model.sample_duration`` s), a
        DataFrame indexed by file, or a clip table indexed (or with columns)
        ``(file, start_time, end_time)``, which is scored clip by clip.
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
        What to do with the end of a file shorter than a clip (see
        :func:`opso_nb.utils.generate_clip_times_df`).
    bypass_augmentations : bool
        Skip augmentation actions of the preprocessor (default True).
    invalid_samples_log : str or Path, optional
        Write the failures (file, start_time, end_time, error) to this CSV.
    raise_errors : bool
        Raise on the first unreadable file or clip instead of recording it.
    return_invalid_samples : bool
        Also return the failures table.
    output_path : str or Path, optional
        Folder to stream results to (one part per input file plus
        ``manifest.json``). Rerunning with the same folder resumes.
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
    wandb_session : ignored
        Accepted for OpenSoundscape compatibility.

    Returns
    -------
    DataFrame, or (DataFrame, DataFrame)
        Scores indexed by (file, start_time, end_time), one column per class;
        clips that failed to load have NaN scores. With
        ``return_invalid_samples`` also the failures table (columns file,
        start_time, end_time, error; whole-file failures have NaN times).
        Files come in input order, clips in time (or table) order.
    """
    import torch

    from opso_nb.ml.utils import autocast, autocast_dtype, loader_worker_init, prepare_network, to_network_input

    if activation_layer not in ACTIVATION_LAYERS:
        raise ValueError(f"activation_layer must be one of {ACTIVATION_LAYERS}, got {activation_layer!r}")
    if output_format not in ("parquet", "csv"):
        raise ValueError(f"output_format must be 'parquet' or 'csv', got {output_format!r}")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_workers = int(num_workers)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    classes = [str(c) for c in model.classes]
    sample_duration = float(model.sample_duration)
    overlap = _resolve_overlap(sample_duration, clip_overlap, clip_overlap_fraction, overlap_fraction)
    if final_clip not in (None, "remainder", "full", "extend"):
        raise ValueError(f"final_clip must be None, 'remainder', 'full' or 'extend', got {final_clip!r}")
    chunk_clips = int(chunk_clips or max(batch_size, DEFAULT_CHUNK_CLIPS))

    jobs, invalid, kind = _plan_jobs(samples, sample_duration, split_files_into_clips, overlap, final_clip, raise_errors)
    network = model.network
    device = torch.device(getattr(model, "device", None) or "cpu")
    # models other than CNN (no use_amp attribute) run in float32
    amp_dtype = autocast_dtype(device, getattr(model, "use_amp", False))

    # ---- resume bookkeeping
    folder = Path(output_path) if output_path is not None else None
    manifest = None
    settings = {
        "classes": classes, "sample_duration": sample_duration, "overlap": overlap, "final_clip": final_clip,
        "split_files_into_clips": bool(split_files_into_clips), "activation_layer": activation_layer,
        "bypass_augmentations": bool(bypass_augmentations), "input": kind,
        "precision": str(amp_dtype or torch.float32),  # mixed-precision scores differ slightly
    }
    todo = list(range(len(jobs)))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = _read_manifest(folder)
        settings["network"] = _network_fingerprint(network)
        settings["preprocessor"] = _preprocessor_fingerprint(model.preprocessor)
        settings_key = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        manifest.update(version=MANIFEST_VERSION, classes=classes)
        manifest.setdefault("failed_files", {})
        todo = []
        for j, job in enumerate(jobs):
            times_key = hashlib.sha1(np.ascontiguousarray(job.times).tobytes()).hexdigest()[:12]
            job.key = f"{settings_key}-{times_key}"
            entry = manifest["files"].get(job.file)
            try:
                sig = _file_signature(job.file)
            except OSError:
                sig = None
            if (entry is not None and sig is not None and entry.get("key") == job.key
                    and entry.get("size") == sig["size"] and entry.get("mtime_ns") == sig["mtime_ns"]
                    and (folder / entry["part"]).exists()):
                continue  # finished earlier with the same inputs and settings
            manifest["files"].pop(job.file, None)
            todo.append(j)
        for f, _, _, msg in invalid:
            manifest["files"].pop(f, None)
            manifest["failed_files"][f] = msg
        _write_manifest(folder, manifest)

    total = int(sum(len(job.times) for job in jobs))
    done = total - int(sum(len(jobs[j].times) for j in todo))
    todo_jobs = [jobs[j] for j in todo]
    dataset = _ChunkDataset(todo_jobs, model.preprocessor, bypass_augmentations, raise_errors, chunk_clips)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, unit="clip", desc="predicting", leave=True)

    if num_workers > 0 and len(dataset) > 0:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=num_workers,
            worker_init_fn=loader_worker_init, prefetch_factor=2, persistent_workers=False, collate_fn=_identity,
        )
    elif len(dataset) > 1:
        loader = _prefetch(dataset)
    else:
        loader = (dataset[i] for i in range(len(dataset)))

    results: dict[str, pd.DataFrame] = {}
    received = np.zeros(len(todo_jobs), dtype=int)
    buffers = [None] * len(todo_jobs)
    was_training = network.training
    network.eval()
    channels_last = bool(getattr(model, "channels_last", False))
    prepare_network(network, device, channels_last)
    n_classes = len(classes)
    try:
        with torch.inference_mode():
            for item in loader:
                j, lo, hi = item["job"], item["lo"], item["hi"]
                job = todo_jobs[j]
                if buffers[j] is None:
                    buffers[j] = (np.full((len(job.times), n_classes), np.nan, dtype=np.float32), [])
                scores, errors = buffers[j]
                if item["data"] is not None:
                    data = item["data"]
                    outs = []
                    for b in range(0, data.shape[0], batch_size):
                        with autocast(device, amp_dtype):
                            out = network(to_network_input(data[b:b + batch_size], device, channels_last))
                        if isinstance(out, (tuple, list)):  # e.g. Inception's (logits, aux)
                            out = out[0]
                        outs.append(apply_activation(out.float(), activation_layer).cpu())
                    logits = torch.cat(outs).numpy()
                    if logits.shape[1] != n_classes:
                        raise ValueError(
                            f"network returned {logits.shape[1]} outputs per clip but the model has "
                            f"{n_classes} classes {classes}"
                        )
                    scores[lo + np.flatnonzero(item["ok"])] = logits
                for k, msg in item["errors"]:
                    errors.append((float(job.times[k, 0]), float(job.times[k, 1]), msg))
                received[j] += hi - lo
                done += hi - lo
                if received[j] == len(job.times):
                    df = _finish_job(job, scores, errors, classes)
                    buffers[j] = None
                    invalid.extend((job.file, s, e, m) for s, e, m in errors)
                    if folder is not None:
                        _store_job(folder, manifest, job, df, errors, output_format)
                    if return_scores:
                        results[job.file] = df
                if bar is not None:
                    bar.update(hi - lo)
                if progress_callback is not None:
                    if progress_callback(done, total, job.file) is False:
                        raise PredictionInterrupted(
                            f"prediction stopped after {done} of {total} clips"
                            + (f"; finished files are in {folder}, run again to resume" if folder else "")
                        )
            # files with no clips at all (e.g. an empty clip table group) still count as done
            for j, job in enumerate(todo_jobs):
                if len(job.times) == 0:
                    df = _finish_job(job, np.zeros((0, n_classes), np.float32), [], classes)
                    if folder is not None:
                        _store_job(folder, manifest, job, df, [], output_format)
                    if return_scores:
                        results[job.file] = df
    finally:
        if bar is not None:
            bar.close()
        network.train(was_training)

    invalid_df = pd.DataFrame(invalid, columns=INVALID_COLUMNS)
    if invalid_samples_log is not None:
        with atomic_write(invalid_samples_log, "w", newline="") as handle:
            invalid_df.to_csv(handle, index=False)
    if len(invalid_df):
        n_files = invalid_df["file"].nunique()
        warnings.warn(
            f"{len(invalid_df)} clip(s)/file(s) in {n_files} file(s) could not be scored "
            f"(first: {invalid_df.iloc[0]['file']}: {invalid_df.iloc[0]['error']}); "
            "use return_invalid_samples=True to get the table",
            stacklevel=2,
        )

    scores_df = None
    if return_scores:
        frames = []
        for job in jobs:
            if job.file in results:
                frames.append(results[job.file])
            elif folder is not None and job.file in manifest["files"]:
                entry = manifest["files"][job.file]
                frames.append(_read_part(folder / entry["part"], entry.get("format", "parquet")))
                invalid_df = pd.concat(
                    [invalid_df, pd.DataFrame([(job.file, s, e, m) for s, e, m in entry.get("errors", [])],
                                              columns=INVALID_COLUMNS)], ignore_index=True,
                ) if entry.get("errors") else invalid_df
        scores_df = pd.concat(frames) if frames else _empty_scores(classes)
        if frames and list(scores_df.columns) != classes:
            scores_df = scores_df[classes]
    if return_invalid_samples:
        return scores_df, invalid_df
    return scores_df


def _finish_job(job, scores, errors, classes):
    index = pd.MultiIndex.from_arrays(
        [np.full(len(job.times), job.file, dtype=object), job.times[:, 0], job.times[:, 1]], names=CLIP_INDEX
    )
    return pd.DataFrame(scores, index=index, columns=classes)


def _store_job(folder, manifest, job, df, errors, fmt):
    part = _part_name(job.file, fmt)
    _write_part(folder / part, df, fmt)
    try:
        sig = _file_signature(job.file)
    except OSError:  # input vanished (clip table naming a missing file): never counts as unchanged
        sig = {"size": -1, "mtime_ns": -1}
    manifest["files"][job.file] = {
        "part": part, "format": fmt, "key": job.key, "n_clips": int(len(df)),
        "errors": [list(e) for e in errors], "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **sig,
    }
    manifest.get("failed_files", {}).pop(job.file, None)
    _write_manifest(folder, manifest)


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
    final_clip = param.Selector(default=None, objects=[None, "remainder", "full", "extend"],
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
