"""Benchmark: CNN prediction speed (clips/s) and peak memory over long synthesized recordings.

Measures, for a resnet18 with 5 s clips and the default spectrogram preprocessor:

* ``opso_nb`` prediction over a 60-minute and a 10-hour file, with
  ``num_workers`` 0 and 2 (each run in its own process so peak memory is its own);
* the bare forward pass of the same network on ready tensors (the limit),
  timed right after in the same process;
* OpenSoundscape doing the same, when a separate environment with it exists.

Usage::

    python benchmarks/bench_prediction.py            # 60 min and 10 h files (long!)
    python benchmarks/bench_prediction.py --quick    # 4 min and 20 min files
    python benchmarks/bench_prediction.py --precision float32 --no-opso

opso_nb runs with the CNN's default precision (bfloat16 maths on CPUs that have it
natively, else float32) unless ``--precision float32``; OpenSoundscape predicts in
float32. The bare forward pass is timed in the same precision as opso_nb. The
runs are those of ``bench_all.py`` (its ``predict_*`` rows), with more options.

Recordings are synthesized once into ``benchmarks/_data/`` (git-ignored),
written block by block. For the OpenSoundscape column point
``OPENSOUNDSCAPE_PYTHON`` at the python of an environment with it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import DATA, OPSO_MISSING, opso_python, write_recording

SAMPLE_RATE = 24000  # Hz; typical of ARU deployments, keeps the 10 h file at 1.7 GB
CLIP = 5.0  # s


def synthesize(path: Path, minutes: float, seed: int = 0) -> Path:
    """White noise with periodic chirps (written once, block by block)."""
    import numpy as np

    def block(t, rng):
        chirp = 0.2 * np.sin(2 * np.pi * (2000 + 1000 * (t % 3)) * (t % 3)) * ((t % 7) < 1.5)
        return chirp + 0.03 * rng.standard_normal(len(t))

    return write_recording(path, minutes * 60, SAMPLE_RATE, block, seed=seed)


def main():
    from bench_all import PREDICT_OPSO, PREDICT_OURS, run  # bench_all imports this module: not at the top

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 min and 20 min files instead of 60 min and 10 h")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--only", choices=["short", "long"], help="run only one of the two files")
    parser.add_argument("--stream", action="store_true", help="also stream to disk (output_path) in each run")
    parser.add_argument("--precision", choices=["auto", "float32"], default="auto",
                        help="opso_nb's maths: auto = bfloat16 on CPUs with native support (the default), or float32")
    parser.add_argument("--no-opso", action="store_true", help="skip the OpenSoundscape runs")
    args = parser.parse_args()

    lengths = {"short": 4, "long": 20} if args.quick else {"short": 60, "long": 600}
    if args.only:
        lengths = {args.only: lengths[args.only]}
    files = {k: synthesize(DATA / f"synth_{m}min_{SAMPLE_RATE}Hz.wav", m) for k, m in lengths.items()}
    opso = None if args.no_opso else opso_python()
    cfg = {"minutes": 0, "threads": os.cpu_count() or 1, "clip": CLIP, "batch": args.batch_size,
           "precision": args.precision}
    rows = []
    for key, file in files.items():
        label = f"{lengths[key]} min file" if lengths[key] < 120 else f"{lengths[key] // 60} h file"
        for w in args.workers:
            run_cfg = {**cfg, "path": str(file), "minutes": lengths[key], "workers": w}
            if args.stream:
                run_cfg["output_path"] = tempfile.mkdtemp(prefix="bench_pred_")
            ours = run(sys.executable, PREDICT_OURS, run_cfg)
            theirs = run(opso, PREDICT_OPSO, run_cfg, pythonpath=None) if opso else None
            rows.append((label, w, ours, theirs))
            print(f"  done: {label}, workers={w}: {ours}", file=sys.stderr, flush=True)

    print(f"\nPrediction benchmark: resnet18, {CLIP:g} s clips, batch {args.batch_size}, "
          f"{SAMPLE_RATE} Hz audio, {os.cpu_count()} CPU cores, torch threads = cores, "
          f"opso_nb precision {args.precision}; peak MB: resident (allocated by the process itself)")
    print("| task | workers | opso_nb clips/s | forward pass clips/s | % of forward | peak MB | "
          "OpenSoundscape clips/s | peak MB | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, w, ours, theirs in rows:
        if "error" in ours:
            print(f"| {label} | {w} | failed: {ours['error']} | | | | | | |")
            continue
        rate = ours["n"] / ours["seconds"]
        forward = ours["extra"]["ceiling_rate"]
        cells = [label, str(w), f"{rate:.1f}", f"{forward:.1f}", f"{100 * rate / forward:.0f}%",
                 f"{ours['peak_mb']:.0f} ({ours['peak_anon_mb']:.0f})"]
        if theirs is None:
            cells += ["not installed", "", ""]
        elif "error" in theirs:
            cells += [f"failed: {theirs['error'][:40]}", "", ""]
        else:
            theirs_rate = theirs["n"] / theirs["seconds"]
            cells += [f"{theirs_rate:.1f}", f"{theirs['peak_mb']:.0f} ({theirs['peak_anon_mb']:.0f})",
                      f"{rate / theirs_rate:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    if not opso and not args.no_opso:
        print("\n" + OPSO_MISSING)


if __name__ == "__main__":
    main()
