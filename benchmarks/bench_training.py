"""Training speed: clips per second for one epoch of resnet18, num_workers 0 and 2.

Synthesizes a small labelled dataset (tones in noise, WAV), trains one epoch with
opso_nb, and (when an OpenSoundscape environment is given) the same epoch with
OpenSoundscape in that environment, then prints a table with the ratio. The
runs are those of ``bench_all.py`` (its ``train`` rows), with more options.

Usage::

    python benchmarks/bench_training.py                       # 400 clips
    python benchmarks/bench_training.py --clips 64 --size 224
    python benchmarks/bench_training.py --opso-python /path/to/opso-env/bin/python
    python benchmarks/bench_training.py --no-augmentation     # the second epoch, samples kept from the first

``--opso-python`` (else ``$OPENSOUNDSCAPE_PYTHON``, ``$OPSO_PYTHON`` or
``benchmarks/_opso_env``) is a Python with ``opensoundscape`` installed in a
separate environment; without one that column says "not found".
Each configuration trains one warm-up batch first so model construction and
first calls are not counted; the limit (forward, backward and step on ready
tensors) is timed right after, in the same process.

``--precision float32`` turns off opso_nb's mixed precision (by default bfloat16
maths on CPUs that have it natively). OpenSoundscape 0.13 always trains under
bfloat16 autocast on a CPU, so the default setting is the like-for-like one.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import OPSO_MISSING, opso_python
from bench_all import TRAIN_OPSO, TRAIN_OURS, run

SAMPLE_RATE = 22050  # Hz, of the synthesized training clips


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=400, help="training clips (half per class)")
    ap.add_argument("--duration", type=float, default=2.0, help="clip length (s)")
    ap.add_argument("--size", type=int, default=224, help="input image height and width (pixels)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--precision", choices=["auto", "float32"], default="auto",
                    help="opso_nb's maths: auto = bfloat16 on CPUs with native support (the default), or float32")
    ap.add_argument("--no-augmentation", action="store_true",
                    help="opso_nb without augmentation, timing its second epoch (samples kept from the first)")
    ap.add_argument("--opso-python", default=None,
                    help="python of a separate environment with opensoundscape installed")
    args = ap.parse_args(argv)

    from opso_nb.ml.utils import make_tone_dataset

    python = args.opso_python or opso_python()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_tone_dataset(Path(tmp) / "data", n_per_class=args.clips // 2, duration=args.duration,
                          sample_rate=SAMPLE_RATE)
        cfg = {"path": "", "minutes": 0, "labels": str(Path(tmp) / "data" / "labels.csv"), "size": args.size,
               "batch": args.batch_size, "threads": args.threads, "duration": args.duration,
               "sample_rate": SAMPLE_RATE, "tmp": tmp, "precision": args.precision,
               "no_augmentation": args.no_augmentation}
        for nw in args.workers:
            ours = run(sys.executable, TRAIN_OURS, {**cfg, "workers": nw})
            theirs = run(python, TRAIN_OPSO, {**cfg, "workers": nw}, pythonpath=None) if python else None
            rows.append((nw, ours, theirs))
            print(f"  done: num_workers={nw}", file=sys.stderr, flush=True)

    print(f"\nTraining, resnet18, {args.clips} clips of {args.duration} s, {args.size}x{args.size}x1 input, "
          f"batch {args.batch_size}, {args.threads} torch threads, opso_nb precision {args.precision}"
          f"{', augmentation off (second epoch)' if args.no_augmentation else ''}, one epoch (clips/s, higher is "
          "better)\n")
    print(f"{'num_workers':>11} | {'opso_nb':>9} | {'limit':>9} | {'OpenSoundscape':>14} | {'ratio':>6}")
    print("-" * 62)
    for nw, ours, theirs in rows:
        o = ours["n"] / ours["seconds"] if "error" not in ours else None
        limit = ours["extra"]["ceiling_rate"] if o else None
        t = theirs["n"] / theirs["seconds"] if theirs and "error" not in theirs else None
        why = "not found" if theirs is None else theirs.get("error", "")[:14]
        print(f"{nw:>11} | {(f'{o:9.1f}' if o else ours['error'][:9]):>9} | {(f'{limit:9.1f}' if limit else ''):>9} | "
              f"{(f'{t:14.1f}' if t else why):>14} | {(f'{o / t:6.2f}' if o and t else '     -')}")
    print("(limit: forward + backward + step on ready tensors, in opso_nb's precision and layout)")
    if python is None:
        print("\n" + OPSO_MISSING)


if __name__ == "__main__":
    main()
