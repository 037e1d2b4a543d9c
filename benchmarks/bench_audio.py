"""Audio loading and spectrograms on a synthesized 60-minute, 32 kHz recording: opso_nb now, before, OpenSoundscape.

Run by hand (not part of the tests):

    python benchmarks/bench_audio.py                        # 60-minute file, this checkout
    python benchmarks/bench_audio.py --before ../main       # also an older opso_nb checkout, side by side
    OPENSOUNDSCAPE_PYTHON=/path/to/env/bin/python python benchmarks/bench_audio.py   # and OpenSoundscape
    python benchmarks/bench_audio.py --minutes 10 --repeats 1

Every task runs in a fresh process (so its peak memory is its own), interleaved
across implementations and repeated; the table gives the median seconds of the
work (imports excluded), the peak resident memory of the process (imports
included) and the ratio
OpenSoundscape time / opso_nb time (> 1: opso_nb is faster). Ceilings: reading
the file with ``soundfile`` alone, and the bare FFTs of the same windows.

Tasks:

* ``clips``: load the file, split it into 5 s clips and make the 720 clip
  spectrograms (opso_nb now: ``Spectrogram.from_audio_clips`` on the file: read
  a few minutes at a time, one transform per run sliced into clips);
* ``whole``: one spectrogram of the whole file (opso_nb now:
  ``Spectrogram.from_audio_file``, streamed: the audio is never all in memory);
* ``segment``: load 5 s near the end of the file (offset/duration);
* ``envelope``: min/max overview of the whole file, streamed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from _common import DATA, OPSO_MISSING, ROOT, opso_python, write_recording

SAMPLE_RATE = 32000

# Each snippet is (imports, timed work); they get `path` and `minutes`, and the work sets `n` (items produced).
NOW = {
    "clips": ("""
from opso_nb.spectrogram import Spectrogram
from opso_nb.utils import make_clip_df
""", """
specs = Spectrogram.from_audio_clips(path, make_clip_df([path], 5))
n = len(specs)
"""),
    "whole": ("""
from opso_nb.spectrogram import Spectrogram
""", """
n = Spectrogram.from_audio_file(path).shape[1]
"""),
    "segment": ("""
from opso_nb.audio import Audio
""", """
for _ in range(20):
    n = Audio.from_file(path, offset=minutes * 60 - 5, duration=5).n_samples
"""),
    "envelope": ("""
from opso_nb.audio import load_envelope
""", """
n = len(load_envelope(path, n_points=1500)[0])
"""),
}
BEFORE = {  # opso_nb before this change had neither from_audio_clips nor from_audio_file
    "clips": ("""
from opso_nb.audio import Audio
from opso_nb.spectrogram import Spectrogram
""", """
clips, _ = Audio.from_file(path).split(5)
n = len([Spectrogram.from_audio(c) for c in clips])
"""),
    "whole": ("""
from opso_nb.audio import Audio
from opso_nb.spectrogram import Spectrogram
""", """
n = Spectrogram.from_audio(Audio.from_file(path)).shape[1]
"""),
    "segment": NOW["segment"],
    "envelope": NOW["envelope"],
}
OPENSOUNDSCAPE = {
    "clips": ("""
from opensoundscape.audio import Audio
from opensoundscape.spectrogram import Spectrogram
""", """
clips, _ = Audio.from_file(path).split(5)
n = len([Spectrogram.from_audio(c) for c in clips])
"""),
    "whole": ("""
from opensoundscape.audio import Audio
from opensoundscape.spectrogram import Spectrogram
""", """
n = Spectrogram.from_audio(Audio.from_file(path)).spectrogram.shape[1]
"""),
    "segment": ("""
from opensoundscape.audio import Audio
""", """
for _ in range(20):
    n = len(Audio.from_file(path, offset=minutes * 60 - 5, duration=5).samples)
"""),
}
CEILINGS = {
    "clips": ("soundfile read + bare FFTs of the same windows", ("""
import numpy as np, scipy.fft, soundfile
""", """
x, _ = soundfile.read(path, dtype="float32")
frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256]
for i in range(0, len(frames), 4096):
    scipy.fft.rfft(frames[i:i + 4096], axis=1)
