"""Every performance goal of issue 18 in one run and one table: opso_nb, the machine's ceiling, OpenSoundscape.

    python benchmarks/bench_all.py --quick          # a few minutes: 4-minute files, small training set
    python benchmarks/bench_all.py                  # 60-minute files, ~400 training clips, 10-hour prediction
    python benchmarks/bench_all.py --tasks predict_bf16 train --repeats 3
    python benchmarks/bench_all.py --markdown benchmarks/RESULTS_table.md

(``make bench`` runs the full set; ``make bench BENCH_ARGS=--quick`` the quick one.)

Each measurement runs in a fresh process, so its peak memory is its own and
imports are not timed; implementations are interleaved and repeated
(``--repeats``), and the table gives medians. Columns:

* opso_nb: seconds (clips/s for prediction and training) and peak memory,
  both the resident set (``VmHWM``; it includes the shared libraries torch
  maps, about 0.6 GB for its CUDA build) and the peak of the memory the
  process allocated itself (``RssAnon``, sampled every 20 ms);
* ceiling: the same amount of work at its bare minimum, in the same kind of
  process: ``soundfile`` reading the file and the FFTs of the same windows for
  the audio tasks, the network's forward pass (prediction) or forward,
  backward and optimiser step (training) on ready tensors, timed right after
  opso_nb's run in the same process, and "opso_nb / ceiling";
* OpenSoundscape (``$OPENSOUNDSCAPE_PYTHON``, or ``$OPSO_PYTHON``, a separate
  environment with OpenSoundscape) doing the same task, and the ratio
  OpenSoundscape time / opso_nb time (> 1: opso_nb is faster). For the torch
  tasks OpenSoundscape also runs with ``OMP_WAIT_POLICY=PASSIVE``, the
  OpenMP setting opso_nb makes on import, so the table separates what that
  setting gives on a busy machine from the rest.

Then the scaling table: opso_nb's seconds and peak memory for 1, 10 and 60
minutes of audio (and prediction over 10 hours; ``--quick``: 1 and 4
minutes), with seconds per audio minute, so cost linear in length and memory
flat in length can be read off.

Recordings are synthesized once into ``benchmarks/_data/`` (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, OPSO_MISSING, ROOT, opso_python

import bench_audio
import bench_prediction
import bench_ribbit

CLIP = 5.0  # s, prediction clips
PREDICT_BATCH = 16

# A child process: runs `setup` (not timed), then `work` (timed; sets `n`), while a thread samples the memory the
# process allocated itself, then `after` (not timed; may set `extra`). Prints one line of JSON. Any Python 3.8+.
RUNNER = r"""
import json, sys, threading, time
cfg = json.loads(sys.stdin.read())
path, minutes = cfg["path"], cfg["minutes"]
def _status(key):  # MB; VmHWM rather than ru_maxrss, which keeps the forking parent's peak across exec
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0
def _anon():
    return _status("RssAnon")
peak = [0.0]
done = threading.Event()
def _sample():
    while not done.is_set():
        peak[0] = max(peak[0], _anon())
        time.sleep(0.02)
extra = {}
exec(cfg["setup"])
threading.Thread(target=_sample, daemon=True).start()
start = time.perf_counter()
exec(cfg["work"])
seconds = time.perf_counter() - start
done.set()
peak[0] = max(peak[0], _anon())
exec(cfg.get("after", ""))  # not timed: e.g. the ceiling measured in the same warm process
print(json.dumps({"seconds": seconds, "n": n, "peak_mb": _status("VmHWM"),
                  "peak_anon_mb": peak[0], "extra": extra}))
