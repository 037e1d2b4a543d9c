"""Localization throughput and accuracy on a simulated array, side by side with OpenSoundscape.

    python benchmarks/bench_localization.py [--sources 40] [--repeats 2]

The array: six recorders on a 100 m square (one in the middle, one on a 20 m
mast), ``--sources`` calls of one class, one per 1 s clip, noise at -50 dBFS.
Every detection is the reference of one candidate event (six per call).

Rows of the throughput table (events per second, best of ``--repeats``
interleaved runs; ratio = OpenSoundscape time / opso_nb time):

- *one event at a time*: each event reads and band-passes its own segments and
  cross-correlates its receivers alone (``SpatialEvent.estimate_delays`` then
  ``estimate_location`` per event): the way ``localize_detections`` worked
  before clip batching.
- *localize_detections*: events of one clip share each filtered segment
  (``SegmentCache``) and one FFT per segment; all pairs of the clip are
  cross-correlated in batched inverse FFTs with worker threads.
- *into a run folder*: ``localize_detections(output_path=...)``, storing each
  reference recording's events as they finish (resumable); a fresh folder
  each time, so nothing is reused.
- OpenSoundscape's ``localize_detections`` on the same files, when
  ``$OPENSOUNDSCAPE_PYTHON`` (or ``$OPSO_PYTHON``) points to its python.

The accuracy table compares positions with the simulated truth, for each
algorithm here and for OpenSoundscape (least squares, its default).
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
from opso_nb.localization import (
    SegmentCache,
    SynchronizedRecorderArray,
    events_to_df,
    localize,
    simulate_array_recordings,
)

RECEIVERS = np.array([[0, 0, 2], [100, 0, 2], [100, 100, 2], [0, 100, 2], [50, 50, 2], [50, 0, 20]], float)
SETTINGS = dict(max_receiver_dist=200, min_n_receivers=4)

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
seconds = time.perf_counter() - t
rows = [{"class": e.class_name, "start_time": (pd.Timestamp(e.start_timestamp) - t0).total_seconds(),
         "x": float(e.location_estimate[0]), "y": float(e.location_estimate[1]), "z": float(e.location_estimate[2]),
         "residual_rms": float(e.residual_rms)} for e in loc]
print(json.dumps({"seconds": seconds, "events": len(loc) + len(unloc), "localized": rows}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_loc_"))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def one_event_at_a_time(array, detections, speed_of_sound):
    """Each event reads, filters and cross-correlates its own segments (no sharing between events)."""
    events = array.create_candidate_events(detections, SETTINGS["min_n_receivers"], SETTINGS["max_receiver_dist"])
    for event in events:
        try:
            event.estimate_delays(speed_of_sound=speed_of_sound, cache=SegmentCache())
            event.estimate_location("least_squares", cc_threshold=0, min_n_receivers=SETTINGS["min_n_receivers"],
                                    speed_of_sound=speed_of_sound)
        except Exception as err:  # counted, as localize_detections would
            event.error = str(err)
    return events


def run_opso(opso, work, workers):
    out = subprocess.run([opso, "-c", OPSO_SCRIPT, str(work / "coords.csv"), str(work / "detections.csv"),
                          str(workers)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-120:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def accuracy(table, truth):
    """Median and 90th-percentile 3-D error, median 2-D error and residual (m) of localized rows."""
    if not len(table):
        return [np.nan] * 4
    true_xyz = truth.loc[list(zip(table["class"], table["start_time"]))][["x", "y", "z"]].to_numpy()
    error = np.linalg.norm(table[["x", "y", "z"]].to_numpy() - true_xyz, axis=1)
    error_xy = np.linalg.norm(table[["x", "y"]].to_numpy() - true_xyz[:, :2], axis=1)
    return [np.median(error), np.percentile(error, 90), np.median(error_xy), table["residual_rms"].median()]


def run(work: Path, args):
    rng = np.random.default_rng(0)
    # calls from the second clip on, with a spare clip at the end: OpenSoundscape reads max_delay beyond each clip
    duration = args.sources * 1.0 + 2
    sources = pd.DataFrame({"x": rng.uniform(10, 90, args.sources), "y": rng.uniform(10, 90, args.sources),
                            "z": rng.uniform(1, 5, args.sources), "time": np.arange(args.sources) + 1.1,
                            "class": "bird"})
    sim = simulate_array_recordings(RECEIVERS, sources, work, duration=duration, seed=0)
    c = sim["speed_of_sound"]
    array = SynchronizedRecorderArray(sim["file_coords"])
    truth = sources.assign(clip_start=np.floor(sources["time"])).set_index(["class", "clip_start"])
    opso = opso_python()

    timings: dict = {}
    results: dict = {}

    def timed(name, function):
        start = time.perf_counter()
        value = function()
        timings.setdefault(name, []).append(time.perf_counter() - start)
        results[name] = value

    for _ in range(args.repeats):  # interleaved, so background load hits every contender alike
        timed("one event at a time, 1 process", lambda: one_event_at_a_time(array, sim["detections"], c))
        for workers in (1, 2):
            timed(f"localize_detections, {workers} process(es)", lambda w=workers: array.localize_detections(
                sim["detections"], localization_algorithm="least_squares", num_workers=w, speed_of_sound=c,
                **SETTINGS))
            if workers == 1:  # the same, each reference recording's events stored as they finish (resumable)
                store = work / f"store-{len(timings.get('localize_detections into a run folder, 1 process', []))}"
                timed("localize_detections into a run folder, 1 process", lambda: array.localize_detections(
                    sim["detections"], localization_algorithm="least_squares", speed_of_sound=c,
                    output_path=store, **SETTINGS))
            if opso:
                r = run_opso(opso, work, workers)
                if "error" not in r:
                    timings.setdefault(f"OpenSoundscape, {workers} process(es)", []).append(r["seconds"])
                    results[f"OpenSoundscape, {workers} process(es)"] = r
                else:
                    results[f"OpenSoundscape, {workers} process(es)"] = r

    n_events = len(results["one event at a time, 1 process"])
    print(f"{args.sources} calls, {len(RECEIVERS)} recorders, {n_events} candidate events, best of {args.repeats}\n")
    if not opso:
        print(OPSO_MISSING + "\n")
    opso_best = {w: min(timings.get(f"OpenSoundscape, {w} process(es)", [np.nan])) for w in (1, 2)}
    width = 46
    print(f"{'task':<{width}} {'seconds':>8} {'events/s':>9} {'vs OpenSoundscape':>18}")
    print("-" * (width + 38))
    for name, seconds in timings.items():
        best = min(seconds)
        workers = 2 if "2 process" in name else 1
        ratio = opso_best[workers] / best if not name.startswith("OpenSoundscape") else np.nan
        ratio_text = f"{ratio:>17.1f}x" if np.isfinite(ratio) else f"{'':>18}"
        print(f"{name:<{width}} {best:>8.2f} {n_events / best:>9.1f} {ratio_text}")
    for workers in (1, 2):
        r = results.get(f"OpenSoundscape, {workers} process(es)")
        if r and "error" in r:
            print(f"OpenSoundscape, {workers} process(es): failed: {r['error']}")

    # the batched path must give the same numbers as one event at a time
    single = results["one event at a time, 1 process"]
    batched, unbatched_left = results["localize_detections, 1 process(es)"]
    batched = {(e.start_time, e.receiver_files[0]): e for e in batched + unbatched_left}
    tdoa_diff = max(float(np.abs(e.tdoas - batched[(e.start_time, e.receiver_files[0])].tdoas).max())
                    for e in single if e.tdoas is not None)
    print(f"\nlargest TDOA difference, batched vs one event at a time: {tdoa_diff:.2e} s")

    tdoas = np.linalg.norm(RECEIVERS - [40, 60, 3], axis=1) / 343
    print(f"\n{'position only (500 solves)':<{width}} {'seconds':>8} {'solves/s':>9}")
    for algorithm in ("gillette", "soundfinder", "least_squares"):
        start = time.perf_counter()
        for _ in range(500):
            localize(RECEIVERS, tdoas - tdoas[0], algorithm)
        seconds = time.perf_counter() - start
        print(f"{algorithm:<{width}} {seconds:>8.2f} {500 / seconds:>9.1f}")

    print(f"\naccuracy against the simulated truth ({args.sources} calls, noise -50 dBFS)")
    header = (f"{'algorithm':<28} {'localized':>9} {'failed':>6} {'median 3-D (m)':>15} {'90th pct (m)':>13} "
              f"{'median 2-D (m)':>15} {'median resid (m)':>17}")
    print(header)
    for algorithm in ("gillette", "soundfinder", "least_squares"):
        localized, unlocalized = array.localize_detections(sim["detections"], localization_algorithm=algorithm,
                                                           speed_of_sound=c, **SETTINGS)
        stats = accuracy(events_to_df(localized), truth)
        print(f"{'opso_nb ' + algorithm:<28} {len(localized):>9} {len(unlocalized):>6} "
              + " ".join(f"{v:>{w}.3f}" for v, w in zip(stats, (15, 13, 15, 17))))
    r = results.get("OpenSoundscape, 1 process(es)")
    if r and "error" not in r:
        table = pd.DataFrame(r["localized"], columns=["class", "start_time", "x", "y", "z", "residual_rms"])
        table["start_time"] = np.round(table["start_time"], 6)
        stats = accuracy(table, truth)
        print(f"{'OpenSoundscape least_squares':<28} {len(table):>9} {r['events'] - len(table):>6} "
              + " ".join(f"{v:>{w}.3f}" for v, w in zip(stats, (15, 13, 15, 17))))


if __name__ == "__main__":
    main()
