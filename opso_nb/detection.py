"""Turn score tables into decisions: thresholds, detections, precision/recall, Raven export.

A score table is the clip table returned by :func:`opso_nb.ml.prediction.predict`:
a DataFrame indexed by ``(file, start_time, end_time)`` (seconds) with one
column of scores per class. Everything here works on that shape.

Thresholds are given per class in any of these forms: one number for all
classes, a list/array in column order, a dict ``{class: threshold}`` or a
pandas Series indexed by class. A clip is a detection of a class when its score
reaches that class's threshold (``score >= threshold``); NaN scores (clips that
failed to load) are never detections. This is the rule of OpenSoundscape 0.13
(``predict_multi_target_labels`` computes ``scores >= threshold``, and
``multi_target_metrics`` documents it), of :func:`opso_nb.metrics.multi_target_metrics`
and of ``sklearn.metrics.precision_recall_curve``, so a threshold read off
:func:`precision_recall_curve_table`, :func:`threshold_for_precision` or
:func:`opso_nb.review.calibrate` means the same clips when :func:`detect` applies it.

:func:`predict_multi_target_labels` and :func:`predict_single_target_labels` are
those of :mod:`opso_nb.metrics` (re-exported here): one implementation, so both
import paths give the same labels.

Examples
--------
>>> import pandas as pd
>>> idx = pd.MultiIndex.from_tuples(
...     [("a.wav", 0.0, 5.0), ("a.wav", 5.0, 10.0)], names=["file", "start_time", "end_time"])
>>> scores = pd.DataFrame({"frog": [0.9, 0.2], "bird": [0.1, 0.7]}, index=idx)
>>> detect(scores, {"frog": 0.5, "bird": 0.5}).values.tolist()
[[True, False], [False, True]]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from opso_nb.annotations import BoxedAnnotations
from opso_nb.audio import audio_info
from opso_nb.metrics import predict_multi_target_labels, predict_single_target_labels, threshold_array
from opso_nb.store import as_clip_index, file_name_index, reset_clip_index, utf8_name, utf8_names
from opso_nb.utils import CLIP_INDEX, atomic_write

__all__ = [
    "thresholds_per_class",
    "detect",
    "predict_multi_target_labels",
    "predict_single_target_labels",
    "detection_counts",
    "threshold_metrics",
    "precision_recall_curve_table",
    "threshold_for_precision",
    "top_clips",
    "detections_table",
    "merge_detections",
    "write_detections_csv",
    "write_raven_tables",
]

#: Columns of the long detection table made by :func:`detections_table`.
DETECTION_COLUMNS = ["file", "start_time", "end_time", "class", "score"]


def _score_frame(scores) -> pd.DataFrame:
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"scores must be a pandas DataFrame (clips x classes), got {type(scores).__name__}")
    if scores.shape[1] == 0:
        raise ValueError("scores has no class columns")
    bad = [c for c in scores.columns if not pd.api.types.is_numeric_dtype(scores[c])]
    if bad:
        raise ValueError(f"score columns must be numeric; non-numeric columns: {bad[:5]}")
    return scores


def thresholds_per_class(scores: pd.DataFrame, threshold) -> pd.Series:
    """Expand ``threshold`` to one value per class column of ``scores``.

    Parameters
    ----------
    scores : DataFrame
        Score table (columns are classes).
    threshold : float, list, array, dict or Series
        One threshold for all classes, one per column (in column order), or a
        mapping class -> threshold that covers every column.

    Returns
    -------
    pandas.Series
        Threshold per class, indexed by the column names of ``scores``.

    Raises
    ------
    ValueError
        Wrong number of thresholds, missing classes, or NaN thresholds
        (see :func:`opso_nb.metrics.threshold_array`).
    """
    values = threshold_array(threshold, list(scores.columns))
    return pd.Series(values, index=scores.columns, name="threshold")


def detect(scores: pd.DataFrame, threshold) -> pd.DataFrame:
    """Boolean detections: True where a clip's score reaches its class threshold (``score >= threshold``).

    Parameters
    ----------
    scores : DataFrame
        Score table (clips x classes).
    threshold : float, list, dict or Series
        Threshold(s) per class, see :func:`thresholds_per_class`.

    Returns
    -------
    DataFrame of bool
        Same index and columns as ``scores``. NaN scores give False.
    """
    scores = _score_frame(scores)
    thr = thresholds_per_class(scores, threshold)
    values = scores.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        hits = values >= thr.to_numpy()[None, :]
    return pd.DataFrame(hits, index=scores.index, columns=scores.columns)


def detection_counts(scores: pd.DataFrame, threshold) -> pd.Series:
    """Number of clips per class whose score reaches the threshold (``score >= threshold``)."""
    return detect(scores, threshold).sum().astype(int).rename("detections")


def _aligned_labels(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(labels, pd.DataFrame):
        raise TypeError(f"labels must be a DataFrame of 0/1 per class, got {type(labels).__name__}")
    missing = [c for c in scores.columns if c not in labels.columns]
    if missing:
        raise ValueError(f"labels have no column for classes {missing}")
    try:
        aligned = labels.reindex(scores.index)[list(scores.columns)]
    except ValueError as err:  # duplicate index entries
        raise ValueError(f"labels and scores must have unique, matching indexes ({err})") from err
    no_label = aligned.isna().all(axis=1)
    if no_label.all():
        raise ValueError("no clip of scores has a label: the indexes of scores and labels do not match")
    return aligned


def threshold_metrics(scores: pd.DataFrame, labels: pd.DataFrame, threshold) -> pd.DataFrame:
    """Precision, recall and F1 per class at the given threshold(s).

    A clip is detected when its score reaches the threshold (``score >=
    threshold``, as :func:`detect`). Clips without a label (NaN, or absent from
    ``labels``) or without a score (NaN) are left out of that class's counts.

    Parameters
    ----------
    scores : DataFrame
        Score table (clips x classes).
    labels : DataFrame
        True labels, 1/True = present, same index as ``scores``, a column per class.
    threshold : float, list, dict or Series
        Threshold(s) per class.

    Returns
    -------
    DataFrame
        One row per class: threshold, tp, fp, fn, tn, precision, recall, f1,
        n_positive. Where a ratio is undefined it is 0, as in
        :mod:`opso_nb.metrics` (scikit-learn's ``zero_division=0``): precision
        when nothing is detected, recall when there are no positives.
    """
    scores = _score_frame(scores)
    labels = _aligned_labels(scores, labels)
    thr = thresholds_per_class(scores, threshold)
    rows = []
    for cls in scores.columns:
        s = scores[cls].to_numpy(dtype=float)
        y = labels[cls].to_numpy(dtype=float)
        keep = ~(np.isnan(s) | np.isnan(y))
        s, y = s[keep], y[keep] > 0
        hit = s >= thr[cls]
        tp = int(np.sum(hit & y))
        fp = int(np.sum(hit & ~y))
        fn = int(np.sum(~hit & y))
        tn = int(np.sum(~hit & ~y))
        rows.append((cls, thr[cls], tp, fp, fn, tn, *_prf(tp, fp, fn), int(y.sum())))
    return pd.DataFrame(
        rows,
        columns=["class", "threshold", "tp", "fp", "fn", "tn", "precision", "recall", "f1", "n_positive"],
    ).set_index("class")


def _prf(tp, fp, fn):
    """Precision, recall and F1 from counts; 0 where undefined, as :mod:`opso_nb.metrics` (``zero_division=0``)."""
    tp, fp, fn = (np.asarray(v, dtype=float) for v in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    if precision.ndim == 0:
        return float(precision), float(recall), float(f1)
    return precision, recall, f1


def _precision_recall_at_thresholds(scores, present, weights=None) -> dict:
    """Counts, precision, recall and F1 with every distinct score as the threshold (``score >= threshold``).

    The one precision/recall-at-threshold computation of opso_nb: both
    :func:`precision_recall_curve_table` and
    :func:`opso_nb.review.precision_recall_table` are built on it. Precision
    and recall equal those of ``sklearn.metrics.precision_recall_curve`` (same
    rule, same thresholds, ``sample_weight`` as ``weights``) without its last
    point (nothing detected, no threshold); undefined ratios are 0 as in
    :mod:`opso_nb.metrics`, where scikit-learn's curve sets recall to 1 for a
    class without positives.

    Parameters
    ----------
    scores : array-like of float
        Finite scores (drop NaN first).
    present : array-like of bool
        True where the clip holds the class.
    weights : array-like of float, optional
        How many clips each one stands for (inclusion weights of a stratified
        review); default 1 each.

    Returns
    -------
    dict of numpy arrays, one value per distinct score, ascending
        ``threshold``; ``n_detected`` (clips with score >= threshold, unweighted);
        ``tp``, ``fp``, ``fn`` (weighted counts); ``precision``, ``recall``, ``f1``.
    """
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(present, dtype=bool).ravel()
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=float).ravel()
    if not len(s) == len(y) == len(w):
        raise ValueError(f"scores ({len(s)}), labels ({len(y)}) and weights ({len(w)}) differ in length")
    # highest score first; the last clip of each run of tied scores closes that threshold's counts,
    # so tied clips are detected together (as in scikit-learn's curve)
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1] if len(s) else np.array([], dtype=int)
    tp = np.cumsum(w * y)[last] if len(s) else np.array([])
    fp = np.cumsum(w * ~y)[last] if len(s) else np.array([])
    fn = (tp[-1] if len(tp) else 0.0) - tp
    precision, recall, f1 = _prf(tp, fp, fn)
    ascending = slice(None, None, -1)
    return {"threshold": s[last][ascending], "n_detected": (last + 1)[ascending], "tp": tp[ascending],
            "fp": fp[ascending], "fn": fn[ascending], "precision": precision[ascending],
            "recall": recall[ascending], "f1": f1[ascending]}


def precision_recall_curve_table(scores: pd.DataFrame, labels: pd.DataFrame, classes=None) -> pd.DataFrame:
    """Precision, recall and F1 of each class at every useful threshold.

    The thresholds are the distinct scores of the class's labelled clips; at
    threshold ``t`` a clip is detected when its score is >= ``t`` (as
    :func:`detect` and ``sklearn.metrics.precision_recall_curve``), so the
    lowest threshold detects every clip. Clips without a score or a label
    (NaN) are left out. Undefined ratios are 0 (see :func:`threshold_metrics`).

    Returns
    -------
    DataFrame
        Columns class, threshold, tp, fp, fn, precision, recall, f1; rows sorted
        by class then increasing threshold.
    """
    scores = _score_frame(scores)
    labels = _aligned_labels(scores, labels)
    frames = []
    for cls in classes if classes is not None else scores.columns:
        s = scores[cls].to_numpy(dtype=float)
        y = labels[cls].to_numpy(dtype=float)
        keep = ~(np.isnan(s) | np.isnan(y))
        curve = _precision_recall_at_thresholds(s[keep], y[keep] > 0)
        frames.append(pd.DataFrame({
            "class": cls, "threshold": curve["threshold"], "tp": curve["tp"].astype(int),
            "fp": curve["fp"].astype(int), "fn": curve["fn"].astype(int), "precision": curve["precision"],
            "recall": curve["recall"], "f1": curve["f1"],
        }))
    return pd.concat(frames, ignore_index=True)


def threshold_for_precision(scores: pd.DataFrame, labels: pd.DataFrame, target_precision: float = 0.9) -> pd.Series:
    """Lowest threshold per class whose precision reaches ``target_precision``.

    Classes that never reach it get NaN. Use on labelled validation clips, then
    apply the thresholds to field scores with :func:`detect` (the same
    ``score >= threshold`` rule, so the validation precision carries over).
    """
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    curve = precision_recall_curve_table(scores, labels)
    out = {}
    for cls in scores.columns:
        c = curve[(curve["class"] == cls) & (curve["precision"] >= target_precision)]
        out[cls] = float(c["threshold"].min()) if len(c) else np.nan
    return pd.Series(out, name="threshold")


def top_clips(scores: pd.DataFrame, class_name, n: int = 3, allow_overlap: bool = False) -> pd.DataFrame:
    """The ``n`` highest-scoring clips of one class, for listening.

    With overlapping clips the best few are usually neighbours covering one call;
    by default a clip overlapping an already chosen clip of the same file is skipped,
    so you hear ``n`` different moments.

    Returns
    -------
    DataFrame
        Indexed by (file, start_time, end_time), one column ``score``, best first.
    """
    scores = _score_frame(scores)
    if class_name not in scores.columns:
        raise ValueError(f"no class {class_name!r} in scores; classes are {list(scores.columns)}")
    col = scores[class_name].dropna().sort_values(ascending=False, kind="mergesort")
    chosen = []
    for key, value in col.items():
        if len(chosen) >= n:
            break
        file, start, end = key
        if not allow_overlap and any(f == file and start < e and s < end for (f, s, e), _ in chosen):
            continue
        chosen.append((key, value))
    index = as_clip_index(k for k, _ in chosen)  # keeps file names that are not valid UTF-8
    return pd.DataFrame({"score": np.array([v for _, v in chosen], dtype=float)}, index=index)


def detections_table(scores: pd.DataFrame, threshold, merge: bool = False) -> pd.DataFrame:
    """Long table of detections: one row per (clip, class) whose score reaches the threshold (see :func:`detect`).

    Parameters
    ----------
    scores : DataFrame
        Score table indexed by (file, start_time, end_time).
    threshold : float, list, dict or Series
        Threshold(s) per class.
    merge : bool
        Merge overlapping or touching detections of the same class in the same
        file into one event (useful with overlapping clips); the event's score
        is the maximum of its clips.

    Returns
    -------
    DataFrame
        Columns file, start_time, end_time (s), class, score; sorted by file,
        start time and class.
    """
    scores = _score_frame(scores)
    if list(scores.index.names) != CLIP_INDEX:
        raise ValueError(f"scores must be indexed by {CLIP_INDEX}, got {list(scores.index.names)}")
    hits = detect(scores, threshold)
    flat = reset_clip_index(scores)
    rows = []
    for cls in scores.columns:
        mask = hits[cls].to_numpy()
        part = flat.loc[mask, CLIP_INDEX].copy()
        part["class"] = cls
        part["score"] = flat.loc[mask, cls].to_numpy(dtype=float)
        rows.append(part)
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=DETECTION_COLUMNS)
    out = _sorted_detections(out[DETECTION_COLUMNS])
    return merge_detections(out) if merge else out


def _file_codes(files):
    """``(names, codes)``: the distinct file names, sorted, and each row's position among them (-1: no name).

    pandas sorts and groups text by rebuilding it as pandas strings, which
    cannot hold a name that is not valid UTF-8 (surrogate escapes); sorting
    and grouping on these codes gives the same order for every name.
    """
    codes, names = pd.factorize(np.asarray(files, dtype=object), sort=True)
    return names, codes


def _sorted_detections(detections: pd.DataFrame) -> pd.DataFrame:
    """Detections sorted by file, start time and class (stable), with a new range index."""
    _, files = _file_codes(detections["file"])
    classes = pd.factorize(detections["class"], sort=True)[0]
    order = np.lexsort((classes, detections["start_time"].to_numpy(dtype=float), files))
    return detections.iloc[order].reset_index(drop=True)


def merge_detections(detections: pd.DataFrame, gap: float = 0.0) -> pd.DataFrame:
    """Merge detections of one class in one file that overlap or are within ``gap`` seconds."""
    if len(detections) == 0:
        return detections.copy()
    merged = []
    names, codes = _file_codes(detections["file"])
    # rows without a file name (code -1) are left out, as grouping by name leaves them out
    by_start = detections.assign(file=codes)[codes >= 0].sort_values("start_time", kind="mergesort")
    for (code, cls), group in by_start.groupby(["file", "class"], sort=True):
        file = names[code]
        cur = None
        for start, end, score in group[["start_time", "end_time", "score"]].itertuples(index=False):
            if cur is not None and start <= cur[1] + gap:
                cur = [cur[0], max(cur[1], end), max(cur[2], score)]
            else:
                if cur is not None:
                    merged.append((file, cur[0], cur[1], cls, cur[2]))
                cur = [start, end, score]
        merged.append((file, cur[0], cur[1], cls, cur[2]))
    # column by column: a DataFrame from records cannot hold a file name that is not valid UTF-8
    columns = list(zip(*merged))
    out = pd.DataFrame({"file": pd.Series(file_name_index(columns[0])),
                        "start_time": np.array(columns[1], dtype=float), "end_time": np.array(columns[2], dtype=float),
                        "class": list(columns[3]), "score": np.array(columns[4], dtype=float)})
    return _sorted_detections(out)


def write_detections_csv(detections: pd.DataFrame, path) -> Path:
    """Write a detection table (see :func:`detections_table`) to CSV atomically; returns the path.

    The CSV is UTF-8; a file name that is not valid UTF-8 (FAT/exFAT cards) is
    written as :mod:`opso_nb.store` writes it, its undecodable bytes as
    ``\\xNN`` (:func:`opso_nb.store.utf8_name`).
    """
    path = Path(path)
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        utf8_names(detections).to_csv(handle, index=False)
    return path


def write_raven_tables(detections: pd.DataFrame, folder, low_f: float = 0.0, high_f: float | None = None,
                       include_empty_files=()) -> list[Path]:
    """Write one Raven selection table per audio file, for reviewing detections in Raven.

    Uses :meth:`opso_nb.annotations.BoxedAnnotations.to_raven_files`, so the
    tables read back with ``BoxedAnnotations.from_raven_files``.

    Parameters
    ----------
    detections : DataFrame
        Columns file, start_time, end_time, class, score (from :func:`detections_table`).
    folder : str or Path
        Where to write; created if needed. Tables are named
        ``<audio stem>.Table.1.selections.txt``.
    low_f, high_f : float
        Frequency bounds of every box in Hz; ``high_f`` None uses the file's
        Nyquist frequency when readable.
    include_empty_files : iterable of paths
        Audio files to write an (empty) table for even without detections, so
        a reviewer sees they were checked.

    Returns
    -------
    list of Path
        The tables written: tab-separated, with Raven's columns (Selection,
        View, Channel, Begin Time (s), End Time (s), Low Freq (Hz), High Freq
        (Hz)), then ``Annotation`` (the class) and ``Score``.

    Notes
    -----
    A file name that is not valid UTF-8 (FAT/exFAT cards) names its table as
    :mod:`opso_nb.store` writes such names in text: undecodable bytes as
    ``\\xNN`` (:func:`opso_nb.store.utf8_name`), e.g.
    ``caf\\xe9.Table.1.selections.txt`` for ``caf<0xE9>.wav``. Its Nyquist
    frequency is still read from the audio file itself.
    """
    missing = [c for c in DETECTION_COLUMNS if c not in detections.columns]
    if missing:
        raise ValueError(f"detections lack columns {missing}; make them with detections_table()")
    boxes = _sorted_detections(detections)
    files = np.array([str(f) for f in boxes["file"]], dtype=object)
    high = np.full(len(boxes), np.nan if high_f is None else float(high_f))
    escaped = {f for f in set(files) if utf8_name(f) != f}
    for name in escaped if high_f is None else ():
        # the table names the escaped form, which is no audio file: read the Nyquist frequency here
        try:
            nyquist = audio_info(name).sample_rate / 2
        except OSError:  # unreadable or missing audio (AudioLoadError is an OSError): 0 Hz, as for other files
            nyquist = 0.0
        high[files == name] = nyquist
    boxes = pd.DataFrame({
        # the store's rule for names that are not valid UTF-8: undecodable bytes as \xNN
        "audio_file": [utf8_name(f) for f in files] if escaped else files.astype(str),
        "start_time": boxes["start_time"].to_numpy(dtype=float),
        "end_time": boxes["end_time"].to_numpy(dtype=float),
        "annotation": boxes["class"].astype(str).to_numpy(),
        "low_f": float(low_f),
        "high_f": high,
        "Score": boxes["score"].to_numpy(dtype=float),
    })
    extra = [utf8_name(str(f)) for f in include_empty_files]
    return BoxedAnnotations(boxes).to_raven_files(Path(folder), audio_files=extra)
