"""Raven table I/O and clip-label speed on a synthesized day of annotations.

Run by hand (not part of the tests):

    python benchmarks/bench_annotations.py               # 20,000 boxes over 24 h
    python benchmarks/bench_annotations.py --boxes 100000

Prints a table (wall-clock and CPU seconds): reading the table with
``BoxedAnnotations.from_raven_files`` against a bare ``pandas.read_csv`` of the
same file (the floor: no validation, no error reporting), reading it saved as
UTF-16, writing it back with ``to_raven_files``, and one-hot
labels for 3 s clips with the vectorised ``one_hot_clip_labels`` against a
clip-by-clip loop (the straightforward way: filter the boxes for each clip),
timed on the first 1000 clips and scaled to all clips.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from opso_nb.annotations import BoxedAnnotations

DATA = Path(__file__).resolve().parent / "_data"


def synthesize(n_boxes: int, hours: float = 24, n_classes: int = 20) -> Path:
    path = DATA / f"raven_{n_boxes}_boxes.Table.1.selections.txt"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    start = np.sort(rng.uniform(0, hours * 3600 - 5, n_boxes))
    length = rng.uniform(0.05, 4, n_boxes)
    low = rng.uniform(200, 6000, n_boxes)
    df = pd.DataFrame({
        "Selection": np.arange(1, n_boxes + 1), "View": "Spectrogram 1", "Channel": 1,
        "Begin Time (s)": start, "End Time (s)": start + length,
        "Low Freq (Hz)": low, "High Freq (Hz)": low + rng.uniform(200, 4000, n_boxes),
        "Species": [f"sp{k:02d}" for k in rng.integers(0, n_classes, n_boxes)],
        "Notes": "",
    })
    df.to_csv(path, sep="\t", index=False)
    return path


def timed(fn, repeats=3):
    """Best wall-clock seconds of ``repeats`` runs, the CPU seconds of that run, and the result.

    CPU seconds are steadier than wall time on a machine shared with other work.
    """
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if wall < best:
            best, best_cpu = wall, cpu
    return (best, best_cpu), out


def loop_labels(df, clips, classes, min_overlap):
    """Clip-by-clip reference: filter the boxes overlapping each clip."""
    out = np.zeros((len(clips), len(classes)))
    for i, (t0, t1) in enumerate(clips):
        hit = df[(df.start_time < t1) & (df.end_time > t0)]
        overlap = np.minimum(hit.end_time, t1) - np.maximum(hit.start_time, t0)
        present = set(hit.annotation[overlap >= min_overlap])
        out[i] = [c in present for c in classes]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20000)
    args = parser.parse_args()
    table = synthesize(args.boxes)
    hours = 24
    rows = []

    t_read, ann = timed(lambda: BoxedAnnotations.from_raven_files([table], audio_files=["day.wav"]))
    t_pandas, _ = timed(lambda: pd.read_csv(table, sep="\t"))
    rows.append(("read table: from_raven_files", t_read, f"{len(ann)} boxes"))
    rows.append(("read table: bare pandas.read_csv", t_pandas, "no checks"))
    utf16 = table.with_name(table.name.replace(".Table.", ".utf16.Table."))
    if not utf16.exists():
        utf16.write_bytes(table.read_text(encoding="utf-8").encode("utf-16"))  # as Raven on Windows writes
    t_utf16, _ = timed(lambda: BoxedAnnotations.from_raven_files([utf16], audio_files=["day.wav"]))
    rows.append(("read table: from_raven_files, UTF-16", t_utf16, "decoded from its byte-order mark"))

    with tempfile.TemporaryDirectory() as tmp:
        t_write, _ = timed(lambda: ann.to_raven_files(tmp))
    rows.append(("write table: to_raven_files", t_write, "atomic"))

    kwargs = dict(clip_duration=3, clip_overlap=0, min_label_overlap=0.25, min_label_fraction=None,
                  full_duration=hours * 3600)
    t_vec, labels = timed(lambda: ann.one_hot_clip_labels(**kwargs))
    n_clips = len(labels)
    rows.append(("clip labels: one_hot_clip_labels", t_vec, f"{n_clips} clips x {labels.shape[1]} classes"))

    sub = 1000
    clips = list(zip(labels.index.get_level_values("start_time")[:sub], labels.index.get_level_values("end_time")[:sub]))
    t_loop, ref = timed(lambda: loop_labels(ann.df, clips, list(labels.columns), 0.25), repeats=1)
    assert np.array_equal(ref, labels.values[:sub]), "vectorised labels differ from the loop"
    scale = n_clips / sub
    rows.append(("clip labels: clip-by-clip loop (scaled)", (t_loop[0] * scale, t_loop[1] * scale),
                 f"timed on {sub} clips; same labels"))

    width = max(len(r[0]) for r in rows)
    print(f"{args.boxes} boxes over {hours} h, 20 classes\n")
    print(f"{'operation':<{width}}  {'seconds':>9}  {'CPU s':>9}  notes")
    print(f"{'-' * width}  {'-' * 9}  {'-' * 9}  -----")
    for name, (seconds, cpu), note in rows:
        print(f"{name:<{width}}  {seconds:>9.3f}  {cpu:>9.3f}  {note}")
    print(f"\nspeed-up of vectorised clip labels over the loop: {t_loop[0] * scale / t_vec[0]:.0f}x")


if __name__ == "__main__":
    main()
