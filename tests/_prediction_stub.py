"""A tiny real model for prediction tests: an :class:`opso_nb.ml.cnn.CNN` around a small conv net.

The model is the real ``CNN`` class with the real spectrogram preprocessor
(32 x 32 pixels, one channel), so prediction tests exercise exactly what users
run, only with a network small enough to score hundreds of clips per second.
"""
from __future__ import annotations

import numpy as np
import soundfile
import torch

from opso_nb.ml.cnn import CNN
from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor
from opso_nb.sample import AudioSample

SR = 8000


class TinyNet(torch.nn.Module):
    """Conv -> batch norm -> ReLU -> global average -> linear, with seeded weights."""

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


def tiny_preprocessor(sample_duration=2.0):
    return SpectrogramPreprocessor(sample_duration=sample_duration, height=32, width=32, channels=1)


def tiny_model(classes=("frog", "bird"), sample_duration=2.0, seed=0):
    """A real CNN (float32 maths, CPU) over a :class:`TinyNet`; ``seed`` picks the weights."""
    return CNN(architecture=TinyNet(len(classes), seed), classes=list(classes), sample_duration=sample_duration,
               preprocessor=tiny_preprocessor(sample_duration), device="cpu", use_amp=False)


def write_test_wav(path, duration, sr=SR, seed=0, freq=1000.0):
    """Noise whose loudness and tone change over time, so every clip scores differently."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * sr)) / sr
    envelope = 0.05 + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * t / 7.3))
    samples = envelope * (0.3 * rng.standard_normal(len(t)) + np.sin(2 * np.pi * freq * (1 + t / 60) * t))
    soundfile.write(str(path), (samples / 2).astype(np.float32), sr, subtype="PCM_16")
    return path


def direct_scores(model, file, start, end):
    """Score one clip the slow, obvious way (reference for the batched path): raw network outputs."""
    sample = model.preprocessor.forward(AudioSample(str(file), start_time=start, duration=end - start),
                                        bypass_augmentations=True)
    model.network.eval()
    with torch.no_grad():
        return model.network(sample.data[None]).numpy()[0]
