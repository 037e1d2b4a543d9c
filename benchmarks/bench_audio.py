"""Audio loading and spectrogram throughput on a synthesized 60-minute recording.

Run by hand (not part of the tests):

    python benchmarks/bench_audio.py            # 60-minute file
    python benchmarks/bench_audio.py --minutes 10

Prints a table: segment-read latency near the end of the file (WAV and FLAC) against
reading the whole file, spectrogram throughput for 5 s clips, and the streaming
overview envelope, each with peak Python-heap memory (tracemalloc).
"""
from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from _common import DATA, write_recording
from opso_nb.audio import Audio, load_envelope
from opso_nb.spectrogram import Spectrogram



def synthesize(minutes: int, suffix: str, sample_rate: int = 32000) -> Path:
    """Pink-ish noise with periodic chirps (written once, block by block)."""
    def block(t, rng):
        noise = np.cumsum(rng.standard_normal(len(t))) * 1e-3
        noise -= np.convolve(noise, np.ones(64) / 64, mode="same")
        chirp = 0.2 * np.sin(2 * np.pi * (3000 + 2000 * (t % 1)) * t) * ((t % 5) < 0.5)
        return noise * 0.5 + chirp

    return write_recording(DATA / f"soundscape_{minutes}min.{suffix}", minutes * 60, sample_rate, block)


def measure(fn, repeats=5):
    times = []
    tracemalloc.start()
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args()
    rows = []
    for suffix in ("wav", "flac"):
        path = synthesize(args.minutes, suffix)
        end = args.minutes * 60
        t, mem, _ = measure(lambda: Audio.from_file(path, offset=end - 5, duration=5), repeats=7)
        rows.append((f"{suffix}: load 5 s at {end - 5} s (offset/duration)", f"{t * 1000:.1f} ms", f"{mem:.1f}"))
        t, mem, _ = measure(lambda: Audio.from_file(path), repeats=1)
        rows.append((f"{suffix}: load whole {args.minutes}-min file", f"{t * 1000:.0f} ms", f"{mem:.1f}"))

    path = synthesize(args.minutes, "wav")
    n_clips = args.minutes * 12

    def clips_from_file():
        for i in range(n_clips):
            Spectrogram.from_audio(Audio.from_file(path, offset=5 * i, duration=5))

    t, mem, _ = measure(clips_from_file, repeats=1)
    rows.append((f"read + spectrogram, {n_clips} clips of 5 s", f"{n_clips / t:.0f} clips/s", f"{mem:.1f}"))

    clip = Audio.from_file(path, duration=5)
    def spectrograms_only():
        for _ in range(100):
            Spectrogram.from_audio(clip)

    t, mem, _ = measure(spectrograms_only, repeats=3)
    rows.append(("spectrogram only (5 s, 512/256 window)", f"{100 / t:.0f} clips/s", f"{mem:.1f}"))

    t, mem, _ = measure(lambda: load_envelope(path, n_points=1500), repeats=1)
    rows.append((f"overview envelope of {args.minutes}-min file (streamed)", f"{t:.2f} s", f"{mem:.1f}"))

    width = max(len(r[0]) for r in rows)
    print(f"{'task':<{width}}  {'result':>14}  {'peak MiB':>9}")
    print("-" * (width + 27))
    for task, result, mem in rows:
        print(f"{task:<{width}}  {result:>14}  {mem:>9}")


if __name__ == "__main__":
    main()
