"""A minimal spectrogram preprocessor, used by :class:`~opso_nb.ml.cnn.CNN` only when
``opso_nb.preprocess.preprocessors.SpectrogramPreprocessor`` is not available.

It loads the clip (only the requested segment), pads it to ``sample_duration``,
makes a dB spectrogram, keeps a frequency band and resizes it to ``out_shape``.
No augmentation. The full pipeline with augmentations is
``opso_nb.preprocess.preprocessors.SpectrogramPreprocessor``.
"""
from __future__ import annotations

import param
import torch


class ClipSample:
    """One clip to preprocess: ``source`` file, ``start_time`` and ``duration`` (s), ``labels``; ``data`` after."""

    def __init__(self, source, start_time=None, duration=None, labels=None):
        self.source = str(source)
        self.start_time = start_time
        self.duration = duration
        self.labels = labels
        self.data = None
        self.preprocessing_exception = None

    @property
    def end_time(self):
        if self.start_time is None or self.duration is None:
            return None
        return self.start_time + self.duration

    def __repr__(self):
        return f"ClipSample(source={self.source!r}, start_time={self.start_time}, end_time={self.end_time})"


class SimpleSpectrogramPreprocessor(param.Parameterized):
    """Clip -> dB spectrogram tensor ``[channels, height, width]`` in [0, 1] (loud = high)."""

    sample_duration = param.Number(2.0, bounds=(0, None), doc="Clip length (s); shorter clips are padded with silence.")
    out_shape = param.NumericTuple((224, 224, 1), length=3, doc="(height, width, channels) of the tensor.")
    sample_rate = param.Integer(None, allow_None=True, doc="Resample to this rate (Hz); None keeps the file's.")
    window_samples = param.Integer(512, bounds=(16, None), doc="FFT window (samples).")
    overlap_fraction = param.Number(0.5, bounds=(0, 0.95), doc="Overlap of consecutive windows.")
    min_f = param.Number(0.0, bounds=(0, None), doc="Lowest frequency kept (Hz).")
    max_f = param.Number(11025.0, bounds=(0, None), doc="Highest frequency kept (Hz).")
    decibel_limits = param.NumericTuple((-100, -20), length=2, doc="dB range mapped to 0..1.")

    def __init__(self, sample_duration=2.0, out_shape=(224, 224, 1), **params):
        super().__init__(sample_duration=float(sample_duration), out_shape=tuple(int(v) for v in out_shape), **params)

    def forward(self, sample, bypass_augmentations=False):
        """Fill ``sample.data``; ``sample`` has ``source`` and ``start_time`` (s) (or is a (file, start, end) tuple)."""
        from opso_nb.audio import Audio
        from opso_nb.spectrogram import Spectrogram

        if isinstance(sample, tuple):
            sample = ClipSample(sample[0], sample[1], None)
        start = float(sample.start_time or 0.0)
        audio = Audio.from_file(sample.source, sample_rate=self.sample_rate, offset=start,
                                duration=self.sample_duration, out_of_bounds_mode="ignore")
        audio = audio.extend_to(self.sample_duration)
        window = min(self.window_samples, max(16, audio.n_samples))
        spec = Spectrogram.from_audio(audio, window_samples=window,
                                      overlap_samples=int(window * self.overlap_fraction),
                                      decibel_limits=tuple(self.decibel_limits))
        spec = spec.bandpass(self.min_f, self.max_f, out_of_bounds_ok=True)
        height, width, channels = self.out_shape
        # invert: loud = high values, the convention networks are trained with (as OpenSoundscape >= 0.7)
        image = spec.to_image(shape=(height, width), channels=channels, invert=True, return_type="torch")
        sample.data = torch.as_tensor(image, dtype=torch.float32)
        return sample

    def to_dict(self) -> dict:
        values = {k: v for k, v in self.param.values().items() if k != "name"}
        values["out_shape"] = list(values["out_shape"])
        values["decibel_limits"] = list(values["decibel_limits"])
        return {"class": "SimpleSpectrogramPreprocessor", "params": values}

    @classmethod
    def from_dict(cls, d: dict):
        params = dict(d.get("params", {}))
        for key in ("out_shape", "decibel_limits"):  # JSON turns tuples into lists
            if key in params:
                params[key] = tuple(params[key])
        return cls(**params)
