"""Benchmark: CNN prediction speed (clips/s) and peak memory over long synthesized recordings.

Measures, for a resnet18 with 5 s clips and the default spectrogram preprocessor:

* ``opso_nb`` prediction over a 60-minute and a 10-hour file, with
  ``num_workers`` 0 and 2 (each run in its own process so peak RSS is its own);
* the bare forward pass of the same network on ready tensors (the limit);
* OpenSoundscape doing the same, when a separate environment with it exists.

Usage::

    python benchmarks/bench_prediction.py            # 60 min and 10 h files (long!)
    python benchmarks/bench_prediction.py --quick    # 4 min and 20 min files
    python benchmarks/bench_prediction.py --precision float32 --no-opso

opso_nb runs with the CNN's default precision (bfloat16 maths on CPUs that have it
natively, else float32) unless ``--precision float32``; OpenSoundscape predicts in
float32. The bare forward pass is timed in the same precision as opso_nb.

Recordings are synthesized once into ``benchmarks/_data/`` (git-ignored),
written block by block. For the OpenSoundscape column create an environment
(``python -m venv benchmarks/_opso_env && benchmarks/_opso_env/bin/pip install
opensoundscape``) or point ``OPSO_PYTHON`` at its python.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, ROOT, opso_python, write_recording
SAMPLE_RATE = 24000  # Hz; typical of ARU deployments, keeps the 10 h file at 1.7 GB
CLIP = 5.0  # s


def synthesize(path: Path, minutes: float, seed: int = 0) -> Path:
    """White noise with periodic chirps (written once, block by block)."""
    import numpy as np

    def block(t, rng):
        chirp = 0.2 * np.sin(2 * np.pi * (2000 + 1000 * (t % 3)) * (t % 3)) * ((t % 7) < 1.5)
        return chirp + 0.03 * rng.standard_normal(len(t))

    return write_recording(path, minutes * 60, SAMPLE_RATE, block, seed=seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB; DataLoader workers are processes of their own).

    ``VmHWM``, not ``ru_maxrss``: the latter keeps the forking parent's peak across exec, and children's
    ``ru_maxrss`` counts every short helper that a large process forked (torch runs ``ldconfig`` at import).
    """
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))


def make_model():
    import torch

    from opso_nb.ml.cnn import CNN

    torch.manual_seed(0)
    # auto: bfloat16 maths where the CPU has it natively (CNN's default); float32: never
    use_amp = None if os.environ.get("BENCH_PRECISION", "auto") == "auto" else False
    model = CNN("resnet18", ["classA", "classB"], CLIP, weights=None, device="cpu", use_amp=use_amp)
    model.verbose = 0
    return model


def child_predict(file: str, workers: int, batch_size: int, out: str | None) -> dict:
    import torch

    from opso_nb.ml.prediction import predict

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    model = make_model()
    _forward_rate(model, batch_size, n_batches=1)  # warm, as the bare forward pass is timed warm
    start = time.perf_counter()
    scores = predict(model, [file], batch_size=batch_size, num_workers=workers, progress=False,
                     output_path=out, activation_layer="sigmoid")
    elapsed = time.perf_counter() - start
    rss = peak_rss_mb()
    # the bare forward pass again, in this process right after: on a shared machine the load changes
    # from minute to minute, so the ratio to this is fairer than to a separate measurement
    fwd = _forward_rate(model, batch_size, n_batches=4)
    return {"clips": len(scores), "seconds": elapsed, "clips_per_s": len(scores) / elapsed,
            "peak_rss_mb": rss, "forward_clips_per_s": fwd}


def _forward_rate(model, batch_size, n_batches):
    import torch

    from opso_nb.ml.utils import autocast, autocast_dtype, to_network_input

    h, w, c = model.sample_shape
    x = to_network_input(torch.rand(batch_size, c, h, w), "cpu", model.channels_last)  # same layout as predict
    net = model.network.eval()
    with torch.inference_mode(), autocast("cpu", autocast_dtype("cpu", model.use_amp)):  # same precision
        for _ in range(3):  # warm-up: oneDNN picks and compiles its kernels on the first calls
            net(x)
        start = time.perf_counter()
        for _ in range(n_batches):
            net(x)
        return batch_size * n_batches / (time.perf_counter() - start)


