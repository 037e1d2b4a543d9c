"""SafeDataset: the one path by which opso_nb loads samples without letting a bad one end a run.

Training, validation and class activation maps all read their samples through
a :class:`SafeDataset`. A sample fails when preprocessing raises (a corrupt or
truncated file, a clip past the end of a file ...) or when the preprocessed
tensor holds NaN or infinite values (which would silently poison scores and
weights). What then happens is the policy ``invalid_sample_behavior``:

- ``"substitute"`` (default): return the next sample that works (the failed one
  and any failures met on the way are recorded). Keeps batch sizes constant.
- ``"none"``: return None; the collate function drops it (the sample is skipped).
- ``"raise"``: record, then raise the error (it names the file, clip and step).

Every failure is recorded once per sample in :attr:`SafeDataset.failed_samples`,
a table in the one failure schema of :mod:`opso_nb.failures` (file, start_time,
end_time, stage, error; ``stage`` is ``"load"`` when the audio could not be
read, ``"preprocess"`` for any later step). DataLoader worker processes hold
their own copy of the dataset, so their records would be lost:
:meth:`SafeDataset.loader` returns a DataLoader whose batches carry the failures
back (``batch.failed_samples``) and adds them to this object's record in the
main process, so ``failed_samples`` is complete after iterating it.
"""
from __future__ import annotations

import warnings

import pandas as pd
import torch

from opso_nb.audio import AudioLoadError
from opso_nb.failures import FAILURE_COLUMNS, failure_record, failures_frame, summarize_failures
from opso_nb.ml.datasets import collate_audio_samples
from opso_nb.preprocess.utils import PreprocessingError
from opso_nb.utils import atomic_write

BEHAVIORS = ("substitute", "none", "raise")


class NonFiniteSampleError(ValueError):
    """A preprocessed sample holds NaN or infinite values."""


def failure_stage(error) -> str:
    """``"load"`` if ``error`` (or the error behind a PreprocessingError) is about reading the file,
    else ``"preprocess"``."""
    cause = error.__cause__ if isinstance(error, PreprocessingError) and error.__cause__ is not None else error
    return "load" if isinstance(cause, (AudioLoadError, OSError)) else "preprocess"


