"""Localization throughput on a simulated array: events per second, 1 and 2 processes.

    python benchmarks/bench_localization.py [--sources 40]

Prints two tables: throughput (delay estimation + position for every candidate
event, with num_workers 1 and 2, and the position step alone per algorithm) and
accuracy per algorithm against the simulated truth. If an
OpenSoundscape environment exists (its python in $OPENSOUNDSCAPE_PYTHON), the
same simulated files are localized there too and shown side by side.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import OPSO_MISSING, opso_python
from opso_nb.localization import SynchronizedRecorderArray, events_to_df, localize, simulate_array_recordings

OPSO_SCRIPT = """
import json, sys, time, pandas as pd
from opensoundscape.localization import SynchronizedRecorderArray
coords = pd.read_csv(sys.argv[1], index_col=0)
det = pd.read_csv(sys.argv[2])
# newer OpenSoundscape wants each clip's real-world start time; the simulated files all start at t0
t0 = pd.Timestamp("2024-05-01 05:00", tz="UTC")
det["start_timestamp"] = [(t0 + pd.Timedelta(seconds=s)).to_pydatetime() for s in det["start_time"]]
det = det.set_index(["file", "start_time", "end_time", "start_timestamp"])
array = SynchronizedRecorderArray(coords)
t = time.perf_counter()
loc, unloc = array.localize_detections(det, max_receiver_dist=200, min_n_receivers=4, num_workers=int(sys.argv[3]),
                                       localization_algorithm="least_squares", return_unlocalized=True)
print(json.dumps({"seconds": time.perf_counter() - t, "events": len(loc) + len(unloc)}))
"""


def main():
    work = Path(tempfile.mkdtemp(prefix="bench_loc_"))
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    receivers = np.array([[0, 0, 2], [100, 0, 2], [100, 100, 2], [0, 100, 2], [50, 50, 2], [50, 0, 20]], float)
    # calls from the second clip on, with a spare clip at the end: OpenSoundscape reads max_delay beyond each clip
    duration = args.sources * 1.0 + 2
    sources = pd.DataFrame({"x": rng.uniform(10, 90, args.sources), "y": rng.uniform(10, 90, args.sources),
                            "z": rng.uniform(1, 5, args.sources), "time": np.arange(args.sources) + 1.1,
                            "class": "bird"})
    sim = simulate_array_recordings(receivers, sources, work, duration=duration, seed=0)
    array = SynchronizedRecorderArray(sim["file_coords"])
    opso = opso_python()
    rows = []
    for workers in (1, 2):
        start = time.perf_counter()
        localized, unlocalized = array.localize_detections(sim["detections"], max_receiver_dist=200, min_n_receivers=4,
                                                           localization_algorithm="least_squares",
                                                           num_workers=workers, speed_of_sound=sim["speed_of_sound"])
        seconds = time.perf_counter() - start
        n = len(localized) + len(unlocalized)
        rows.append((f"opso_nb delays + position, {workers} process(es)", n, n / seconds))
        if opso:
            out = subprocess.run([opso, "-c", OPSO_SCRIPT, str(work / "coords.csv"), str(work / "detections.csv"),
                                  str(workers)], capture_output=True, text=True)
            if out.returncode == 0:
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((f"OpenSoundscape delays + position, {workers} process(es)", r["events"],
                             r["events"] / r["seconds"]))
            else:
                rows.append((f"OpenSoundscape ({workers}): failed: {out.stderr.strip()[-80:]}", 0, float("nan")))
    accuracy = []
    truth = sources.assign(clip_start=np.floor(sources["time"])).set_index(["class", "clip_start"])
    for algorithm in ("gillette", "soundfinder", "least_squares"):
        localized, unlocalized = array.localize_detections(sim["detections"], max_receiver_dist=200, min_n_receivers=4,
                                                           localization_algorithm=algorithm,
                                                           speed_of_sound=sim["speed_of_sound"])
        table = events_to_df(localized)
        true_xyz = truth.loc[list(zip(table["class"], table["start_time"]))][["x", "y", "z"]].to_numpy()
        error = np.linalg.norm(table[["x", "y", "z"]].to_numpy() - true_xyz, axis=1)
        error_xy = np.linalg.norm(table[["x", "y"]].to_numpy() - true_xyz[:, :2], axis=1)
        accuracy.append((algorithm, len(localized), len(unlocalized), np.median(error), np.percentile(error, 90),
                         np.median(error_xy), table["residual_rms"].median()))
    tdoas = np.linalg.norm(receivers - [40, 60, 3], axis=1) / 343
    for algorithm in ("gillette", "soundfinder", "least_squares"):
        start = time.perf_counter()
        for _ in range(500):
            localize(receivers, tdoas - tdoas[0], algorithm)
        rows.append((f"position only, {algorithm}", 500, 500 / (time.perf_counter() - start)))
    if not opso:
        print(OPSO_MISSING + "\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'task':<{width}}  {'events':>7}  {'events/s':>10}")
    print("-" * (width + 21))
    for task, n, rate in rows:
        print(f"{task:<{width}}  {n:>7}  {rate:>10.1f}")
    print(f"\naccuracy on the same array ({args.sources} calls, noise -50 dBFS, 6 recorders, 100 m square)")
    print(f"{'algorithm':<14} {'localized':>9} {'failed':>6} {'median 3-D err (m)':>19} {'90th pct (m)':>13} "
          f"{'median 2-D err (m)':>19} {'median resid (m)':>17}")
    for name, n_loc, n_fail, med, p90, med_xy, resid in accuracy:
        print(f"{name:<14} {n_loc:>9} {n_fail:>6} {med:>19.3f} {p90:>13.3f} {med_xy:>19.3f} {resid:>17.3f}")


if __name__ == "__main__":
    main()