"""

# ---------------------------------------------------------------------------------------------- snippets
# opso_nb first: it makes OpenMP's waiting threads sleep (OMP_WAIT_POLICY) before torch loads, as in a user's session
OURS_TORCH = "import opso_nb\nimport torch\ntorch.set_num_threads(cfg['threads'])\n"

FORWARD_RATE = """
def forward_rate(network, n_clips, batch, shape, amp_dtype, channels_last):
    import time, torch
    from opso_nb.ml.utils import autocast, to_network_input
    x = to_network_input(torch.rand(batch, *shape), "cpu", channels_last)
    with torch.inference_mode(), autocast("cpu", amp_dtype):
        network(x)
        start = time.perf_counter()
        for _ in range(max(1, n_clips // batch)):
            network(x)
    return max(1, n_clips // batch) * batch / (time.perf_counter() - start)
"""

PREDICT_OURS = (OURS_TORCH + FORWARD_RATE + """
from opso_nb.ml.cnn import CNN
from opso_nb.ml.prediction import predict
from opso_nb.ml.utils import autocast_dtype
torch.manual_seed(0)
model = CNN("resnet18", ["classA", "classB"], cfg["clip"], weights=None, device="cpu",
            use_amp=None if cfg["precision"] == "auto" else False)
amp = autocast_dtype("cpu", model.use_amp)
shape = (model.sample_shape[2], model.sample_shape[0], model.sample_shape[1])
net = model.network.eval()
# warm: oneDNN builds its kernels on the first calls, and the ceiling is timed warm too
forward_rate(net, cfg["batch"], cfg["batch"], shape, amp, model.channels_last)
""", """
n = len(predict(model, [path], batch_size=cfg["batch"], num_workers=cfg.get("workers", 0), progress=False,
                activation_layer="sigmoid", output_path=cfg.get("output_path")))
""", """
# the ceiling right after, in this process: on a shared machine the load changes from minute to minute
extra["ceiling_rate"] = forward_rate(net, max(4 * cfg["batch"], min(n, 240)), cfg["batch"], shape, amp,
                                     model.channels_last)
""")

PREDICT_OPSO = ("""
import torch, soundfile
torch.set_num_threads(cfg["threads"])
from opensoundscape import CNN
try:  # OpenSoundscape 0.9-0.12
    model = CNN("resnet18", ["classA", "classB"], cfg["clip"])
except TypeError:  # 0.13+: wants a sample rate, and fetches ImageNet weights unless given an architecture
    from opensoundscape.ml import cnn_architectures
    model = CNN(cnn_architectures.resnet18(num_classes=2, weights=None), ["classA", "classB"], cfg["clip"],
                sample_rate=soundfile.info(path).samplerate)
with torch.no_grad():  # warm, as opso_nb's run
    model.network.eval()(torch.rand(cfg["batch"], 3, 224, 224))
""", """
n = len(model.predict([path], batch_size=cfg["batch"], num_workers=cfg.get("workers", 0), activation_layer="sigmoid"))
""")

TRAIN_OURS = (OURS_TORCH + """
import pandas as pd
from opso_nb.ml.cnn import CNN
from opso_nb.ml.cnn_architectures import resnet18
from opso_nb.ml.utils import autocast, autocast_dtype, prepare_network, to_network_input
labels = pd.read_csv(cfg["labels"]).set_index(["file", "start_time", "end_time"])
torch.manual_seed(0)
model = CNN("resnet18", list(labels.columns), cfg["duration"], sample_shape=(cfg["size"], cfg["size"], 1),
            weights=None, device="cpu", verbose=0, use_amp=None if cfg.get("precision", "auto") == "auto" else False)
if cfg.get("no_augmentation"):
    for action in model.preprocessor.pipeline.values:
        action.bypass = action.bypass or action.is_augmentation
def epoch(table):
    model.train(table, epochs=1, batch_size=cfg["batch"], num_workers=cfg.get("workers", 0), save_path=cfg["tmp"],
                save_interval=0, invalid_samples_log=None)
epoch(labels.iloc[:cfg["batch"]])  # warm-up
if cfg.get("no_augmentation"):  # the epoch timed is the second: the first made the samples it keeps
    epoch(labels)
""", """
epoch(labels)
n = len(labels)
""", """
# the ceiling right after: forward, backward and step on ready tensors, in the same precision and layout
amp = autocast_dtype("cpu", model.use_amp)
net = prepare_network(resnet18(len(labels.columns), weights=None, num_channels=1), "cpu", model.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x = to_network_input(torch.rand(cfg["batch"], 1, cfg["size"], cfg["size"]), "cpu", model.channels_last)
y = torch.randint(0, 2, (cfg["batch"], len(labels.columns))).float()
loss_fn = torch.nn.BCEWithLogitsLoss()
steps = max(2, min(n, 160) // cfg["batch"])
for i in range(steps + 1):
    if i == 1:
        t = time.perf_counter()
    opt.zero_grad()
    with autocast("cpu", amp):
        out = net(x)
    loss_fn(out.float(), y).backward()
    opt.step()
extra["ceiling_rate"] = steps * cfg["batch"] / (time.perf_counter() - t)
""")

TRAIN_OPSO = ("""
import math, warnings
warnings.filterwarnings("ignore")
import pandas as pd, torch
torch.set_num_threads(cfg["threads"])
from opensoundscape import CNN
labels = pd.read_csv(cfg["labels"]).set_index(["file", "start_time", "end_time"])
classes = list(labels.columns)
try:  # OpenSoundscape 0.9-0.12: trains by epochs
    model = CNN("resnet18", classes, cfg["duration"], sample_shape=(cfg["size"], cfg["size"], 1))
    def epoch(table):
        model.train(table, epochs=1, batch_size=cfg["batch"], num_workers=cfg.get("workers", 0), save_path=cfg["tmp"],
                    invalid_samples_log=None)
except TypeError:  # 0.13+: wants a sample rate, trains by steps, fetches ImageNet weights unless given a network
    from opensoundscape.ml import cnn_architectures
    net = cnn_architectures.resnet18(num_classes=len(classes), weights=None, num_channels=1)
    model = CNN(net, classes, cfg["duration"], sample_rate=cfg["sample_rate"], height=cfg["size"],
                width=cfg["size"], channels=1)
    def epoch(table):
        model.train(table, steps=math.ceil(len(table) / cfg["batch"]), batch_size=cfg["batch"],
                    num_workers=cfg.get("workers", 0), save_path=cfg["tmp"], invalid_samples_log=None,
                    progress_bar=False, reload_best_at_end=False)
epoch(labels.iloc[:cfg["batch"]])  # warm-up
""", """
epoch(labels)
n = len(labels)
""")

RIBBIT_OURS = ("""
from opso_nb.ribbit import RibbitParams, run_ribbit
""", """
scores, failures = run_ribbit([path], [RibbitParams()], progress=False)
assert failures.empty
n = len(scores)
""")
RIBBIT_OPSO = ("""
from opensoundscape.audio import Audio
from opensoundscape.spectrogram import Spectrogram
from opensoundscape.ribbit import ribbit
""", """
spec = Spectrogram.from_audio(Audio.from_file(path))
n = len(ribbit(spec, signal_band=[1900, 2400], pulse_rate_range=[8, 20], clip_duration=2.0,
               noise_bands=[[0, 1500], [2500, 3500]]))
""")

LOCALIZE_OURS = ("""
import pandas as pd
from opso_nb.localization import SynchronizedRecorderArray
coords = pd.read_csv(cfg["coords"], index_col=0)
detections = pd.read_csv(cfg["detections"]).set_index(["file", "start_time", "end_time"])
array = SynchronizedRecorderArray(coords)
""", """
localized, unlocalized = array.localize_detections(detections, max_receiver_dist=200, min_n_receivers=4,
                                                   localization_algorithm="least_squares", num_workers=1,
                                                   speed_of_sound=cfg["speed_of_sound"])
n = len(localized) + len(unlocalized)
""")
LOCALIZE_OPSO = ("""
import pandas as pd
from opensoundscape.localization import SynchronizedRecorderArray
coords = pd.read_csv(cfg["coords"], index_col=0)
det = pd.read_csv(cfg["detections"])
t0 = pd.Timestamp("2024-05-01 05:00", tz="UTC")  # newer OpenSoundscape wants each clip's real-world start
det["start_timestamp"] = [(t0 + pd.Timedelta(seconds=s)).to_pydatetime() for s in det["start_time"]]
det = det.set_index(["file", "start_time", "end_time", "start_timestamp"])
array = SynchronizedRecorderArray(coords)
""", """
localized, unlocalized = array.localize_detections(det, max_receiver_dist=200, min_n_receivers=4, num_workers=1,
                                                   localization_algorithm="least_squares", return_unlocalized=True)
n = len(localized) + len(unlocalized)
""")
READ_FILES = ("""
import soundfile
""", """
n = sum(len(soundfile.read(f, dtype="float32")[0]) for f in cfg["files"])
""")


# ------------------------------------------------------------------------------------------------ running
def run(python, snippet, cfg, env_extra=None, pythonpath=ROOT):
    """One measurement in a fresh process: dict with seconds, n, peak_mb, peak_anon_mb, extra (or error)."""
    setup, work, *after = snippet
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env_extra or {})}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    else:
        env.pop("PYTHONPATH", None)
    payload = json.dumps({**cfg, "setup": setup, "work": work, "after": after[0] if after else ""})
    out = subprocess.run([python, "-c", RUNNER], input=payload, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"error": (lines[-1] if lines else "failed")[:100]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs):
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0] if runs else None
    pick = sorted(good, key=lambda r: r["seconds"])[len(good) // 2]  # the median run, so its figures belong together
    return {**pick, "runs": len(good),
            "ceiling_rate": statistics.median(r["extra"]["ceiling_rate"] for r in good)
            if all("ceiling_rate" in r.get("extra", {}) for r in good) else None}


class Task:
    """A row of the main table: opso_nb, a ceiling and OpenSoundscape, run interleaved."""

    def __init__(self, key, title, unit, ours, cfg, ceiling=None, opso=None, opso_passive=False, ceiling_name=""):
        self.key, self.title, self.unit, self.cfg = key, title, unit, cfg
        self.ours, self.ceiling, self.opso, self.opso_passive = ours, ceiling, opso, opso_passive
        self.ceiling_name = ceiling_name

    def measure(self, repeats, opso_python_path):
        contenders = [("opso_nb", sys.executable, self.ours, None, ROOT)]
        if self.ceiling is not None:
            contenders.append(("ceiling", sys.executable, self.ceiling, None, None))
        if self.opso is not None and opso_python_path:
            contenders.append(("OpenSoundscape", opso_python_path, self.opso, None, None))
            if self.opso_passive:
                contenders.append(("OpenSoundscape, passive", opso_python_path, self.opso,
                                   {"OMP_WAIT_POLICY": "PASSIVE"}, None))
        runs = {name: [] for name, *_ in contenders}
        for _ in range(repeats):  # interleaved, so the machine's load falls on every contender alike
            for name, python, snippet, env, path in contenders:
                runs[name].append(run(python, snippet, self.cfg, env, path))
                print(f"  {self.key:>14} {name:<24} {runs[name][-1].get('seconds', runs[name][-1].get('error'))}",
                      file=sys.stderr, flush=True)
        return {name: median_of(r) for name, r in runs.items()}


# ----------------------------------------------------------------------------------------------- the table
def rate_or_seconds(result, unit):
    if result is None:
        return None
    if "error" in result:
        return None
    return result["n"] / result["seconds"] if unit != "s" else result["seconds"]


def fmt(value, unit):
    if value is None:
        return "-"
    return f"{value:.2f} s" if unit == "s" else f"{value:.1f} {unit}"


def speedup(ours, theirs, unit):
    """OpenSoundscape time / opso_nb time."""
    if ours is None or theirs is None:
        return "-"
    return f"{(theirs / ours if unit == 's' else ours / theirs):.2f}x"


def table(tasks, results, have_opso):
    lines = ["| task | opso_nb | peak MB (allocated) | ceiling | opso_nb / ceiling | OpenSoundscape | peak MB "
             "(allocated) | ratio | OpenSoundscape, OMP passive | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        r = results[task.key]
        ours = r.get("opso_nb")
        o = rate_or_seconds(ours, task.unit)
        if ours is not None and "error" in ours:
            lines.append(f"| {task.title} | failed: {ours['error']} |||||||||")
            continue
        if ours and ours.get("ceiling_rate"):
            ceiling = ours["ceiling_rate"]
            ceiling_text = f"{ceiling:.1f} {task.unit} ({task.ceiling_name})"
            share = f"{100 * o / ceiling:.0f}%"
        elif r.get("ceiling") and "error" not in r["ceiling"]:
            c = r["ceiling"]["seconds"]
            ceiling_text = f"{c:.2f} s ({task.ceiling_name})"
            share = f"{100 * c / ours['seconds']:.0f}%"
        else:
            ceiling_text, share = "-", "-"
        mem = f"{ours['peak_mb']:.0f} ({ours['peak_anon_mb']:.0f})" if ours else "-"
        cells = [task.title, fmt(o, task.unit), mem, ceiling_text, share]
        theirs = r.get("OpenSoundscape")
        if theirs is None:
            cells += ["not installed" if not have_opso else "-", "", "", "", ""]
        elif "error" in theirs:
            cells += [f"failed: {theirs['error'][:40]}", "", "", "", ""]
        else:
            t = rate_or_seconds(theirs, task.unit)
            cells += [fmt(t, task.unit), f"{theirs['peak_mb']:.0f} ({theirs['peak_anon_mb']:.0f})",
                      speedup(o, t, task.unit)]
            passive = r.get("OpenSoundscape, passive")
            if passive is not None and "error" not in passive:
                tp = rate_or_seconds(passive, task.unit)
                cells += [fmt(tp, task.unit), speedup(o, tp, task.unit)]
            else:
                cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_table(rows):
    lines = ["| task | audio | seconds | seconds per audio minute | peak MB (allocated) |", "|---|---|---|---|---|"]
    for title, minutes, result in rows:
        if result is None or "error" in result:
            lines.append(f"| {title} | {minutes:g} min | failed: {(result or {}).get('error', '?')} | | |")
            continue
        length = f"{minutes / 60:g} h" if minutes >= 120 else f"{minutes:g} min"
        lines.append(f"| {title} | {length} | {result['seconds']:.2f} | {result['seconds'] / minutes:.3f} | "
                     f"{result['peak_mb']:.0f} ({result['peak_anon_mb']:.0f}) |")
    return "\n".join(lines)


def machine_line():
    load = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            f"(1 / 5 / 15 min) at the end, python {platform.python_version()}")


# ------------------------------------------------------------------------------------------------ the tasks
def build_tasks(args, work):
    minutes = 4 if args.quick else 60
    threads = os.cpu_count() or 1
    audio = str(bench_audio.synthesize(minutes))  # 32 kHz soundscape
    speech = str(bench_prediction.synthesize(DATA / f"synth_{minutes}min_{bench_prediction.SAMPLE_RATE}Hz.wav",
                                             minutes))
    toad = str(bench_ribbit.synthesize(minutes, 24000))
    base = {"minutes": minutes, "threads": threads}
    tasks = {}

    def add(task):
        tasks[task.key] = task

    fft = ("soundfile + bare FFTs", bench_audio.CEILINGS["clips"][1])
    add(Task("clips", f"{minutes} min: load + 5 s clips + their {minutes * 12} spectrograms", "s",
             bench_audio.NOW["clips"], {**base, "path": audio}, fft[1], bench_audio.OPENSOUNDSCAPE["clips"],
             ceiling_name=fft[0]))
    add(Task("whole", f"{minutes} min: one spectrogram of the whole file", "s", bench_audio.NOW["whole"],
             {**base, "path": audio}, fft[1], bench_audio.OPENSOUNDSCAPE["whole"], ceiling_name=fft[0]))
    add(Task("ribbit", f"{minutes} min: spectrogram + RIBBIT (24 kHz)", "s", RIBBIT_OURS, {**base, "path": toad},
             fft[1], RIBBIT_OPSO, ceiling_name=fft[0]))
    for precision, label in (("auto", "default precision (bf16)"), ("float32", "float32")):
        add(Task(f"predict_{'bf16' if precision == 'auto' else 'fp32'}",
                 f"{minutes} min: resnet18 prediction, {label}", "clips/s", PREDICT_OURS,
                 {**base, "path": speech, "clip": CLIP, "batch": PREDICT_BATCH, "precision": precision},
                 opso=PREDICT_OPSO, opso_passive=True, ceiling_name="forward pass on ready tensors"))
    n_clips = 48 if args.quick else 400
    labels = Path(work) / "tones" / "labels.csv"
    if {"train", "train_cached"} & set(args.tasks):
        from opso_nb.ml.utils import make_tone_dataset

        make_tone_dataset(labels.parent, n_per_class=n_clips // 2, duration=2.0, sample_rate=22050)
    train_cfg = {**base, "path": "", "labels": str(labels), "duration": 2.0, "size": 224, "batch": 16,
                 "sample_rate": 22050, "tmp": str(Path(work) / "train")}
    add(Task("train", f"one training epoch, {n_clips} clips of 2 s, resnet18 224x224x1", "clips/s", TRAIN_OURS,
             train_cfg, opso=TRAIN_OPSO, opso_passive=True, ceiling_name="forward + backward + step"))
    add(Task("train_cached", f"a later epoch, augmentation off (samples kept), {n_clips} clips", "clips/s",
             TRAIN_OURS, {**train_cfg, "no_augmentation": True}, ceiling_name="forward + backward + step"))
    if "localize" in args.tasks:
        add(localization_task(args, work, base))
    return tasks


def localization_task(args, work, base):
    import numpy as np
    import pandas as pd

    from bench_localization import RECEIVERS
    from opso_nb.localization import simulate_array_recordings

    n = 10 if args.quick else 40
    rng = np.random.default_rng(0)
    sources = pd.DataFrame({"x": rng.uniform(10, 90, n), "y": rng.uniform(10, 90, n), "z": rng.uniform(1, 5, n),
                            "time": np.arange(n) + 1.1, "class": "bird"})
    folder = Path(work) / "array"
    sim = simulate_array_recordings(RECEIVERS, sources, folder, duration=n + 2.0, seed=0)  # writes the CSVs too
    coords, detections = folder / "coords.csv", folder / "detections.csv"
    cfg = {**base, "path": "", "coords": str(coords), "detections": str(detections),
           "speed_of_sound": sim["speed_of_sound"], "files": [str(f) for f in sim["file_coords"].index]}
    return Task("localize", f"localize_detections, {len(RECEIVERS)} recorders, {n} calls", "s", LOCALIZE_OURS, cfg,
                READ_FILES, LOCALIZE_OPSO, ceiling_name="soundfile reading every recording")


SCALING_TITLES = {"clips": "load + 5 s clips + their spectrograms", "whole": "one spectrogram of the whole file",
                  "ribbit": "spectrogram + RIBBIT (24 kHz)", "predict_bf16": "resnet18 prediction (bf16), 24 kHz"}


def scaling(args, tasks):
    """opso_nb alone over several lengths: (title, minutes, result) rows."""
    lengths = [1, 4] if args.quick else [1, 10, 60]
    rows = []
    for minutes in lengths:
        audio = str(bench_audio.synthesize(minutes))
        speech = str(bench_prediction.synthesize(
            DATA / f"synth_{minutes}min_{bench_prediction.SAMPLE_RATE}Hz.wav", minutes))
        toad = str(bench_ribbit.synthesize(minutes, 24000))
        for key, path in (("clips", audio), ("whole", audio), ("ribbit", toad), ("predict_bf16", speech)):
            task = tasks[key]
            runs = [run(sys.executable, task.ours, {**task.cfg, "path": path, "minutes": minutes})
                    for _ in range(args.repeats)]
            rows.append((SCALING_TITLES[key], minutes, median_of(runs)))
            print(f"  scaling {key} {minutes} min: {rows[-1][2].get('seconds')}", file=sys.stderr, flush=True)
    if not args.quick:
        speech = str(bench_prediction.synthesize(DATA / f"synth_600min_{bench_prediction.SAMPLE_RATE}Hz.wav", 600))
        task = tasks["predict_bf16"]
        rows.append((SCALING_TITLES["predict_bf16"], 600,
                     run(sys.executable, task.ours, {**task.cfg, "path": speech, "minutes": 600})))
    return rows


ALL_TASKS = ["clips", "whole", "ribbit", "predict_bf16", "predict_fp32", "train", "train_cached", "localize"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4-minute files, 48 training clips, scaling 1-4 min")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each contender (default 3; quick 1)")
    parser.add_argument("--tasks", nargs="+", default=ALL_TASKS, choices=ALL_TASKS)
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    parser.add_argument("--no-opso", action="store_true", help="skip OpenSoundscape")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    opso = None if args.no_opso else opso_python()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_all_") as work:
        tasks = build_tasks(args, work)
        chosen = [tasks[k] for k in args.tasks if k in tasks]
        results = {task.key: task.measure(args.repeats, opso) for task in chosen}
        scale = [] if args.no_scaling else scaling(args, tasks)
    head = (f"opso_nb benchmarks ({'quick' if args.quick else 'full'}; median of {args.repeats} interleaved "
            f"run(s) each; {time.perf_counter() - started:.0f} s in all)\n{machine_line()}\n")
    text = head + "\n" + table(chosen, results, opso is not None) + "\n"
    if scale:
        text += "\nScaling (opso_nb alone):\n\n" + scaling_table(scale) + "\n"
    if not opso:
        text += "\n" + OPSO_MISSING + "\n"
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