n = len(frames)
""")),
    "whole": None,  # same work as for clips
    "segment": ("soundfile read of the same 5 s", ("""
import soundfile
""", """
for _ in range(20):
    with soundfile.SoundFile(path) as f:
        f.seek((minutes * 60 - 5) * f.samplerate)
        n = len(f.read(5 * f.samplerate, dtype="float32"))
""")),
    "envelope": ("soundfile read of the whole file", ("""
import soundfile
""", """
n = len(soundfile.read(path, dtype="float32")[0])
""")),
}
TASK_NAMES = {
    "clips": "load + split into 5 s clips + {clips} clip spectrograms",
    "whole": "one spectrogram of the whole {minutes}-minute file",
    "segment": "load 5 s at the end (offset/duration), x20",
    "envelope": "overview envelope of the whole file (streamed)",
}
RUNNER = """
import json, sys, time
path, minutes = sys.argv[1], int(sys.argv[2])
setup, work = json.loads(sys.stdin.read())
exec(setup)
start = time.perf_counter()
exec(work)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
peak_mb = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "n": n}))
"""


def synthesize(minutes: int) -> Path:
    """Pink-ish noise with periodic chirps (written once, block by block)."""
    def block(t, rng):
        noise = np.cumsum(rng.standard_normal(len(t))) * 1e-3
        noise -= np.convolve(noise, np.ones(64) / 64, mode="same")
        chirp = 0.2 * np.sin(2 * np.pi * (3000 + 2000 * (t % 1)) * t) * ((t % 5) < 0.5)
        return noise * 0.5 + chirp

    return write_recording(DATA / f"soundscape_{minutes}min.wav", minutes * 60, SAMPLE_RATE, block)


def run(python, pythonpath, code, path, minutes):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run([python, "-c", RUNNER, str(path), str(minutes)], input=json.dumps(code), capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1][:80] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="an older opso_nb checkout to compare with")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=list(TASK_NAMES))
    args = parser.parse_args()
    path = synthesize(args.minutes)
    implementations = [("opso_nb", sys.executable, ROOT, NOW)]
    if args.before:
        implementations.append(("opso_nb before", sys.executable, args.before.resolve(), BEFORE))
    opso = opso_python()
    if opso:
        implementations.append(("OpenSoundscape", opso, None, OPENSOUNDSCAPE))
    for task in args.tasks:
        ceiling = CEILINGS.get(task)
        if ceiling:
            implementations_for_task = implementations + [(f"ceiling: {ceiling[0]}", sys.executable, None,
                                                           {task: ceiling[1]})]
        else:
            implementations_for_task = implementations
        results = {name: [] for name, *_ in implementations_for_task}
        for _ in range(args.repeats):  # interleaved, so machine load affects every implementation alike
            for name, python, pythonpath, snippets in implementations_for_task:
                if task in snippets:
                    results[name].append(run(python, pythonpath, snippets[task], path, args.minutes))
        report(task, args, results)
    if not opso:
        print(OPSO_MISSING)


def report(task, args, results):
    title = TASK_NAMES[task].format(minutes=args.minutes, clips=args.minutes * 12)
    print(f"\n{title}  ({args.minutes} min at {SAMPLE_RATE} Hz, median of {args.repeats}, python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    summary = {}
    for name, runs in results.items():
        good = [r for r in runs if "error" not in r]
        if runs and not good:
            summary[name] = runs[0]["error"]
        elif good:
            summary[name] = (statistics.median(r["seconds"] for r in good), max(r["peak_mb"] for r in good))
    opso = summary.get("OpenSoundscape")
    width = max(len(n) for n in summary) if summary else 10
    print(f"{'implementation':<{width}}  {'seconds':>8}  {'peak MB':>8}  {'OpenSoundscape / this':>22}")
    print("-" * (width + 44))
    for name, value in summary.items():
        if isinstance(value, str):
            print(f"{name:<{width}}  failed: {value}")
            continue
        seconds, peak = value
        ratio = f"{opso[0] / seconds:.2f}x" if isinstance(opso, tuple) and not name.startswith("ceiling") else ""
        print(f"{name:<{width}}  {seconds:>8.2f}  {peak:>8.0f}  {ratio:>22}")


if __name__ == "__main__":
    main()
