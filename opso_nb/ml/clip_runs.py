"""Preprocess many clips of one file at once, with the values the clip-by-clip pipeline gives.

Prediction feeds a network thousands of consecutive clips of the same
recording. Run clip by clip, the default spectrogram pipeline opens the file,
seeks, decodes, transforms, rescales, resizes and normalises once per clip,
paying Python and dispatch overhead at every step. :class:`ClipRunPipeline`
runs the same steps on a run of clips:

* one read of the file per group of neighbouring clips (never the whole file
  unless the clips cover it);
* one short-time transform per run of hop-aligned clips
  (:meth:`opso_nb.spectrogram.Spectrogram.from_audio_clips`);
* the spectrogram steps on all clips at once (the clips side by side in one
  spectrogram), then one rescale, one resize call and one normalisation for
  the whole run, on one channel (identical channels are copied at the end).

Only pipelines made of steps whose batched form is known are accepted
(:meth:`ClipRunPipeline.plan` returns None otherwise, and for anything
random): the caller then uses the clip-by-clip path, which stays the reference.
Clips the batched path cannot reproduce exactly (a clip starting outside the
file, a clip shorter than the sample that does not reach the end of the file,
truncated files, resampling) are left to the caller too.
``tests/test_equivalence_fast_paths.py`` checks the values against the
clip-by-clip pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from opso_nb.audio import Audio
from opso_nb.audio_io import AudioReader
from opso_nb.preprocess.actions import (
    AudioClipLoader,
    AudioTrim,
    ScaleTensor,
    SpectrogramAction,
    SpectrogramBandpass,
    SpectrogramToTensor,
)
from opso_nb.sample import AudioSample
from opso_nb.utils import rescale

__all__ = ["ClipRunPipeline"]

#: Steps between the spectrogram and the tensor that act on each frequency row alone: applying
#: them to clips laid side by side equals applying them to each clip.
ROW_WISE_SPECTROGRAM_STEPS = (SpectrogramBandpass,)
#: Steps after the tensor that act on each value alone (so also on one channel standing for identical ones).
ELEMENT_WISE_TENSOR_STEPS = (ScaleTensor,)


@dataclass
class ClipRunPipeline:
    """A preprocessor's pipeline, run on many clips of one file at once.

    Build it with :meth:`plan`; call it with a file and clip times.

    Attributes
    ----------
    sample_duration : float
        Length of every preprocessed clip (s).
    sample_rate : int or None
        Rate the loader resamples to (Hz); files at another rate are left to
        the clip-by-clip path.
    spectrogram_class : type
        :class:`~opso_nb.spectrogram.Spectrogram` or ``MelSpectrogram``.
    spectrogram_kwargs : dict
        Settings of the spectrogram step.
    spectrogram_steps, tensor_steps : list of actions
        Steps run on the side-by-side spectrogram and on the stacked tensors.
    to_tensor : SpectrogramToTensor
    """

    sample_duration: float
    sample_rate: int | None
    spectrogram_class: type
    spectrogram_kwargs: dict
    to_tensor: SpectrogramToTensor
    spectrogram_steps: list = field(default_factory=list)
    tensor_steps: list = field(default_factory=list)

    @classmethod
    def plan(cls, preprocessor, bypass_augmentations=True) -> "ClipRunPipeline | None":
        """The batched form of ``preprocessor``'s active steps, or None when there is none.

        Accepted: a clip loader, trims that pad short clips (no random
        position), a dB spectrogram, row-wise spectrogram steps (bandpass), a
        grey tensor conversion (no colormap) and element-wise tensor steps
        (normalisation). Any other active step, including any augmentation
        left on, gives None.
        """
        pipeline = getattr(preprocessor, "pipeline", None)
        duration = getattr(preprocessor, "sample_duration", None)
        if pipeline is None or not duration:
            return None
        skip = bool(bypass_augmentations or getattr(preprocessor, "bypass_augmentations", False))
        active = [a for a in pipeline.values if not a.bypass and not (a.is_augmentation and skip)]
        if len(active) < 4 or any(a.is_augmentation for a in active):
            return None
        loader, *rest = active
        if type(loader) is not AudioClipLoader:
            return None
        trims = 0
        while rest and type(rest[0]) is AudioTrim:
            if rest[0].random_trim or not rest[0].extend:
                return None
            trims += 1
            rest.pop(0)
        if not trims or not rest or type(rest[0]) is not SpectrogramAction or not rest[0].dB_scale:
            return None
        spectrogram_class, kwargs = rest.pop(0).spectrogram_settings()
        spectrogram_steps = []
        while rest and type(rest[0]) in ROW_WISE_SPECTROGRAM_STEPS:
            spectrogram_steps.append(rest.pop(0))
        if not rest or type(rest[0]) is not SpectrogramToTensor or rest[0].colormap is not None:
            return None
        to_tensor = rest.pop(0)
        if not all(type(a) in ELEMENT_WISE_TENSOR_STEPS for a in rest):
            return None
        return cls(float(duration), loader.sample_rate, spectrogram_class, kwargs, to_tensor, spectrogram_steps,
                   list(rest))

    def __call__(self, path, times, memory_format=torch.contiguous_format):
        """Preprocess the clips of ``path`` that this pipeline can reproduce exactly.

        Parameters
        ----------
        path : str or Path
        times : array (n, 2)
            Clip start and end times (s), as given to the clip-by-clip path.
        memory_format : torch.memory_format
            Layout of the result, e.g. ``torch.channels_last`` for a network
            that wants it (same values).

        Returns
        -------
        (rows, data) : (numpy.ndarray of int, torch.Tensor or None)
            ``rows`` are the indices of ``times`` preprocessed here, ``data``
            their tensors ``[len(rows), C, H, W]`` (contiguous in
            ``memory_format``). The other clips are the caller's to preprocess
            clip by clip (they fail or need padding or resampling there).

        Raises
        ------
        Exception
            Whatever reading or transforming raised (e.g. NaN samples): the
            caller then preprocesses these clips one by one, which reports
            the failing clips alone.
        """
        times = np.asarray(times, dtype=float).reshape(-1, 2)
        with AudioReader(path) as reader:
            info = reader.info
            if info.truncated or (self.sample_rate is not None and int(self.sample_rate) != info.sample_rate):
                return np.zeros(0, dtype=int), None
            rate = info.sample_rate
            n_target = int(round(self.sample_duration * rate))
            rows, firsts = _reproducible_clips(times, rate, info.frames, n_target)
            if len(rows) == 0:
                return rows, None
            spectrograms = [None] * len(rows)
            for group in _neighbour_groups(firsts, n_target):
                lo, hi = int(firsts[group[0]]), min(info.frames, int(firsts[group[-1]]) + n_target)
                samples = reader.read(lo, hi, mono=True)
                if len(samples) < hi - lo:  # the decoder stopped early: clip by clip reports it
                    return np.zeros(0, dtype=int), None
                bounds = [((firsts[k] - lo) / rate, (firsts[k] - lo + n_target) / rate) for k in group]
                clips = self.spectrogram_class.from_audio_clips(Audio(samples, rate), bounds, **self.spectrogram_kwargs)
                for k, spectrogram in zip(group, clips, strict=True):
                    spectrograms[k] = spectrogram
        return rows, self._tensors(path, spectrograms, memory_format)

    def _tensors(self, path, spectrograms, memory_format):
        """The spectrogram steps on the clips side by side, then the tensor conversion and steps on the stack."""
        width = spectrograms[0].shape[1]
        if any(s.shape[1] != width for s in spectrograms):  # cannot happen with equal sample counts
            raise ValueError("clip spectrograms of different widths")
        side_by_side = spectrograms[0]._replace(
            spectrogram=np.concatenate([s.spectrogram for s in spectrograms], axis=1),
            times=np.arange(width * len(spectrograms), dtype=float))
        sample = AudioSample(path)
        sample.data = side_by_side
        for action in self.spectrogram_steps:
            action.go(sample)
        spec = sample.data
        n, rows = len(spectrograms), spec.shape[0]
        stack = spec.spectrogram.reshape(rows, n, width).transpose(1, 0, 2)
        sample.data = self._to_grey(stack, spec.decibel_limits)
        for action in self.tensor_steps:
            action.go(sample)
        data = sample.data.to(torch.float32)
        return data.expand(n, self.to_tensor.channels, *data.shape[2:]).contiguous(memory_format=memory_format)

    def _to_grey(self, stack, decibel_limits):
        """``[n, 1, height, width]`` of what :class:`SpectrogramToTensor` makes of each clip (one channel).

        The same operations as ``Spectrogram.to_image`` per clip (low
        frequencies at the bottom, rescaled from the decibel limits, bilinear
        antialiased resize, loud = 1 unless inverted), applied to the stack.
        """
        t = self.to_tensor
        rows, width = stack.shape[1:]
        shape = (t.height or rows, t.width or width)
        loudness = rescale(np.asarray(stack[:, ::-1], dtype=np.float32), decibel_limits, (0, 1))
        grey = torch.from_numpy(np.ascontiguousarray(loudness))[:, None]
        if shape != (rows, width):
            grey = torch.nn.functional.interpolate(grey, size=shape, mode="bilinear", align_corners=False,
                                                   antialias=True)
        return 1 - grey if t.invert else grey


def _reproducible_clips(times, rate, frames, n_target):
    """Indices of the clips whose samples are ``file[first : first + n_target]`` (zero-padded past the end).

    The clip-by-clip loader reads ``round(duration * rate)`` samples from
    ``round(start * rate)`` and the trim pads or cuts that to ``n_target``;
    a clip shorter than the sample that ends before the file does is padded
    in the middle of the file, which a run of clips cannot reproduce.
    """
    starts, ends = times[:, 0], times[:, 1]
    with np.errstate(invalid="ignore"):
        firsts = np.rint(starts * rate)
        loaded = np.rint((ends - starts) * rate)
        ok = (np.isfinite(firsts) & np.isfinite(loaded) & (starts >= 0) & (firsts < frames)
              & ((loaded >= n_target) | (firsts + loaded >= frames)))
    rows = np.flatnonzero(ok)
    return rows, firsts[rows].astype(np.int64)


def _neighbour_groups(firsts, n_target):
    """Clips (positions in ``firsts``) in groups read at once, in order of their first sample.

    A clip joins the group when it starts at most ``n_target`` samples after
    the group's end, so a read holds at most twice the samples of its clips,
    however the clips are spread over the file.
    """
    groups, end = [], None
    for k in np.argsort(firsts, kind="stable"):
        first = int(firsts[k])
        if end is None or first > end + n_target:
            groups.append([])
            end = first
        groups[-1].append(int(k))
        end = max(end, first + n_target)
    return groups
