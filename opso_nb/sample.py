"""One clip travelling through a preprocessing pipeline: :class:`AudioSample`.

A sample knows where it came from (``source`` file, ``start_time`` and
``duration`` in seconds), its ``labels`` (a ``pd.Series`` indexed by class) and
its current ``data``: an :class:`~opso_nb.audio.Audio`, then a
:class:`~opso_nb.spectrogram.Spectrogram`, then a ``torch.Tensor`` as the
pipeline runs.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd


class AudioSample:
    """A clip of an audio file plus labels and the data produced for it.

    Parameters
    ----------
    source : str or Path
        Audio file.
    start_time : float, optional
        Start of the clip in the file (s); None = start of the file.
    duration : float, optional
        Length of the clip (s); None = to the end of the file.
    labels : pd.Series, optional
        0/1 value per class (index = class names).
    target_duration : float, optional
        Length the preprocessor should produce (s); set by the preprocessor.

    Attributes
    ----------
    data : Audio, Spectrogram or torch.Tensor
        Current state of the sample in the pipeline (None before loading).
    trace : pd.Series or None
        Output of each pipeline step when ``forward(..., trace=True)``.
    preprocessing_exception : Exception or None
        Set when preprocessing failed (by safe datasets).
    """

    def __init__(self, source, start_time=None, duration=None, labels=None, target_duration=None, trace=None):
        self.source = str(source)
        self.start_time = None if start_time is None else float(start_time)
        self.duration = None if duration is None else float(duration)
        if labels is not None and not isinstance(labels, pd.Series):
            labels = pd.Series(labels)
        self.labels = labels
        self.target_duration = target_duration
        self.data = None
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
