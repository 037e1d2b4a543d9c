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
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import DATA, OPSO_MISSING, opso_python, write_recording
from opso_nb.ribbit import RibbitParams, run_ribbit

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
    """Rumble and hiss with one planted 15 pulse/s trill every 5 minutes (written once, block by block)."""
    def block(t, rng):
        noise = np.cumsum(rng.standard_normal(len(t))) * 0.002  # brown-ish rumble
        noise = noise - np.convolve(noise, np.ones(501) / 501, "same") + 0.01 * rng.standard_normal(len(t))
        phase = t % TRILL_EVERY
        on = (phase >= 60) & (phase < 60 + TRILL_LENGTH)  # one trill per 5 min, starting at 1:00, 6:00, ...
        gate = ((t * 15.0) % 1.0) < 0.4
        return noise + 0.05 * np.sin(2 * np.pi * 2100 * t) * on * gate

    return write_recording(DATA / f"ribbit_{minutes}min_{sample_rate}Hz.wav", minutes * 60, sample_rate, block)


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

    opso = opso_python()
    if opso:
        out = subprocess.run([opso, "-c", OPSO_SCRIPT, str(path)], capture_output=True, text=True)
        if out.returncode == 0:
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(("OpenSoundscape ribbit (whole-file spectrogram)", r["clips"], r["seconds"]))
        else:
            rows.append((f"OpenSoundscape: failed: {out.stderr.strip()[-60:]}", 0, float("nan")))
    else:
        print(OPSO_MISSING)

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
