"""Samples per second through the default SpectrogramPreprocessor pipeline.

Run by hand (not part of the tests):

    python benchmarks/bench_preprocess.py              # 120 clips of 5 s at 32 kHz
    python benchmarks/bench_preprocess.py --clips 400 --workers 0 2 4

5 s clips at 32 kHz are read from a synthesized recording (written once to
``benchmarks/_data``) through ``AudioSplittingDataset`` (each clip read on its
own) and a ``DataLoader`` with ``collate_audio_samples``, into 224 x 224 x 3
tensors, with augmentation on and off, for each ``num_workers``. Prints a table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import DATA, write_recording
from opso_nb.ml.datasets import AudioSplittingDataset, collate_audio_samples
from opso_nb.preprocess.preprocessors import SpectrogramPreprocessor

SAMPLE_RATE = 32000
CLIP = 5.0


def synthesize(seconds: float) -> Path:
    """Noise with chirps, 32 kHz (written once, block by block)."""
    def block(t, rng):
        return 0.05 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * (2000 + 1500 * (t % 1)) * t)

    return write_recording(DATA / f"bench_preprocess_{int(seconds)}s_32k.wav", seconds, SAMPLE_RATE, block)


def run(dataset, workers: int, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_audio_samples)
    t0 = time.perf_counter()
    n = 0
    for data, _ in loader:
        n += data.shape[0]
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = synthesize(args.clips * CLIP)
    pre = SpectrogramPreprocessor(CLIP, out_shape=(224, 224, 3))
    print(f"{args.clips} clips of {CLIP:g} s at {SAMPLE_RATE} Hz -> [3, 224, 224], batch {args.batch_size}, "
          f"torch threads 1 per process\n")
    print("| augmentation | num_workers | samples/s |")
    print("|---|---|---|")
    for bypass in (True, False):
        ds = AudioSplittingDataset([path], pre, bypass_augmentations=bypass)
        for w in args.workers:
            rate = run(ds, w, args.batch_size)
            print(f"| {'off' if bypass else 'on'} | {w} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
