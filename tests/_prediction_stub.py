"""A tiny real model for prediction tests: an :class:`opso_nb.ml.cnn.CNN` around a small conv net.

The model is the real ``CNN`` class with the real spectrogram preprocessor
(32 x 32 pixels, one channel), so prediction tests exercise exactly what users
run, only with a network small enough to score hundreds of clips per second.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

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


# ----------------------------------------------------------------------------- files that break batches
BAD_KINDS = ("corrupt", "empty", "truncated", "lying", "nan")


def write_bad_file(path, kind, duration=2.0, sr=SR, seed=0):
    """Write one of the files field batches meet, at ``path``.

    corrupt: random bytes named .wav; empty: 0 bytes; truncated: a WAV whose
    header promises twice the samples it holds (a recorder that lost power);
    lying: a 16 KB WAV whose header claims 2,147,483,647 Hz (padding a clip
    of it to full length would need 16 GiB); nan: a float WAV with NaN samples
    in its second half.
    """
    rng = np.random.default_rng(seed)
    path = Path(path)
    if kind == "corrupt":
        path.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        write_test_wav(path, duration, sr=sr, seed=seed)
        data = path.read_bytes()
        path.write_bytes(data[: 44 + (len(data) - 44) // 2])
    elif kind == "lying":
        samples = (rng.standard_normal((16_384 - 44) // 2) * 1000).astype("<i2").tobytes()
        rate = 2_147_483_647
        header = (b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVE"
                  + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, (rate * 2) % 2**32, 2, 16)
                  + b"data" + struct.pack("<I", len(samples)))
        path.write_bytes(header + samples)
    elif kind == "nan":
        x = (0.1 * rng.standard_normal(int(duration * sr))).astype(np.float32)
        x[len(x) // 2:] = np.nan
        soundfile.write(str(path), x, sr, subtype="FLOAT")
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {BAD_KINDS}")
    return path


def non_utf8_path(folder, stem=b"caf\xe9") -> str:
    """A path (as ``str``, with surrogate escapes) whose name is not valid UTF-8, as on FAT/exFAT SD cards."""
    return os.fsdecode(os.path.join(os.fsencode(folder), stem + b".wav"))
