"""torch Datasets that preprocess clips of audio files on demand.

- :class:`AudioFileDataset`: one sample per row of a clip table indexed
  (file, start_time, end_time) (or per file of a file-indexed table / list of
  paths); label columns are 0/1 per class.
- :class:`AudioSplittingDataset`: splits whole files into ``sample_duration``
  clips on the fly (only file headers are read up front; each item reads just
  its own segment), for prediction on long recordings.
- :func:`collate_audio_samples`: ``DataLoader`` collate giving
  ``(data [B, C, H, W], labels [B, n_classes] or None)``.

A dataset can keep its preprocessed samples between epochs
(``cache_bytes``): only while its pipeline has no active augmentation (so a
sample is the same every time) and its settings have not changed since
:meth:`AudioFileDataset.begin_epoch`; the training loop uses it for the
validation set always and for the training set when augmentation is off.

Items are preprocessed :class:`~opso_nb.sample.AudioSample` objects: ``data``,
``labels`` and provenance (``source``, ``start_time``, ``duration``). A bad
sample raises :class:`~opso_nb.preprocess.utils.PreprocessingError` naming the
file, clip and step; wrap a dataset in :class:`~opso_nb.ml.safe_dataset.SafeDataset`
to skip and record bad samples instead.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import param
import torch

from opso_nb.failures import failures_frame
from opso_nb.sample import AudioSample
from opso_nb.utils import CLIP_INDEX, make_clip_df


class SampleCache(param.Parameterized):
    """How much preprocessed data a dataset may keep between epochs."""

    max_bytes = param.Integer(
        default=512 * 2**20, bounds=(0, None),
        doc="Bytes of preprocessed tensors each training or validation dataset keeps between epochs when its "
            "pipeline has no active augmentation (0: none). Serves num_workers=0, where samples are made in "
            "this process.")


#: Settings of the preprocessed-sample cache used by CNN training and validation.
CACHE = SampleCache(name="CACHE")


def _pipeline_fingerprint(preprocessor, bypass_augmentations):
    """Text describing everything that makes a sample, or None when a sample may differ from call to call.

    None when an augmentation would run (random) or the pipeline cannot describe itself.
    """
    pipeline = getattr(preprocessor, "pipeline", None)
    if pipeline is None:
        return None
    skip = bypass_augmentations or getattr(preprocessor, "bypass_augmentations", False)
    if any(a.is_augmentation and not a.bypass and not skip for a in pipeline.values):
        return None
    try:
        with warnings.catch_warnings():  # an unregistered class still describes its pipeline
            warnings.simplefilter("ignore")
            return json.dumps(preprocessor.to_dict(), sort_keys=True, default=repr)
    except (AttributeError, TypeError, ValueError):  # unregistered actions: nothing to compare settings with
        return None


def _as_table(samples) -> pd.DataFrame:
    if isinstance(samples, pd.DataFrame):
        df = samples
        if list(df.index.names) != CLIP_INDEX and all(c in df.columns for c in CLIP_INDEX):
            df = df.set_index(CLIP_INDEX)
        if isinstance(df.index, pd.MultiIndex):
            if list(df.index.names) != CLIP_INDEX and df.index.nlevels != 3:
                raise ValueError(f"clip table index must be (file, start_time, end_time), got {df.index.names}")
            starts = pd.to_numeric(df.index.get_level_values(1), errors="coerce").to_numpy(dtype=float)
            ends = pd.to_numeric(df.index.get_level_values(2), errors="coerce").to_numpy(dtype=float)
            bad = np.isnan(starts) | np.isnan(ends) | (ends <= starts)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"clip table row {df.index[i]!r}: start_time/end_time missing or end <= start "
                                 f"({int(bad.sum())} bad rows)")
        return df
    if isinstance(samples, (str, Path)):
        samples = [samples]
    files = [str(f) for f in samples]
    return pd.DataFrame(index=pd.Index(files, name="file"))


class AudioFileDataset(torch.utils.data.Dataset):
    """Preprocessed samples, one per row of ``samples``.

    Parameters
    ----------
    samples : pd.DataFrame or list of paths
        Clip table indexed (file, start_time, end_time), a table indexed by file
        (whole files), or a list of files. Columns are 0/1 labels per class.
    preprocessor : BasePreprocessor
        Turns each clip into a tensor (e.g. ``SpectrogramPreprocessor``).
    bypass_augmentations : bool
        Skip augmentation steps (validation/prediction).
    return_labels : bool
        Attach the row's labels to each sample (False: ``labels`` is None).
    cache_bytes : int
        Keep up to this many bytes of preprocessed samples for the next
        epochs (0: none; see :meth:`begin_epoch`). Samples made in DataLoader
        worker processes are not kept.

    Attributes
    ----------
    label_df : pd.DataFrame
        The table (also ``.df``); ``classes`` its columns.
    invalid_samples : set
        Always empty here; :class:`AudioSplittingDataset` lists the files it could not split.
    """

    def __init__(self, samples, preprocessor, bypass_augmentations=False, return_labels=True, cache_bytes=0):
        self.label_df = _as_table(samples)
        self.preprocessor = preprocessor
        self.return_labels = return_labels
        self.bypass_augmentations = bypass_augmentations
        self.invalid_samples = set()
        self.cache_bytes = int(cache_bytes)
        self._clear_cache()

    @property
    def df(self):
        return self.label_df

    @property
    def classes(self):
        return list(self.label_df.columns)

    def __len__(self):
        return len(self.label_df)

    def class_counts(self) -> pd.Series:
        """Number of samples labelled 1 for each class (index = class names)."""
        return self.label_df.astype(float).eq(1).sum().astype(int)

    def _sample(self, i) -> AudioSample:
        row = self.label_df.iloc[i]
        sample = AudioSample.from_series(row)
        if not self.return_labels or len(self.label_df.columns) == 0:
            sample.labels = None
        return sample

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = int(i) % len(self)
        kept = self._cache.get(i)
        if kept is not None:
            return copy.copy(kept)  # a new sample around the same tensor: our steps never change data in place
        sample = self.preprocessor.forward(self._sample(i), bypass_augmentations=self.bypass_augmentations)
        if (self._cache_key is not None and isinstance(sample.data, torch.Tensor)
                and torch.utils.data.get_worker_info() is None):  # a worker's copy would be thrown away
            size = sample.data.element_size() * sample.data.nelement()
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[i] = copy.copy(sample)
                self._cached_bytes += size
        return sample

    def begin_epoch(self):
        """Keep the samples cached so far only if they are still what the preprocessor makes.

        Call before each pass over the data: cached samples are dropped when
        the preprocessor's settings changed since the last call, and none are
        kept while an augmentation would run. Returns the number of samples
        kept.
        """
        key = _pipeline_fingerprint(self.preprocessor, self.bypass_augmentations) if self.cache_bytes > 0 else None
        if key is None or key != self._cache_key:
            self._clear_cache()
        self._cache_key = key
        return len(self._cache)

    def _clear_cache(self):
        self._cache, self._cached_bytes, self._cache_key = {}, 0, None

    def __getstate__(self):
        # DataLoader workers get a copy of the dataset: not the cache, which they could not fill for us anyway
        state = dict(self.__dict__)
        state.update(_cache={}, _cached_bytes=0, _cache_key=None)
        return state

    def _subset(self, df):
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.label_df = df
        new.invalid_samples = set()
        new._clear_cache()
        return new

    def head(self, n=5):
        """Dataset of the first ``n`` rows."""
        return self._subset(self.label_df.head(n))

    def sample(self, n=None, frac=None, random_state=None, **kwargs):
        """Dataset of a random subset of rows (as ``DataFrame.sample``)."""
        return self._subset(self.label_df.sample(n=n, frac=frac, random_state=random_state, **kwargs))

    def class_subset(self, class_subset):
        """Dataset keeping only the label columns in ``class_subset`` (a name or list)."""
        if isinstance(class_subset, str):
            class_subset = [class_subset]
        missing = [c for c in class_subset if c not in self.label_df.columns]
        if missing:
            raise KeyError(f"classes {missing} not in the table's columns {self.classes}")
        return self._subset(self.label_df[list(class_subset)])

    def sample_per_class(self, n, random_state=None, replace=False):
        """Dataset of ``n`` rows positive for each class (fewer if a class has fewer, unless ``replace``).

        A row positive for two classes may be drawn for both.
        """
        rng = np.random.default_rng(random_state)
        picks = []
        for c in self.classes:
            rows = np.flatnonzero(self.label_df[c].to_numpy(dtype=float) == 1)
            if len(rows) == 0:
                continue
            k = n if replace else min(n, len(rows))
            picks.extend(rng.choice(rows, size=k, replace=replace).tolist())
        return self._subset(self.label_df.iloc[picks])

    def __repr__(self):
        return f"{type(self).__name__}({len(self)} samples, classes={self.classes})"


class AudioSplittingDataset(AudioFileDataset):
    """Split whole files into ``preprocessor.sample_duration`` clips; one sample per clip.

    Parameters
    ----------
    samples : list of paths or file-indexed pd.DataFrame
        Files; label columns of a file-indexed table are copied to its clips.
    preprocessor : BasePreprocessor
        Must have ``sample_duration`` (s).
    overlap_fraction : float
        Overlap of consecutive clips as a fraction of ``sample_duration``, in [0, 1)
        (``clip_overlap_fraction`` is the newer spelling).
    final_clip : {None, "remainder", "full", "extend"}
        What to do with the end of a file shorter than a clip (see ``generate_clip_times_df``).
    clip_overlap : float, optional
        Overlap in seconds instead of a fraction.
    clip_overlap_fraction : float, optional
        Same as ``overlap_fraction``.
    bypass_augmentations : bool
        Skip augmentation steps (default True: this class is for prediction).
    return_labels : bool
        Attach copied file labels to each sample.

    Attributes
    ----------
    clip_df : pd.DataFrame
        Clips indexed (file, start_time, end_time), plus copied labels (also ``label_df``).
    invalid_samples : set of str
        Files whose headers could not be read; they produce no clips.
    invalid_files : pd.DataFrame
        The same files with the reason, in the failure-table schema of :mod:`opso_nb.failures`.
    """

    def __init__(self, samples, preprocessor, overlap_fraction=0, final_clip=None, *, clip_overlap=None,
                 clip_overlap_fraction=None, bypass_augmentations=True, return_labels=True):
        duration = getattr(preprocessor, "sample_duration", None)
        if not duration:
            raise ValueError("AudioSplittingDataset needs a preprocessor with sample_duration (s)")
        if clip_overlap_fraction is None:
            clip_overlap_fraction = overlap_fraction
        if clip_overlap is None:
            if not 0 <= clip_overlap_fraction < 1:
                raise ValueError(f"overlap_fraction must be in [0, 1), got {clip_overlap_fraction}")
            clip_overlap = clip_overlap_fraction * duration
        files_df = _as_table(samples)
        if isinstance(files_df.index, pd.MultiIndex):
            raise ValueError("AudioSplittingDataset splits whole files: give a list of files or a file-indexed table")
        clips, invalid = make_clip_df(list(files_df.index), duration, clip_overlap, final_clip,
                                      return_invalid_samples=True)
        # unreadable files may come back as rows without times; they make no clips
        clips = clips[~pd.isna(clips.index.get_level_values("start_time"))]
        if len(files_df.columns):
            labels = files_df.reindex(clips.index.get_level_values("file")).to_numpy()
            clips = pd.DataFrame(labels, index=clips.index, columns=files_df.columns)
        self.invalid_files = _unreadable_files_table(invalid)
        super().__init__(clips, preprocessor, bypass_augmentations=bypass_augmentations, return_labels=return_labels)
        self.invalid_samples = set(self.invalid_files["file"])

    @property
    def clip_df(self):
        return self.label_df


def _unreadable_files_table(invalid) -> pd.DataFrame:
    """Failure table (stage "load") from ``make_clip_df``'s invalid files: a table with a reason, or bare paths."""
    if isinstance(invalid, pd.DataFrame):
        records = invalid.to_dict("records")
    else:
        records = [{"file": f, "error": "the file's header could not be read"} for f in invalid]
    return failures_frame([{**r, "stage": "load"} for r in records])


