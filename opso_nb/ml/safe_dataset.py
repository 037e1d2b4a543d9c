"""SafeDataset: bad samples are recorded and skipped or replaced instead of ending a run.

Policies (``invalid_sample_behavior``):

- ``"substitute"`` (default): return the next sample that works (the failed one
  and any failures met on the way are recorded). Keeps batch sizes constant
  during training.
- ``"none"``: return None; :func:`~opso_nb.ml.datasets.collate_audio_samples`
  drops it (the sample is skipped).
- ``"raise"``: record, then raise the error (it names the file, clip and step).

Failures are in :attr:`SafeDataset.failed_samples` (a DataFrame: file,
start_time, end_time, error). DataLoader worker processes hold their own copy of
the dataset, so their records would be lost; :meth:`SafeDataset.loader` returns
a DataLoader-like iterable whose items carry the failures back inside each
batch (``batch.failed_samples``) and adds them to this object's record in the
main process. Iterate with it and ``failed_samples`` is complete afterwards.
"""
from __future__ import annotations

import warnings

import pandas as pd
import torch

BEHAVIORS = ("substitute", "none", "raise")


class SafeDataset(torch.utils.data.Dataset):
    """Wrap a dataset so that failing items follow a policy and are recorded.

    Parameters
    ----------
    dataset : torch Dataset
        E.g. :class:`~opso_nb.ml.datasets.AudioFileDataset`.
    invalid_sample_behavior : {"substitute", "none", "raise"}
        See the module docstring.
    warn : bool
        Warn (once per failing sample) naming the file and the error.
    """

    def __init__(self, dataset, invalid_sample_behavior="substitute", warn=False):
        if invalid_sample_behavior not in BEHAVIORS:
            raise ValueError(f"invalid_sample_behavior must be one of {BEHAVIORS}, got {invalid_sample_behavior!r}")
        self.dataset = dataset
        self.invalid_sample_behavior = invalid_sample_behavior
        self.warn = warn
        self._failures = []  # list of dicts
        self._invalid_indices = set()

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):  # label_df, classes, preprocessor ... of the wrapped dataset
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _describe(self, i):
        df = getattr(self.dataset, "label_df", None)
        if df is not None:
            key = df.index[i]
            if isinstance(key, tuple):
                return str(key[0]), float(key[1]), float(key[2])
            return str(key), None, None
        return str(i), None, None

    def _record(self, i, err):
        file, start, end = self._describe(i)
        rec = {"index": int(i), "file": file, "start_time": start, "end_time": end,
               "error": f"{type(err).__name__}: {err}"}
        self._invalid_indices.add(int(i))
        if self.warn:
            warnings.warn(f"bad sample {file} [{start}-{end} s]: {rec['error']}", UserWarning, stacklevel=3)
        return rec

    def _get(self, i):
        """(sample or None, new failure records)."""
        n = len(self.dataset)
        i = int(i) % n if n else int(i)
        failures = []
        tries = n if self.invalid_sample_behavior == "substitute" else 1
        for k in range(max(1, tries)):
            j = (i + k) % n
            if self.invalid_sample_behavior == "substitute" and j in self._invalid_indices and k < n - 1:
                continue  # known bad in this process: don't pay for it again
            try:
                return self.dataset[j], failures
            except Exception as err:
                failures.append(self._record(j, err))
                if self.invalid_sample_behavior == "raise":
                    self._failures.extend(failures)
                    raise
        if self.invalid_sample_behavior == "substitute":
            self._failures.extend(failures)
            raise RuntimeError(f"SafeDataset: all {n} samples failed; first error: "
                               f"{failures[0]['file']}: {failures[0]['error']}" if failures else "no samples")
        return None, failures

    def __getitem__(self, i):
        sample, failures = self._get(i)
        self._failures.extend(failures)
        return sample

    @property
    def failed_samples(self) -> pd.DataFrame:
        """Every failure seen: index (dataset row), file, start_time, end_time, error (one row per failing sample)."""
        df = pd.DataFrame(self._failures, columns=["index", "file", "start_time", "end_time", "error"])
        return df.drop_duplicates(subset=["index"]).reset_index(drop=True)

    @property
    def invalid_samples(self):
        """Files (and clips) that failed, as a set of (file, start_time, end_time)."""
        return set(zip(self.failed_samples.file, self.failed_samples.start_time, self.failed_samples.end_time))

    def report(self) -> str:
        """One line per failed sample."""
        df = self.failed_samples
        if df.empty:
            return "no failed samples"
        lines = [f"{len(df)} sample(s) failed:"]
        lines += [f"  {r.file} [{r.start_time}-{r.end_time} s]: {r.error}" for r in df.itertuples()]
        return "\n".join(lines)

    def loader(self, batch_size=1, shuffle=False, num_workers=0, **kwargs):
        """DataLoader over this dataset that brings worker failures back into :attr:`failed_samples`.

        Batches are :class:`~opso_nb.ml.datasets.AudioBatch` ``(data, labels)``.
        """
        from opso_nb.ml.datasets import collate_audio_samples

        dl = torch.utils.data.DataLoader(_Reporting(self), batch_size=batch_size, shuffle=shuffle,
                                         num_workers=num_workers, collate_fn=collate_audio_samples, **kwargs)
        return _ReportingLoader(dl, self)


class _Reporting(torch.utils.data.Dataset):
    """Items are (sample or None, failure records) so failures travel from workers."""

    def __init__(self, safe):
        self.safe = safe

    def __len__(self):
        return len(self.safe)

    def __getitem__(self, i):
        return self.safe._get(i)


class _ReportingLoader:
    def __init__(self, dataloader, safe):
        self.dataloader = dataloader
        self.safe = safe

    def __len__(self):
        return len(self.dataloader)

    def __iter__(self):
        for batch in self.dataloader:
            self.safe._failures.extend(batch.failed_samples)
            for f in batch.failed_samples:
                self.safe._invalid_indices.add(f["index"])
            yield batch
