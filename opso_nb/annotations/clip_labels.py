"""From boxes to clip labels: 0/1 per class for each clip of a clip table, and one-hot helpers.

A class is present (1) in a clip when one of its boxes overlaps the clip by at
least ``min_label_overlap`` seconds, or when at least ``min_label_fraction`` of
the box lies inside the clip. Zero-length boxes lie in ``[clip start, clip end)``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from opso_nb.annotations._common import EPS, path_keys
from opso_nb.utils import validate_clip_table

__all__ = [
    "categorical_to_one_hot",
    "label_clips",
    "one_hot_labels_on_time_interval",
    "one_hot_to_categorical",
]


def _candidate_pairs(c_start, c_end, b_start, b_end):
    """(clip index, box index) pairs that may overlap, found by binary search on clip starts.

    A clip can only touch a box if it starts at or before the box ends and after
    ``box start - longest clip``; only those pairs are generated, so the cost
    grows with clips + boxes + overlaps, not clips x boxes.
    """
    if len(c_start) == 0 or len(b_start) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(c_start, kind="stable")
    sorted_start = c_start[order]
    longest = float(np.max(c_end - c_start))
    lo = np.searchsorted(sorted_start, b_start - longest - EPS, side="left")
    hi = np.searchsorted(sorted_start, b_end, side="right")
    counts = np.maximum(hi - lo, 0)
    box_idx = np.repeat(np.arange(len(b_start)), counts)
    # position within each box's run of candidate clips
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    offsets = np.arange(int(counts.sum())) - run_start
    clip_idx = order[np.repeat(lo, counts) + offsets]
    return clip_idx, box_idx


def _label_one_file(out, rows, starts, ends, boxes, class_pos, min_label_overlap, min_label_fraction):
    """Set ``out[clip, class] = 1`` for the clips ``rows`` of one file and that file's ``boxes``."""
    b_start = boxes["start_time"].to_numpy(float)
    b_end = boxes["end_time"].to_numpy(float)
    b_cls = np.array([class_pos[a] for a in boxes["annotation"]], dtype=np.int64)
    clip_idx, box_idx = _candidate_pairs(starts[rows], ends[rows], b_start, b_end)
    c_start, c_end = starts[rows][clip_idx], ends[rows][clip_idx]
    bs, be = b_start[box_idx], b_end[box_idx]
    b_len = be - bs
    # a box touches a clip if they overlap, or (zero-length box) it lies in [clip start, clip end)
    touches = ((bs < c_end) & (be > c_start)) | ((b_len == 0) & (bs >= c_start) & (bs < c_end))
    overlap = np.minimum(c_end, be) - np.maximum(c_start, bs)
    hit = touches & (overlap >= min_label_overlap - EPS)
    if min_label_fraction is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(b_len > 0, overlap / np.where(b_len > 0, b_len, 1), 1.0)
        hit |= touches & (fraction >= min_label_fraction - EPS)
    out[rows[clip_idx[hit]], b_cls[box_idx[hit]]] = 1.0


def label_clips(
    boxes: pd.DataFrame,
    clip_df: pd.DataFrame,
    min_label_overlap: float,
    min_label_fraction: float | None = None,
    class_subset=None,
    warn_no_annotations: bool = False,
) -> pd.DataFrame:
    """0/1 labels per class for the clips of ``clip_df`` from a table of boxes.

    Parameters
    ----------
    boxes : pandas.DataFrame
        Columns ``audio_file``, ``annotation``, ``start_time``, ``end_time`` (s),
        as ``BoxedAnnotations.df``. Files are matched whatever their spelling
        (relative or absolute).
    clip_df : pandas.DataFrame
        Clips, indexed by (file, start_time, end_time) or with those columns.
    min_label_overlap : float
        Seconds of a box inside a clip that make its class present.
    min_label_fraction : float or None
        Fraction (0-1) of a box inside a clip that also does; None: not used.
    class_subset : list, optional
        Classes (columns); default the labels in ``boxes`` in order of appearance.
    warn_no_annotations : bool
        Warn about files of ``clip_df`` without boxes, and boxes of files not in ``clip_df``.

    Returns
    -------
    pandas.DataFrame
        Index as ``clip_df``'s; one float column (0.0/1.0) per class.
    """
    clip_df = validate_clip_table(clip_df, "clip_df")
    if min_label_overlap is None or min_label_overlap < 0:
        raise ValueError(f"min_label_overlap must be >= 0 seconds, got {min_label_overlap}")
    if min_label_fraction is not None and not 0 <= min_label_fraction <= 1:
        raise ValueError(f"min_label_fraction must be between 0 and 1, got {min_label_fraction}")
    classes = list(pd.unique(boxes["annotation"].dropna())) if class_subset is None else list(class_subset)
    files = clip_df.index.get_level_values("file").astype(str).to_numpy()
    starts = clip_df.index.get_level_values("start_time").to_numpy(dtype=float)
    ends = clip_df.index.get_level_values("end_time").to_numpy(dtype=float)
    out = np.zeros((len(clip_df), len(classes)), dtype=float)

    boxes = boxes[boxes["annotation"].isin(classes) & boxes["audio_file"].notna()]
    box_keys = path_keys(boxes["audio_file"])
    clip_keys = path_keys(pd.Series(files))
    class_pos = {c: i for i, c in enumerate(classes)}
    box_groups = pd.Series(np.arange(len(boxes))).groupby(box_keys.to_numpy()).indices if len(boxes) else {}
    clip_groups = pd.Series(np.arange(len(files))).groupby(clip_keys.to_numpy()).indices if len(files) else {}
    no_boxes = []
    for key, rows in clip_groups.items():
        if key not in box_groups:
            no_boxes.append(files[rows[0]])
            continue
        _label_one_file(out, rows, starts, ends, boxes.iloc[box_groups[key]], class_pos,
                        min_label_overlap, min_label_fraction)
    _warn_about_unmatched(boxes, box_keys, files, clip_groups, box_groups, no_boxes, warn_no_annotations)
    return pd.DataFrame(out, index=clip_df.index, columns=classes)


