"""Samples travelling through a preprocessing pipeline: :class:`Sample`, :class:`AudioSample`.

A sample knows where it came from (``source`` file, ``start_time`` and
``duration`` in seconds), its ``labels`` (a ``pd.Series`` indexed by class) and
its current ``data``: an :class:`~opso_nb.audio.Audio`, then a
:class:`~opso_nb.spectrogram.Spectrogram`, then a ``torch.Tensor`` as the
pipeline runs. :func:`collate_samples` stacks preprocessed samples into a batch.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch


class Sample:
    """Data and labels of one sample; parent of the specific sample types.

    Parameters
    ----------
    data : object, optional
        The sample's content (e.g. a tensor).

    Attributes
    ----------
    data : object
    labels : pd.Series or None
        0/1 value per class (index = class names).
    """

    def __init__(self, data=None):
        self.data = data
        self.labels = None


class AudioSample(Sample):
    """A clip of an audio file plus labels and the data produced for it.

    Parameters
    ----------
    source : str, Path or Audio
        Audio file (kept as a string), or an already loaded Audio object.
    start_time : float, optional
        Start of the clip in the file (s); None = start of the file.
    duration : float, optional
        Length of the clip (s); None = to the end of the file.
    labels : pd.Series or dict, optional
        0/1 value per class (index = class names).
    trace : pd.Series, optional
        Output of each pipeline step (filled by ``forward(..., trace=True)``).
    target_duration : float, optional
        Length the preprocessor should produce (s); set by the preprocessor.

    Attributes
    ----------
    data : Audio, Spectrogram or torch.Tensor
        Current state of the sample in the pipeline (None before loading).
    preprocessing_exception : Exception or None
        Set when preprocessing failed (by safe datasets).
    cam, gbp_maps : optional
        Class activation maps / guided back-propagation maps, when computed.
    """

    def __init__(self, source, start_time=None, duration=None, labels=None, trace=None, target_duration=None):
        super().__init__(data=None)
        self.source = str(source) if isinstance(source, (str, Path)) else source
        self.start_time = None if start_time is None else float(start_time)
        self.duration = None if duration is None else float(duration)
        if labels is not None and not isinstance(labels, pd.Series):
            labels = pd.Series(labels)
        self.labels = labels
        self.target_duration = target_duration
        self.trace = trace
        self.preprocessing_exception = None
        self.cam = None
        self.gbp_maps = None

    @classmethod
    def from_series(cls, labels_series: pd.Series) -> "AudioSample":
        """Sample from one row of a clip table.

        The row's ``name`` is either a ``(file, start_time, end_time)`` tuple or a
        file path (whole file); its values are the labels.
        """
        name = labels_series.name
        if isinstance(name, tuple):
            if len(name) != 3:
                raise ValueError(f"clip table row name must be (file, start_time, end_time), got {name!r}")
            source, start, end = name
            start, end = float(start), float(end)
            if not np.isfinite(start) or not np.isfinite(end) or end <= start:
                raise ValueError(f"clip {source}: bad times start_time={start}, end_time={end}")
            return cls(source, start_time=start, duration=end - start, labels=labels_series)
        return cls(name, labels=labels_series)

    @property
    def end_time(self):
        """``start_time + duration`` (s), or None when either is unknown."""
        if self.start_time is None or self.duration is None:
            return None
        return self.start_time + self.duration

    @property
    def categorical_labels(self):
        """Names of the classes labelled 1 (present)."""
        if self.labels is None:
            return []
        return list(self.labels[self.labels.astype(float) == 1].index)

    def copy(self) -> "AudioSample":
        """Deep copy (data and labels included)."""
        return copy.deepcopy(self)

    def __repr__(self):
        labels = "None" if self.labels is None else " ".join(f"{k} {v:g}" for k, v in self.labels.items()
                                                            if isinstance(v, (int, float, np.number)))
        return (f"AudioSample(source={self.source!r}, start_time={self.start_time}, "
                f"end_time={self.end_time}, labels={labels})")


def collate_samples(samples) -> dict:
    """Stack preprocessed samples into one batch.

    Parameters
    ----------
    samples : iterable of Sample
        Each with ``data`` a tensor (all the same shape) and ``labels`` a
        Series, list or array (all the same length), or None.

    Returns
    -------
    dict
        ``{"samples": float32 tensor [batch, *data shape], "labels": float32
        tensor [batch, n_classes]}``; ``"labels"`` is None unless every sample
        has labels.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("collate_samples needs at least one sample")
    data = torch.stack([torch.as_tensor(s.data, dtype=torch.float32) for s in samples])
    labels = None
    if all(getattr(s, "labels", None) is not None for s in samples):
        labels = torch.as_tensor(np.stack([np.asarray(s.labels, dtype=np.float32) for s in samples]))
    return {"samples": data, "labels": labels}
