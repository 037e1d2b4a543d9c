"""Benchmark: BirdNET prediction and embedding speed (clips/s) and peak memory over long synthesized recordings.

Measures, for BirdNET GLOBAL 6K V2.4 on LiteRT (3 s windows, batch 8, all cores):

* the bare ``Interpreter.invoke`` on ready batches of 144,000 samples (the ceiling);
* ``BirdNET.predict`` (6,522 species), ``BirdNET.embed`` (1,024 values) and ``embed(return_preds=True)``
  (both from one pass) over a 60-minute file, each run streamed to a store (``output_path``);
* ``embed`` and ``embed(return_preds=True)`` over a 10-hour file, streamed with ``return_scores=False``
  (what a long run should do), for their peak memory.

Each run is its own process, so its peak resident memory is its own; each reports the bare
invoke rate measured in the same process just before and just after it (on a shared machine the
load changes from minute to minute, so that ratio is the fairer one). The recordings are 24 kHz (resampled to
BirdNET's 48 kHz on the fly, as most field recordings are), synthesized once into
``benchmarks/_data/`` by ``bench_prediction.synthesize``.

Usage::

    python benchmarks/bench_birdnet.py             # 60 min and 10 h files (the 10 h run takes long)
    python benchmarks/bench_birdnet.py --quick     # 4 min and 20 min files
    python benchmarks/bench_birdnet.py --only short
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

from _common import DATA, ROOT
from bench_prediction import SAMPLE_RATE, synthesize

BATCH = 8  # BirdNET's default batch_size


def peak_rss_mb() -> float:
    """Peak resident memory of this process alone (MB): a helper process that something spawns while importing
    torch peaks at ~800 MB, and a run here has no worker processes to count."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def invoke_rate(interpreter, batch_size: int, n_batches: int) -> tuple[float, float]:
    """Clips per second of wall time and of CPU time of the bare interpreter on a ready batch (after a warm-up)."""
    import numpy as np

    clips = (0.05 * np.random.default_rng(0).standard_normal((batch_size, 144000))).astype(np.float32)
    interpreter.run(clips)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n_batches):
        interpreter.run(clips)
    n = batch_size * n_batches
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def child(mode: str, file: str, n_batches: int) -> dict:
    from opso_nb.ml.birdnet import BirdNET, BirdNETLicenseNotice

    warnings.simplefilter("ignore", BirdNETLicenseNotice)
    model = BirdNET(batch_size=BATCH)
    if mode == "invoke":
        rate, cpu_rate = invoke_rate(model.interpreter, BATCH, n_batches)
        return {"clips": BATCH * n_batches, "clips_per_s": rate, "clips_per_cpu_s": cpu_rate,
                "peak_rss_mb": peak_rss_mb()}
    before = invoke_rate(model.interpreter, BATCH, n_batches)  # also the warm-up: loading is not part of the run
    out = tempfile.mkdtemp(prefix="bench_birdnet_")
    long_run = mode.endswith("-stream")
    start, cpu = time.perf_counter(), time.process_time()
    if mode.startswith("predict"):
        table = model.predict([file], output_path=out, progress=False, return_scores=not long_run)
    else:
        table = model.embed([file], output_path=out, progress=False, return_preds=mode.startswith("both"),
                            return_scores=not long_run)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss = peak_rss_mb()
    import soundfile

    clips = int(-(-soundfile.info(file).duration // 3))  # the final, shorter window counts
    first = table[0] if isinstance(table, tuple) else table  # (embeddings, preds) with return_preds
    if first is not None:
        clips = len(first)
    after = invoke_rate(model.interpreter, BATCH, n_batches)
    return {"clips": clips, "seconds": elapsed, "clips_per_s": clips / elapsed, "clips_per_cpu_s": clips / cpu,
            "peak_rss_mb": rss, "invoke_clips_per_s": (before[0] + after[0]) / 2,
            "invoke_clips_per_cpu_s": (before[1] + after[1]) / 2}


def run_child(args: list) -> dict:
    """Run ``child(*args)`` in a fresh process (so the peak memory is its own); its JSON result, or the error."""
    proc = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 min and 20 min files instead of 60 min and 10 h")
    parser.add_argument("--only", choices=["short", "long"], help="run only one of the two files")
    parser.add_argument("--tasks", nargs="+", choices=["predict", "embed", "both", "embed-stream", "both-stream"],
                        help="only these runs (default: predict, embed, both on the short file; embed-stream, "
                             "both-stream on the long one)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, file, n_batches = args.child
        print(json.dumps(child(mode, file, int(n_batches))))
        return

    lengths = {"short": 4, "long": 20} if args.quick else {"short": 60, "long": 600}
    if args.only:
        lengths = {args.only: lengths[args.only]}
    n_batches = 4 if args.quick else 10
    rows = [("bare Interpreter.invoke, ready batches", "-", run_child(["invoke", "-", n_batches]))]
    for key, minutes in lengths.items():
        file = synthesize(DATA / f"synth_{minutes}min_{SAMPLE_RATE}Hz.wav", minutes)
        label = f"{minutes} min file" if minutes < 120 else f"{minutes // 60} h file"
        modes = ("predict", "embed", "both") if key == "short" else ("embed-stream", "both-stream")
        modes = [m for m in modes if m in args.tasks] if args.tasks else modes
        for mode in modes:
            result = run_child([mode, file, n_batches])
            rows.append((label, mode, result))
            print(f"  done: {label} {mode}: {result}", file=sys.stderr, flush=True)

    what = {"predict": "predict (6,522 species)", "embed": "embed (1,024 values)",
            "both": "embed + species, one pass", "embed-stream": "embed, streamed only",
            "both-stream": "embed + species, streamed only", "-": ""}
    print(f"\nBirdNET benchmark: batch {BATCH}, {SAMPLE_RATE} Hz audio resampled to 48 kHz, "
          f"{os.cpu_count()} CPU cores, runs streamed to a store (output_path)")
    header = f"| {'file':38} | {'task':30} | clips | clips/s | % of invoke | % of invoke, CPU time | peak RSS MB |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for label, mode, r in rows:
        rate = f"{r['clips_per_s']:.1f}" if "clips_per_s" in r else r.get("error", "?")[:20]
        pct = f"{100 * r['clips_per_s'] / r['invoke_clips_per_s']:.0f}%" if "invoke_clips_per_s" in r else ""
        cpu = f"{100 * r['clips_per_cpu_s'] / r['invoke_clips_per_cpu_s']:.0f}%" if "invoke_clips_per_s" in r else ""
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        print(f"| {label:38} | {what[mode]:30} | {r.get('clips', ''):5} | {rate:7} | {pct:11} | {cpu:21} | "
              f"{rss:11} |")
    print("\n'% of invoke' compares each run's clips per second with the bare invoke rate measured in the same "
          "process just before and after it; 'CPU time' compares clips per second of the process's CPU time, "
          "which a busy shared machine disturbs less. Peak RSS includes about 700 MB for importing torch "
          "(the prediction loop's DataLoader and batching).")


if __name__ == "__main__":
    main()