class AudioBatch(tuple):
    """``(data, labels)`` from :func:`collate_audio_samples`, plus provenance.

    Attributes
    ----------
    clips : list of (file, start_time, end_time)
        One per row of ``data``.
    indices : list of int
        Dataset row of each row of ``data`` (filled by
        :meth:`~opso_nb.ml.safe_dataset.SafeDataset.loader`; empty otherwise).
    failed_samples : list of dict
        Samples dropped from this batch, as failure records (file, start_time,
        end_time, stage, error), reported by
        :class:`~opso_nb.ml.safe_dataset.SafeDataset` from any worker process.
    """

    clips: list
    indices: list
    failed_samples: list


def collate_audio_samples(samples):
    """Stack preprocessed samples for a DataLoader: ``(data [B, C, H, W], labels [B, n] or None)``.

    ``None`` items (skipped bad samples) are dropped; an all-bad batch gives
    ``data`` of shape [0]. Labels are None unless every sample has them.
    """
    good = [s for s in samples if s is not None]
    if good:
        data = torch.stack([torch.as_tensor(s.data, dtype=torch.float32) for s in good])
    else:
        data = torch.zeros(0)
    labels = None
    if good and all(s.labels is not None for s in good):
        labels = torch.as_tensor(np.stack([s.labels.to_numpy(dtype=np.float32) for s in good]))
    batch = AudioBatch((data, labels))
    batch.clips = [(s.source, s.start_time, s.end_time) for s in good]
    batch.indices = []
    batch.failed_samples = []
    return batch