def _warn_about_unmatched(boxes, box_keys, files, clip_groups, box_groups, no_boxes, warn_no_annotations):
    matched_any = any(key in box_groups for key in clip_groups)
    if len(boxes) and len(files) and not matched_any:
        warnings.warn(
            "none of the files in clip_df match the audio_file of any annotation "
            f"(e.g. clip file {files[0]!r} vs annotation file {boxes['audio_file'].iloc[0]!r}); "
            "all labels are 0. Check the paths.",
            stacklevel=4,
        )
        return
    if not warn_no_annotations:
        return
    unused = int((~box_keys.isin(set(clip_groups))).sum())
    if unused:
        warnings.warn(f"{unused} boxes are in files not listed in clip_df", stacklevel=4)
    if no_boxes:
        warnings.warn(f"{len(no_boxes)} file(s) in clip_df have no annotations, e.g. {no_boxes[0]}", stacklevel=4)


def one_hot_labels_on_time_interval(
    df: pd.DataFrame,
    class_subset,
    start_time: float,
    end_time: float,
    min_label_overlap: float,
    min_label_fraction: float | None = None,
) -> dict:
    """``{class: 0/1}`` for one time interval of one file.

    Parameters
    ----------
    df : pandas.DataFrame
        Boxes of one file: columns ``start_time``, ``end_time`` (s) and ``annotation``.
    class_subset : list or None
        Classes; None: every label in ``df``.
    start_time, end_time : float
        The interval, seconds.
    min_label_overlap, min_label_fraction
        As in :func:`label_clips`.

    Examples
    --------
    >>> df = pd.DataFrame({"start_time": [0.0, 3.0], "end_time": [2.0, 4.0], "annotation": ["a", "b"]})
    >>> one_hot_labels_on_time_interval(df, ["a", "b"], 1.5, 3.2, min_label_overlap=0.25)
    {'a': 1, 'b': 0}
    """
    clip = pd.DataFrame({"file": ["_"], "start_time": [start_time], "end_time": [end_time]})
    labels = label_clips(df.assign(audio_file="_"), clip, min_label_overlap, min_label_fraction, class_subset)
    return {c: int(v) for c, v in labels.iloc[0].items()}


def categorical_to_one_hot(labels, class_subset=None):
    """List of label lists -> (2-D 0/1 array, classes).

    Examples
    --------
    >>> arr, classes = categorical_to_one_hot([["white", "red"], ["green", "white"]])
    >>> classes, arr.tolist()
    (['white', 'red', 'green'], [[1, 1, 0], [1, 0, 1]])
    """
    if class_subset is None:
        class_subset = list(dict.fromkeys(x for row in labels for x in row))
    pos = {c: i for i, c in enumerate(class_subset)}
    one_hot = np.zeros((len(labels), len(class_subset)), dtype=int)
    for r, row in enumerate(labels):
        for x in row:
            if x in pos:
                one_hot[r, pos[x]] = 1
    return one_hot, list(class_subset)


def one_hot_to_categorical(one_hot, classes) -> list[list]:
    """2-D 0/1 array (rows = samples, columns = ``classes``) -> list of present classes per row."""
    one_hot = np.asarray(one_hot)
    return [[classes[j] for j in np.flatnonzero(row)] for row in one_hot]