def child_forward(batch_size: int, n_batches: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    model = make_model()
    rate = _forward_rate(model, batch_size, n_batches)
    return {"clips": batch_size * n_batches, "clips_per_s": rate, "peak_rss_mb": peak_rss_mb()}


OPSO_SCRIPT = """
import json, sys, time, torch
from opensoundscape import CNN
torch.set_num_threads({threads})
try:  # OpenSoundscape 0.9-0.12
    model = CNN('resnet18', ['classA', 'classB'], {clip})
except TypeError:  # newer versions want a sample rate, and fetch ImageNet weights unless given an architecture
    from opensoundscape.ml import cnn_architectures
    import soundfile
    model = CNN(cnn_architectures.resnet18(num_classes=2, weights=None), ['classA', 'classB'], {clip},
                sample_rate=soundfile.info({file!r}).samplerate)
start = time.perf_counter()
scores = model.predict([{file!r}], batch_size={batch}, num_workers={workers}, activation_layer='sigmoid')
elapsed = time.perf_counter() - start
rss = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"clips": len(scores), "seconds": elapsed, "clips_per_s": len(scores) / elapsed, "peak_rss_mb": rss}}))
"""


def run_child(args: list[str], python=sys.executable, script: str | None = None) -> dict:
    if script is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(script)
        cmd = [python, f.name]
    else:
        cmd = [python, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 min and 20 min files instead of 60 min and 10 h")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--only", choices=["short", "long"], help="run only one of the two files")
    parser.add_argument("--stream", action="store_true", help="also stream to disk (output_path) in each run")
    parser.add_argument("--precision", choices=["auto", "float32"], default="auto",
                        help="opso_nb's maths: auto = bfloat16 on CPUs with native support (the default), or float32")
    parser.add_argument("--no-opso", action="store_true", help="skip the OpenSoundscape runs")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["BENCH_PRECISION"] = args.precision  # read by the child processes

    if args.child:
        kind, *rest = args.child
        if kind == "predict":
            file, workers, batch, out = rest
            result = child_predict(file, int(workers), int(batch), None if out == "-" else out)
        else:
            result = child_forward(int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return

    lengths = {"short": 4, "long": 20} if args.quick else {"short": 60, "long": 600}
    if args.only:
        lengths = {args.only: lengths[args.only]}
    files = {k: synthesize(DATA / f"synth_{m}min_{SAMPLE_RATE}Hz.wav", m) for k, m in lengths.items()}
    opso = None if args.no_opso else opso_python()
    rows = []
    n_batches = 8 if args.quick else 20
    fwd = run_child(["--child", "forward", str(args.batch_size), str(n_batches)])
    rows.append(("bare forward, ready tensors", "-", fwd, None))
    for key, file in files.items():
        label = f"{lengths[key]} min file" if lengths[key] < 120 else f"{lengths[key] // 60} h file"
        for w in args.workers:
            out = "-"
            if args.stream:
                out = tempfile.mkdtemp(prefix="bench_pred_")
            ours = run_child(["--child", "predict", str(file), str(w), str(args.batch_size), out])
            theirs = None
            if opso:
                theirs = run_child([], python=opso, script=OPSO_SCRIPT.format(
                    threads=os.cpu_count(), clip=CLIP, file=str(file), batch=args.batch_size, workers=w))
            rows.append((label, w, ours, theirs))
            print(f"  done: {label}, workers={w}: {ours}", file=sys.stderr, flush=True)

    print(f"\nPrediction benchmark: resnet18, {CLIP:g} s clips, batch {args.batch_size}, "
          f"{SAMPLE_RATE} Hz audio, {os.cpu_count()} CPU cores, torch threads = cores, "
          f"opso_nb precision {args.precision}")
    header = (f"| {'task':32} | workers | opso_nb clips/s | % of forward | peak RSS MB | "
              f"OpenSoundscape clips/s | peak RSS MB | ratio |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for label, w, ours, theirs in rows:
        o = f"{ours['clips_per_s']:.1f}" if "clips_per_s" in ours else ours.get("error", "?")[:15]
        om = f"{ours.get('peak_rss_mb', float('nan')):.0f}" if "peak_rss_mb" in ours else ""
        if theirs is None:
            t, tm, ratio = ("n/a" if label.startswith("bare") else "not installed"), "", ""
        else:
            t = f"{theirs['clips_per_s']:.1f}" if "clips_per_s" in theirs else theirs.get("error", "?")[:15]
            tm = f"{theirs.get('peak_rss_mb', float('nan')):.0f}" if "peak_rss_mb" in theirs else ""
            ratio = f"{ours['clips_per_s'] / theirs['clips_per_s']:.2f}x" if "clips_per_s" in theirs and \
                "clips_per_s" in ours else ""
        pct = f"{100 * ours['clips_per_s'] / ours['forward_clips_per_s']:.0f}%" if "forward_clips_per_s" in ours else ""
        print(f"| {label:32} | {str(w):7} | {o:15} | {pct:12} | {om:11} | {t:22} | {tm:11} | {ratio:5} |")
    if "clips_per_s" in fwd:
        best = max((r[2].get("clips_per_s", 0) for r in rows[1:]), default=0)
        print(f"\nBest prediction speed is {100 * best / fwd['clips_per_s']:.0f}% of the bare forward pass measured "
              "first; '% of forward' compares each run with the forward pass timed in the same process just after.")
    if not opso:
        print("\nOpenSoundscape not found. To compare, create a separate environment:\n"
              "  python -m venv benchmarks/_opso_env && benchmarks/_opso_env/bin/pip install opensoundscape\n"
              "(or set OPSO_PYTHON=/path/to/python-with-opensoundscape) and run this script again.")


if __name__ == "__main__":
    main()
