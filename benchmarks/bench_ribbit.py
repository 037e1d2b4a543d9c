"""RIBBIT on a synthesized 60-minute recording: seconds including loading and the spectrogram.

    python benchmarks/bench_ribbit.py [--minutes 60] [--sample-rate 24000]

The recording (cached in benchmarks/_data/) is pink-ish noise with a toad-like
trill (2.1 kHz carrier pulsed 15 times per second, 20 s long) every 5 minutes.
It is scored with the Great Plains toad parameters by :func:`opso_nb.ribbit.run_ribbit`,
which reads the file in chunks so memory stays bounded, for one and for two
species. The table gives seconds, real-time factor and peak memory, and checks
that the top-scoring clips are the planted trills. If an OpenSoundscape
environment exists (its python in $OPENSOUNDSCAPE_PYTHON), its ``ribbit`` runs
on the same file (whole-file spectrogram, as in its tutorial) and is shown
side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

from opso_nb.ribbit import RibbitParams, run_ribbit
from opso_nb.utils import atomic_path

DATA = Path(__file__).resolve().parent / "_data"
TRILL_EVERY = 300.0  # s
TRILL_LENGTH = 20.0  # s

OPSO_SCRIPT = """
import json, sys, time
from opensoundscape.audio import Audio
from opensoundscape.spectrogram import Spectrogram
from opensoundscape.ribbit import ribbit
t = time.perf_counter()
spec = Spectrogram.from_audio(Audio.from_file(sys.argv[1]))
df = ribbit(spec, signal_band=[1900, 2400], pulse_rate_range=[8, 20], clip_duration=2.0,
            noise_bands=[[0, 1500], [2500, 3500]])
print(json.dumps({"seconds": time.perf_counter() - t, "clips": len(df)}))
"""


def synthesize(minutes: int, sample_rate: int) -> Path:
    """Write (once) the benchmark recording, block by block so memory stays small."""
    path = DATA / f"ribbit_{minutes}min_{sample_rate}Hz.wav"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    block = 60 * sample_rate
    with atomic_path(path) as tmp:
        with soundfile.SoundFile(tmp, "w", samplerate=sample_rate, channels=1, subtype="PCM_16", format="WAV") as f:
            for b in range(minutes):
                t = (b * block + np.arange(block)) / sample_rate
                noise = np.cumsum(rng.standard_normal(block)) * 0.002  # brown-ish rumble
                noise = noise - np.convolve(noise, np.ones(501) / 501, "same") + 0.01 * rng.standard_normal(block)
                phase = t % TRILL_EVERY
                on = (phase >= 60) & (phase < 60 + TRILL_LENGTH)  # one trill per 5 min, starting at 1:00, 6:00, ...
                gate = ((t * 15.0) % 1.0) < 0.4
                trill = 0.05 * np.sin(2 * np.pi * 2100 * t) * on * gate
                f.write((noise + trill).astype(np.float32))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--sample-rate", type=int, default=24000)
    parser.add_argument("--chunk", type=float, default=300.0, help="seconds of audio per chunk")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    start = time.perf_counter()
    path = synthesize(args.minutes, args.sample_rate)
    print(f"recording: {path.name} ({path.stat().st_size / 1e6:.0f} MB; ready in {time.perf_counter() - start:.1f} s)")

    toad = RibbitParams()
    bird = RibbitParams(species="bird_series", signal_band=(5000, 6500), noise_bands=[(0, 4000)],
                        pulse_rate_range=(8, 11))
    rows = []
    for label, species in [("opso_nb run_ribbit, 1 species", [toad]), ("opso_nb run_ribbit, 2 species", [toad, bird])]:
        t0 = time.perf_counter()
        scores, errors = run_ribbit([path], species, chunk_duration=args.chunk, progress=False)
        seconds = time.perf_counter() - t0
        assert errors.empty, errors
        rows.append((label, len(scores), seconds))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # known output: the 2-second clips inside planted trills must be the top scorers
    s = scores["great_plains_toad"].reset_index()
    n_trills = int((args.minutes * 60 - 60 - 1e-9) // TRILL_EVERY) + 1 if args.minutes * 60 > 60 else 0
    in_trill = ((s.start_time % TRILL_EVERY) >= 60) & ((s.end_time - 1e-9) % TRILL_EVERY < 60 + TRILL_LENGTH) & (
        (s.start_time % TRILL_EVERY) < 60 + TRILL_LENGTH)
    top = s.nlargest(int(in_trill.sum()), "great_plains_toad")
    hit_rate = in_trill[top.index].mean()

    opso_python = os.environ.get("OPENSOUNDSCAPE_PYTHON")
    if opso_python:
        out = subprocess.run([opso_python, "-c", OPSO_SCRIPT, str(path)], capture_output=True, text=True)
        if out.returncode == 0:
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(("OpenSoundscape ribbit (whole-file spectrogram)", r["clips"], r["seconds"]))
        else:
            rows.append((f"OpenSoundscape: failed: {out.stderr.strip()[-60:]}", 0, float("nan")))
    else:
        print("(OpenSoundscape not compared: set OPENSOUNDSCAPE_PYTHON to the python of a separate env with "
              "`pip install opensoundscape`)")

    audio_seconds = args.minutes * 60
    print(f"\n{args.minutes} min at {args.sample_rate} Hz, 2 s clips, spectrogram 512/256 samples, "
          f"chunks of {args.chunk:g} s, python {sys.version.split()[0]}")
    width = max(len(r[0]) for r in rows)
    print(f"{'task':<{width}}  {'clips':>6}  {'seconds':>8}  {'x real time':>11}")
    print("-" * (width + 32))
    for task, clips, seconds in rows:
        print(f"{task:<{width}}  {clips:>6}  {seconds:>8.1f}  {audio_seconds / seconds:>11.0f}")
    print(f"peak memory of this process: {peak_mb:.0f} MB")
    print(f"planted trills: {n_trills}; top-{int(in_trill.sum())} clips inside a trill: {hit_rate:.0%}")


if __name__ == "__main__":
    main()