class SafeDataset(torch.utils.data.Dataset):
    """Wrap a dataset so that failing items follow a policy and are recorded.

    Parameters
    ----------
    dataset : torch Dataset
        E.g. :class:`~opso_nb.ml.datasets.AudioFileDataset`; its ``label_df``
        index (file or (file, start_time, end_time)) names failed samples.
    invalid_sample_behavior : {"substitute", "none", "raise"}
        See the module docstring.
    eager_eval : bool
        Try every sample now (:meth:`_build_index`), so that ``_valid_indices``
        and ``_invalid_indices`` are complete before use.
    warn : bool
        Warn (once per failing sample) naming the file and the error.

    Attributes
    ----------
    _valid_indices, _invalid_indices : set of int
        Dataset rows known to load, and known to fail.
    """

    def __init__(self, dataset, invalid_sample_behavior="substitute", eager_eval=False, warn=False):
        if invalid_sample_behavior not in BEHAVIORS:
            raise ValueError(f"invalid_sample_behavior must be one of {BEHAVIORS}, got {invalid_sample_behavior!r}")
        self.dataset = dataset
        self.invalid_sample_behavior = invalid_sample_behavior
        self.warn = warn
        self._valid_indices = set()
        self._invalid_indices = set()
        self._failures = {}  # dataset row -> failure record (the first failure of that row)
        if eager_eval:
            self._build_index()

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):  # label_df, classes, preprocessor ... of the wrapped dataset
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    # ------------------------------------------------------------------ loading
    def _describe(self, i):
        df = getattr(self.dataset, "label_df", None)
        if df is None:
            return str(i), None, None
        key = df.index[i]
        if isinstance(key, tuple):
            return str(key[0]), float(key[1]), float(key[2])
        return str(key), None, None

    def _record(self, i, error) -> dict:
        file, start, end = self._describe(i)
        record = {"index": int(i), **failure_record(file, error, start, end, failure_stage(error))}
        self._note(record)
        if self.warn:
            warnings.warn(f"bad sample {file} [{start}-{end} s]: {record['error']}", UserWarning, stacklevel=4)
        return record

    def _note(self, record):
        self._invalid_indices.add(record["index"])
        self._valid_indices.discard(record["index"])
        self._failures.setdefault(record["index"], record)

    def _load(self, i):
        """The preprocessed sample of row ``i``; raises on any failure, including non-finite data."""
        sample = self.dataset[i]
        data = getattr(sample, "data", None)
        if isinstance(data, torch.Tensor) and data.is_floating_point() and not torch.isfinite(data).all():
            file, start, end = self._describe(i)
            where = file if start is None else f"{file} [{start:g}-{end:g} s]"
            raise NonFiniteSampleError(f"{where}: the preprocessed sample holds NaN or infinite values")
        return sample

    def _safe_get_item(self, index):
        """Row ``index``'s sample, or None if it fails (the failure is recorded)."""
        sample, _ = self._try(int(index))
        return sample

    def _try(self, i):
        """(sample or None, new failure record or None) for row ``i``."""
        try:
            sample = self._load(i)
        except Exception as error:  # bad input is normal: record it, the caller applies the policy
            return None, self._record(i, error)
        self._valid_indices.add(i)
        return sample, None

    def _get(self, i):
        """(sample or None, new failure records, row actually returned) under the policy."""
        n = len(self.dataset)
        if n == 0:
            raise IndexError("SafeDataset: the wrapped dataset is empty")
        i = int(i) % n
        if self.invalid_sample_behavior == "raise":
            try:
                sample = self._load(i)
            except Exception as error:
                self._record(i, error)
                raise
            self._valid_indices.add(i)
            return sample, [], i
        if self.invalid_sample_behavior == "none" and i in self._invalid_indices:
            return None, [], i  # known bad (recorded already): don't pay for it again
        failures = []
        tries = n if self.invalid_sample_behavior == "substitute" else 1
        for k in range(tries):
            j = (i + k) % n
            if k and j in self._invalid_indices:
                continue  # substituting: skip rows known to fail
            sample, failure = self._try(j)
            if failure is None:
                return sample, failures, j
            failures.append(failure)
        if self.invalid_sample_behavior == "substitute":
            first = failures[0] if failures else self._failures.get(i)
            raise RuntimeError(f"SafeDataset: all {n} samples failed; first error: {first['file']}: {first['error']}")
        return None, failures, i

    def __getitem__(self, index):
        sample, _, _ = self._get(index)
        return sample

    def _build_index(self):
        """Try every sample once, filling ``_valid_indices`` and ``_invalid_indices``."""
        for i in range(len(self.dataset)):
            if i not in self._valid_indices and i not in self._invalid_indices:
                self._try(i)

    @property
    def is_index_built(self) -> bool:
        """True once every sample is known to load or to fail."""
        return self.num_samples_examined == len(self.dataset)

    @property
    def num_samples_examined(self) -> int:
        """Number of samples known to load or to fail."""
        return len(self._valid_indices) + len(self._invalid_indices)

    # ---------------------------------------------------------------- reporting
    @property
    def failed_samples(self) -> pd.DataFrame:
        """One row per failed sample: file, start_time, end_time, stage, error (see :mod:`opso_nb.failures`)."""
        records = [self._failures[i] for i in sorted(self._failures)]
        return failures_frame([{k: r[k] for k in FAILURE_COLUMNS} for r in records])

    @property
    def _invalid_samples(self) -> set:
        """Index values (file, or (file, start_time, end_time)) of the samples that failed."""
        df = getattr(self.dataset, "label_df", None)
        if df is None:
            return set(self._invalid_indices)
        return {df.index[i] for i in self._invalid_indices}

    @property
    def invalid_samples(self) -> set:
        """Failed clips as (file, start_time, end_time) tuples (times None for whole files)."""
        return set(zip(*(self.failed_samples[c] for c in ("file", "start_time", "end_time"))))

    def report(self, log=None) -> set:
        """Warn about failed samples, optionally list them in a text file, and return them.

        Parameters
        ----------
        log : str or Path, optional
            Tab-separated file (written atomically) with one row per failed
            sample: file, start_time, end_time, stage, error.

        Returns
        -------
        set
            ``_invalid_samples``: index values of the samples that failed.
        """
        failures = self.failed_samples
        if log is not None:
            with atomic_write(log) as handle:
                failures.to_csv(handle, sep="\t", index=False)
        if len(failures):
            warnings.warn(summarize_failures(failures), UserWarning, stacklevel=2)
        return self._invalid_samples

    # ------------------------------------------------------------------ batches
    def loader(self, batch_size=1, shuffle=False, num_workers=0, **kwargs):
        """DataLoader over this dataset that brings worker failures back into :attr:`failed_samples`.

        Batches are :class:`~opso_nb.ml.datasets.AudioBatch` ``(data, labels)`` with
        ``clips``, ``indices`` (dataset rows) and ``failed_samples`` (failure records).
        Other keyword arguments go to ``torch.utils.data.DataLoader``.
        """
        dl = torch.utils.data.DataLoader(_Reporting(self), batch_size=batch_size, shuffle=shuffle,
                                         num_workers=num_workers, collate_fn=collate_reported, **kwargs)
        return _ReportingLoader(dl, self)


class _Reporting(torch.utils.data.Dataset):
    """Items are (sample or None, failure records, row) so failures travel back from worker processes."""

    def __init__(self, safe):
        self.safe = safe

    def __len__(self):
        return len(self.safe)

    def __getitem__(self, i):
        return self.safe._get(i)


def collate_reported(items):
    """Collate ``(sample or None, failures, row)`` items into an AudioBatch with ``indices`` and ``failed_samples``."""
    batch = collate_audio_samples([sample for sample, _, _ in items])
    batch.indices = [row for sample, _, row in items if sample is not None]
    batch.failed_samples = [f for _, failures, _ in items for f in failures]
    return batch


class _ReportingLoader:
    def __init__(self, dataloader, safe):
        self.dataloader = dataloader
        self.safe = safe

    def __len__(self):
        return len(self.dataloader)

    def __iter__(self):
        for batch in self.dataloader:
            for record in batch.failed_samples:
                self.safe._note(record)
            self.safe._valid_indices.update(batch.indices)
            yield batch
