"""Reliability benchmark: a batch with bad files, killed twice with SIGKILL, resumed; nothing may be lost.

What it does:

1. writes N short recordings (default 1,000 files of 2 s at 8 kHz), of which 5 %
   are bad: corrupt bytes, empty, truncated (the header promises more than
   the file holds), a lying header (16 KB claiming 2,147,483,647 Hz) and
   NaN samples, in equal numbers;
2. scores them once without interruption (the reference table), with a tiny
   real CNN (``tests/_prediction_stub.py``) streamed to a run store;
3. scores them again into a fresh store in a child process, kills the child
   with SIGKILL at two random points (a random count of finished files, plus
   a random delay, so the kill lands in the middle of a file), and resumes
   until the run finishes;
4. prints files scored, files reported, rows lost (goal 0) and whether the
   final table equals the reference.

Audio loading refuses the lying header before allocating anything
(``opso_nb.audio.LIMITS``); every run still has a 10 GiB address-space limit,
so a regression shows as a MemoryError rather than as the machine's
out-of-memory killer.

Usage::

    python benchmarks/bench_reliability.py              # 1,000 files
    python benchmarks/bench_reliability.py --files 200 --seed 3
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import ROOT

from opso_nb.store import RunStore
from tests._prediction_stub import BAD_KINDS, write_bad_file, write_test_wav

ADDRESS_SPACE = 10 * 2**30  # bytes; torch alone maps ~4-5 GiB
BAD_FRACTION = 0.05


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def make_files(folder: Path, n: int, seed: int) -> dict:
    """``{path: kind}``: good files ("good") and bad ones spread evenly through the list."""
    rng = np.random.default_rng(seed)
    n_bad = int(round(n * BAD_FRACTION))
    bad_at = set(rng.choice(n, size=n_bad, replace=False).tolist())
    kinds, k = {}, 0
    for i in range(n):
        path = folder / f"rec{i:05d}.wav"
        if i in bad_at:
            kind = BAD_KINDS[k % len(BAD_KINDS)]
            k += 1
            write_bad_file(path, kind, duration=2.0, seed=i)
        else:
            kind = "good"
            write_test_wav(path, 2.0, seed=i)
        kinds[str(path)] = kind
    return kinds


def child(folder: str, out: str):
    """One prediction run over ``folder`` into the store ``out`` (resumes what is there)."""
    import warnings

    import torch

    from opso_nb.ml.prediction import predict
    from tests._prediction_stub import tiny_model

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    predict(tiny_model(), folder, output_path=out, batch_size=16, progress=False, return_scores=False)


def start_child(folder, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", str(folder), str(out)], cwd=ROOT,
                            preexec_fn=limit_memory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def files_done(out) -> int:
    try:
        return RunStore.existing(out).summary()["files_done"]
    except (FileNotFoundError, ValueError):
        return 0


def run_to_end(folder, out) -> float:
    t0 = time.perf_counter()
    proc = start_child(folder, out)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - t0


def kill_at(folder, out, target: int, delay: float) -> tuple:
    """Start a run, SIGKILL it once ``target`` files are done plus ``delay`` s; returns (done at kill, died)."""
    proc = start_child(folder, out)
    while proc.poll() is None and files_done(out) < target:
        time.sleep(0.2)
    time.sleep(delay)
    died = proc.poll() is None
    if died:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return files_done(out), died


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_reliability_"))
    try:
        folder = work / "recordings"
        folder.mkdir()
        kinds = make_files(folder, args.files, args.seed)
        counts = pd.Series(kinds).value_counts()
        print(f"{args.files} files of 2 s: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("good",) + BAD_KINDS),
              file=sys.stderr, flush=True)

        clean_out, killed_out = work / "clean", work / "killed"
        clean_seconds = run_to_end(folder, clean_out)
        reference, ref_failures = RunStore.existing(clean_out).read()

        kills = []
        low, high = int(0.1 * args.files), int(0.45 * args.files)
        first = int(rng.integers(low, high))
        kills.append(kill_at(folder, killed_out, first, float(rng.uniform(0, 0.3))))
        # the second kill comes later in the resumed run (after its retried files)
        second = int(rng.integers(kills[0][0] + int(0.1 * args.files), int(0.9 * args.files)))
        kills.append(kill_at(folder, killed_out, second, float(rng.uniform(0, 0.3))))
        resume_seconds = run_to_end(folder, killed_out)
        resumed, failures = RunStore.existing(killed_out).read()
        summary = RunStore.existing(killed_out).summary()

        ref_rows = set(reference.index)
        got_rows = list(resumed.index)
        lost = len(ref_rows - set(got_rows))
        extra = len(set(got_rows) - ref_rows)
        duplicated = len(got_rows) - len(set(got_rows))
        order = reference.index
        equal = not lost and not extra and not duplicated and resumed.loc[order].equals(reference)
        equal_failures = (sorted(zip(failures["file"], failures["stage"])) ==
                          sorted(zip(ref_failures["file"], ref_failures["stage"])))
        scored = resumed.index.get_level_values("file")[resumed.notna().all(axis=1)].nunique()
        reported = failures["file"].nunique()
        by_kind = pd.Series([kinds[f] for f in dict.fromkeys(failures["file"])]).value_counts()

        print(f"\nReliability benchmark: {args.files} files (2 s, 8 kHz), {int(round(args.files * BAD_FRACTION))} bad "
              f"({', '.join(BAD_KINDS)}), tiny CNN, seed {args.seed}, {os.cpu_count()} CPU cores")
        rows = [
            ("clean run: wall time (s)", f"{clean_seconds:.1f}"),
            ("clean run: files with rows / files reported", f"{reference.index.get_level_values('file').nunique()} / "
                                                   f"{ref_failures['file'].nunique()}"),
            *[(f"kill {k + 1}: files done when killed", f"{done} (target {target})" + ("" if died else ", had ended"))
              for k, ((done, died), target) in enumerate(zip(kills, (first, second)))],
            ("final resume: wall time (s)", f"{resume_seconds:.1f}"),
            ("files scored (all clips finite)", str(scored)),
            ("files reported in failures", f"{reported} ({', '.join(f'{v} {k}' for k, v in by_kind.items())})"),
            ("failure stages", ", ".join(f"{v} {k}" for k, v in failures["stage"].value_counts().items())),
            ("files quarantined", str(summary["files_quarantined"])),
            ("rows in reference / resumed", f"{len(reference)} / {len(resumed)}"),
            ("rows lost (goal 0)", str(lost)),
            ("rows extra / duplicated", f"{extra} / {duplicated}"),
            ("scores equal to the clean run", "yes" if equal else "NO"),
            ("failures equal to the clean run", "yes" if equal_failures else "NO"),
        ]
        width = max(len(r[0]) for r in rows)
        print(f"| {'measure':{width}} | value |")
        print(f"|{'-' * (width + 2)}|-------|")
        for name, value in rows:
            print(f"| {name:{width}} | {value} |")
    finally:
        if args.keep:
            print(f"\nkept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
