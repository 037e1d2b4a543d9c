"""A tiny real model for prediction tests: a conv net over log-spectrogram tensors.

Stands in for :class:`opso_nb.ml.cnn.CNN` (same attributes predict() uses) so the
prediction tests do not depend on the training code; test_prediction.py also runs
the real CNN.
"""
from __future__ import annotations

import numpy as np
import soundfile
import torch

from opso_nb.audio import Audio

SR = 8000


class StubPreprocessor:
    """Loads the clip by offset/duration, pads to the sample duration, returns a [1, 32, 32] tensor."""

    def __init__(self, sample_duration):
        self.sample_duration = sample_duration

    def forward(self, sample, bypass_augmentations=True):
        audio = Audio.from_file(sample.source, offset=sample.start_time, duration=sample.duration,
                                out_of_bounds_mode="ignore")
        audio = audio.extend_to(self.sample_duration)
        x = torch.from_numpy(audio.samples[: int(self.sample_duration * audio.sample_rate)])
        frames = x.reshape(32, -1)  # 32 time frames
        spec = torch.fft.rfft(frames, n=62).abs().T[:32] + 1e-6  # [32 freq, 32 time]
        sample.data = torch.log(spec)[None].float()
        return sample


class StubNet(torch.nn.Module):
    def __init__(self, n_classes=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, n_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


class StubModel:
    def __init__(self, classes=("frog", "bird"), sample_duration=2.0, seed=0):
        self.classes = list(classes)
        self.sample_duration = sample_duration
        self.network = StubNet(len(self.classes), seed)
        self.network.eval()
        self.preprocessor = StubPreprocessor(sample_duration)
        self.device = torch.device("cpu")


def write_test_wav(path, duration, sr=SR, seed=0, freq=1000.0):
    """Noise whose loudness and tone change over time, so every clip scores differently."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * sr)) / sr
    envelope = 0.05 + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * t / 7.3))
    samples = envelope * (0.3 * rng.standard_normal(len(t)) + np.sin(2 * np.pi * freq * (1 + t / 60) * t))
    soundfile.write(str(path), (samples / 2).astype(np.float32), sr, subtype="PCM_16")
    return path


def direct_scores(model, file, start, end):
    """Score one clip the slow, obvious way (reference for the batched path)."""
    from opso_nb.ml.prediction import _SimpleSample

    sample = model.preprocessor.forward(_SimpleSample(str(file), start, end - start))
    with torch.no_grad():
        return model.network(sample.data[None]).numpy()[0]
