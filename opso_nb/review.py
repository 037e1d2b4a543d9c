"""Review, label and calibrate: turn a table of scores into detections a scientist can defend.

Every scoring path in opso_nb (CNN predictions, RIBBIT, BirdNET, shallow
classifiers on embeddings) ends in a score table: a DataFrame indexed by
``(file, start_time, end_time)`` with one column per class. Scores are not
probabilities and cannot be published as they are. The usual remedy
(Knight et al. 2017; Wood & Kahl 2024) is to listen to a sample of clips,
label them, and choose a threshold from those labels. This module holds each
step:

1. **Choose clips** with :func:`select_clips`: top-k, random, or stratified by
   score bins (equal numbers per bin, the design for calibration), each
   reproducible from a seed, optionally limited to files, recording dates or a
   score range. The selection records each clip's inclusion weight (how many
   clips of the whole table it stands for), so estimates over the whole table
   stay unbiased however the sample was drawn.
2. **Label** with a :class:`LabelStore`: an append-only log on disk, one line
   per click, flushed and fsynced at once. A crash loses at most the click in
   flight; reopening resumes.
3. **Calibrate** with :func:`calibrate`: a logistic model of
   P(present | score) per class (scikit-learn), precision and recall at every
   threshold, and the threshold reaching a target precision with a bootstrap
   confidence interval; :class:`ReviewTooSmallWarning` when too few clips
   were reviewed for a stable answer.
4. **Close the loop**: :func:`labels_to_one_hot` gives a clip-label table that
   :meth:`opso_nb.ml.cnn.CNN.train` accepts (:meth:`ReviewSession.export`
   writes it as ``training_labels.csv``); :func:`confirmed_detections` and
   :func:`export_raven` write what was confirmed as Raven selection tables.

Examples
--------
>>> sample = select_clips(scores, "frog", strategy="stratified", n=60, n_bins=6, seed=1)  # doctest: +SKIP
>>> store = LabelStore("review/frog_labels.jsonl", reviewer="ana")                       # doctest: +SKIP
>>> store.add(sample.index[0], "frog", "present")                                         # doctest: +SKIP
>>> result = calibrate(scores, store.labels(), "frog", target_precision=0.9)             # doctest: +SKIP
>>> result.threshold, result.threshold_ci                                                # doctest: +SKIP
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import param

from opso_nb.aru import audiomoth_start_time
from opso_nb.audio import Audio
from opso_nb.detection import _precision_recall_at_thresholds, write_raven_tables
from opso_nb.ribbit import RibbitParams, run_ribbit
from opso_nb.sample_data import toads_folder
from opso_nb.store import (as_clip_index, file_name_index, make_clip_index, read_results, reset_clip_index,
                           utf8_name, utf8_names)
from opso_nb.utils import CLIP_INDEX, atomic_write, validate_clip_table

__all__ = [
    "LABEL_VALUES",
    "SAMPLING_STRATEGIES",
    "ReviewTooSmallWarning",
    "select_clips",
    "LabelStore",
    "ReviewSettings",
    "precision_recall_table",
    "calibrate",
    "Calibration",
    "labels_to_one_hot",
    "confirmed_detections",
    "export_raven",
    "plot_precision_recall",
    "plot_calibration",
    "ScoreTableError",
    "read_score_table",
    "score_table_choices",
    "example_score_table",
    "review_folder_name",
    "ReviewSession",
    "file_start_times",
    "clip_start_times",
    "SAMPLING_FIELDS",
    "limits_text",
]

#: Values a reviewer may give a clip. ``unsure`` clips are kept in the store but
#: left out of calibration and training labels.
LABEL_VALUES = ("present", "absent", "unsure")
SAMPLING_STRATEGIES = ("top", "random", "stratified")
LABEL_COLUMNS = CLIP_INDEX + ["class", "label", "note", "reviewer", "time"]

#: Below these counts a calibration is reported as unstable (see :class:`ReviewTooSmallWarning`).
MIN_REVIEWED = 30
MIN_PER_LABEL = 5


class ReviewTooSmallWarning(UserWarning):
    """Too few reviewed clips (or too few of one label) for a stable calibration or threshold."""


# --------------------------------------------------------------------------- choosing clips
def _check_score_table(scores: pd.DataFrame, class_name=None) -> pd.DataFrame:
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"scores must be a DataFrame indexed by {CLIP_INDEX}, got {type(scores).__name__}")
    scores = validate_clip_table(scores, "score table")
    if class_name is not None and class_name not in scores.columns:
        raise KeyError(f"class {class_name!r} is not a column of the score table; classes: {list(scores.columns)}")
    return scores


#: ``YYYYMMDD_HHMMSS`` anywhere in a file name (AudioMoth, Song Meter and most other recorders).
_STAMP = re.compile(r"(\d{8})[_T-]?(\d{6})")


def file_start_times(files) -> pd.Series:
    """Recording start time parsed from each file name (``..._YYYYMMDD_HHMMSS...``), NaT where none is found.

    Works for AudioMoth (``20190522_050000.WAV``) and Song Meter
    (``S4A03895_20190522_050000.wav``) names; times are naive (the recorder's
    clock). The time stamp itself is read by
    :func:`opso_nb.aru.audiomoth_start_time`.
    """
    out = {}
    for f in dict.fromkeys(str(f) for f in files):
        match = _STAMP.search(Path(f).stem)
        stamp = pd.NaT
        if match:
            try:
                stamp = pd.Timestamp(audiomoth_start_time("_".join(match.groups())).replace(tzinfo=None))
            except ValueError:  # eight and six digits that are no date (e.g. month 13)
                pass
        out[f] = stamp
    # file_name_index: a name that is not valid UTF-8 (FAT/exFAT cards) cannot be a pandas string
    return pd.Series(list(out.values()), index=file_name_index(out), dtype="datetime64[ns]")


def clip_start_times(scores: pd.DataFrame) -> pd.DatetimeIndex:
    """When each clip starts: its recording's start (see :func:`file_start_times`) plus its ``start_time``.

    Parameters
    ----------
    scores : DataFrame
        Indexed by ``(file, start_time, end_time)`` (s).

    Returns
    -------
    DatetimeIndex
        One naive time per row (the recorder's clock), NaT for clips of files without a date in their name.
    """
    file_level = file_name_index(str(f) for f in scores.index.get_level_values("file"))
    starts = file_start_times(file_level).reindex(file_level).to_numpy()
    return pd.DatetimeIndex(pd.to_datetime(starts)
                            + pd.to_timedelta(scores.index.get_level_values("start_time"), unit="s"))


def _limit(scores, class_name, files, date_range, score_range):
    keep = np.ones(len(scores), dtype=bool)
    file_level = file_name_index(str(f) for f in scores.index.get_level_values("file"))
    if files is not None:
        wanted = {str(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files)}
        keep &= file_level.isin(wanted)
    if date_range is not None:
        lo, hi = (pd.Timestamp(d) if d is not None else None for d in date_range)
        clip_times = clip_start_times(scores)
        no_stamp = pd.isna(clip_times)
        if no_stamp.any():
            warnings.warn(f"{int(no_stamp.sum())} clip(s) come from files without a date in their name "
                          f"(e.g. {file_level[no_stamp][0]}); they are left out of a date-limited selection",
                          UserWarning, stacklevel=3)
        in_range = ~no_stamp
        if lo is not None:
            in_range &= clip_times >= lo
        if hi is not None:
            in_range &= clip_times <= hi
        keep &= np.asarray(in_range)
    values = scores[class_name].to_numpy(dtype=float)
    if score_range is not None:
        lo, hi = score_range
        keep &= (values >= (-np.inf if lo is None else lo)) & (values <= (np.inf if hi is None else hi))
    keep &= np.isfinite(values)
    return keep


def select_clips(scores: pd.DataFrame, class_name: str, strategy: str = "stratified", n: int = 50,
                 n_bins: int = 5, seed: int = 0, files=None, date_range=None, score_range=None,
                 exclude=None) -> pd.DataFrame:
    """Choose clips of one class to review.

    Parameters
    ----------
    scores : DataFrame
        Score table indexed by ``(file, start_time, end_time)`` (s), one column per class.
    class_name : str
        Column to sample on.
    strategy : {"top", "random", "stratified"}
        ``top``: the ``n`` highest scores. ``random``: ``n`` clips uniformly at
        random. ``stratified``: the score range cut into ``n_bins`` bins of equal
        width and ``n`` clips shared equally among the bins that hold clips,
        then drawn at random within each bin, the design for calibration (see
        Notes).
    n : int
        Clips to return (fewer only when fewer are eligible).
    n_bins : int
        Score bins for ``stratified``.
    seed : int
        Random seed; the same seed and inputs give the same clips.
    files : str or list of str, optional
        Only clips of these files.
    date_range : (start, end), optional
        Only clips recorded in this range (anything ``pandas.Timestamp`` reads;
        either end may be None), using the date in the file names (see
        :func:`file_start_times`) plus the clip's start time.
    score_range : (low, high), optional
        Only clips whose score is in ``[low, high]`` (either may be None).
    exclude : index-like of (file, start_time, end_time), optional
        Clips to leave out (e.g. those already reviewed).

    Returns
    -------
    DataFrame
        Indexed like ``scores``; columns ``score`` (the class's score), ``bin``
        (stratum number, -1 for ``top``), and ``weight``: how many clips of the
        eligible table each chosen clip stands for (1 / inclusion probability;
        ``top`` clips get 1). Ordered by descending score for ``top``, else by
        bin then score.

    Warns
    -----
    UserWarning
        ``stratified`` with ``n`` smaller than the number of bins that hold
        clips: some bins get no clip, and weighted estimates then leave their
        clips out.

    Notes
    -----
    Stratified allocation: each bin that holds clips gets ``n // k`` of them
    (``k`` such bins); the ``n % k`` left over go one each to bins picked at
    random (from ``seed``). A bin holding fewer clips than its share gives all
    of them, and what it lacks is shared out the same way among the bins that
    have more, so the sample holds ``n`` clips whenever the table does. Within
    a bin the clips are a simple random sample, so once the counts are fixed
    each chosen clip of bin ``b`` stands for ``N_b / n_b`` clips (``N_b`` in
    the bin, ``n_b`` drawn): that is its ``weight``, and weighted sums
    estimate whole-table totals without bias however the counts were shared.
    """
    scores = _check_score_table(scores, class_name)
    if strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"strategy must be one of {SAMPLING_STRATEGIES}, got {strategy!r}")
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    keep = _limit(scores, class_name, files, date_range, score_range)
    if exclude is not None and len(exclude):
        keep &= ~scores.index.isin(as_clip_index(exclude))
    pool = scores.loc[keep, [class_name]].rename(columns={class_name: "score"})
    rng = np.random.default_rng(seed)
    if len(pool) == 0:
        return pool.assign(bin=pd.Series(dtype=int), weight=pd.Series(dtype=float))
    if strategy == "top":
        chosen = pool.sort_values("score", ascending=False, kind="stable").head(int(n))
        return chosen.assign(bin=-1, weight=1.0)
    if strategy == "random":
        take = rng.choice(len(pool), size=min(int(n), len(pool)), replace=False)
        chosen = pool.iloc[np.sort(take)]
        return chosen.assign(bin=0, weight=len(pool) / len(chosen)).sort_values("score", kind="stable")
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    values = pool["score"].to_numpy()
    edges = np.linspace(values.min(), values.max(), n_bins + 1)
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    sizes = np.bincount(bins, minlength=n_bins)
    n_filled = int(np.count_nonzero(sizes))
    if int(n) < n_filled:
        warnings.warn(f"n={int(n)} clips cannot cover the {n_filled} score bins that hold clips: "
                      f"{n_filled - int(n)} bin(s) get none, and weighted estimates leave their clips out; "
                      "ask for at least as many clips as bins", UserWarning, stacklevel=2)
    counts = _share_among_bins(sizes, int(n), rng)
    parts = []
    for b in np.flatnonzero(counts):
        members = np.flatnonzero(bins == b)
        take = members if counts[b] == len(members) else np.sort(rng.choice(members, size=counts[b],
                                                                             replace=False))
        part = pool.iloc[take].assign(bin=int(b), weight=len(members) / len(take))
        parts.append(part.sort_values("score", kind="stable"))
    return pd.concat(parts)


def _share_among_bins(sizes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Clips to draw from each bin: ``n`` shared equally, remainders to random bins, capped at each bin's size.

    What a small bin cannot give goes round again among the bins with clips
    left, until ``n`` (or every clip) is allocated.
    """
    counts = np.zeros(len(sizes), dtype=int)
    left = min(n, int(sizes.sum()))
    while left > 0:
        open_bins = np.flatnonzero(counts < sizes)
        share, extra = divmod(left, len(open_bins))
        add = np.full(len(open_bins), share)
        add[rng.choice(len(open_bins), size=extra, replace=False)] += 1  # the remainder: seeded, not the low bins
        add = np.minimum(add, sizes[open_bins] - counts[open_bins])
        counts[open_bins] += add
        left -= int(add.sum())
    return counts


# --------------------------------------------------------------------------- the label store
class LabelStore:
    """One reviewer's labels, saved at every click in an append-only JSON-lines file.

    Each :meth:`add` appends one line (file, start_time, end_time, class,
    label, note, reviewer, time) with a single ``write`` on a file opened in
    append mode, then flushes and fsyncs it, so a crashed kernel, a closed
    browser tab or a killed server loses at most the click in flight, and
    never corrupts earlier lines. A torn last line (a kill mid-write) is
    ignored when reading. The latest line for a clip and class wins, so a
    relabel or an :meth:`remove` is just another line.

    Parameters
    ----------
    path : str or Path
        The ``.jsonl`` file (created with its folder if needed).
    reviewer : str
        Written with every label.
    """

    def __init__(self, path, reviewer: str = "anonymous"):
        self.path = Path(path)
        self.reviewer = str(reviewer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.skipped_lines = 0

    def add(self, clip, class_name: str, label: str | None, note: str = "") -> dict:
        """Save one label at once.

        Parameters
        ----------
        clip : tuple (file, start_time, end_time)
            Times in seconds.
        class_name : str
        label : {"present", "absent", "unsure"} or None
            None withdraws an earlier label of this clip and class.
        note : str
            Free text.

        Returns
        -------
        dict
            The record written.
        """
        if label is not None and label not in LABEL_VALUES:
            raise ValueError(f"label must be one of {LABEL_VALUES} or None, got {label!r}")
        file, start, end = clip
        record = {"file": str(file), "start_time": float(start), "end_time": float(end), "class": str(class_name),
                  "label": label, "note": str(note or ""), "reviewer": self.reviewer,
                  "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        # surrogateescape keeps file names that are not valid UTF-8 (FAT/exFAT cards) losslessly
        line = (json.dumps(record, ensure_ascii=True) + "\n").encode("utf-8", "surrogateescape")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a torn last line, or this label would be read as part of it
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def remove(self, clip, class_name: str) -> dict:
        """Withdraw the label of one clip and class (appends a line; history is kept)."""
        return self.add(clip, class_name, None)

    def history(self) -> pd.DataFrame:
        """Every line written, in order (columns :data:`LABEL_COLUMNS`)."""
        rows, self.skipped_lines = [], 0
        if self.path.exists():
            with open(self.path, "rb") as handle:
                for raw in handle:
                    try:
                        rec = json.loads(raw.decode("utf-8", "surrogateescape"))
                        if not isinstance(rec, dict) or not all(k in rec for k in LABEL_COLUMNS):
                            raise ValueError("not a label record")
                        rows.append([rec[k] for k in LABEL_COLUMNS])
                    except ValueError:
                        self.skipped_lines += 1  # a torn final line from a kill mid-write
        if self.skipped_lines:
            warnings.warn(f"{self.path}: {self.skipped_lines} unreadable line(s) skipped (e.g. a write cut short)",
                          UserWarning, stacklevel=2)
        # object columns: pandas' Arrow-backed strings cannot hold surrogate-escaped (non-UTF-8) file names
        table = pd.DataFrame(np.array(rows, dtype=object).reshape(-1, len(LABEL_COLUMNS)), columns=LABEL_COLUMNS,
                             dtype=object)
        return table.astype({"start_time": float, "end_time": float})

    def labels(self, class_name: str | None = None) -> pd.DataFrame:
        """The current label of every reviewed clip (latest line wins; withdrawn labels are gone).

        Returns
        -------
        DataFrame
            Indexed by ``(file, start_time, end_time)``; columns ``class``,
            ``label``, ``note``, ``reviewer``, ``time``.
        """
        hist = self.history()
        if class_name is not None:
            hist = hist[hist["class"] == class_name]
        latest = hist.drop_duplicates(subset=CLIP_INDEX + ["class"], keep="last")
        latest = latest[latest["label"].notna()]
        return latest.set_index(CLIP_INDEX)

    def progress(self, clips, class_name: str) -> tuple[int, int]:
        """(reviewed, total) of ``clips`` (an index or table of clips) for one class."""
        index = as_clip_index(clips)
        done = self.labels(class_name).index
        return int(index.isin(done).sum()), int(len(index))

    def next_unreviewed(self, clips, class_name: str):
        """Position in ``clips`` of the first clip without a label for ``class_name`` (None when all are done)."""
        index = as_clip_index(clips)
        todo = np.flatnonzero(~index.isin(self.labels(class_name).index))
        return int(todo[0]) if len(todo) else None

    def compact(self) -> Path:
        """Rewrite the log with only the current labels (atomically: temp file + rename)."""
        current = reset_clip_index(self.labels())[LABEL_COLUMNS]
        with atomic_write(self.path, "w", encoding="utf-8", errors="surrogateescape") as handle:
            for rec in current.to_dict("records"):
                handle.write(json.dumps(rec, ensure_ascii=True) + "\n")
        return self.path


class ReviewSettings(param.Parameterized):
    """What to review, from which clips, and how to pick a threshold (the clip-review dashboard shows these as widgets).

    ``files``, ``date_range`` and ``score_range`` limit the clips a sample is
    drawn from (see :func:`select_clips`); they are saved with the sample like
    the other :data:`SAMPLING_FIELDS`, and its inclusion weights, hence the
    precision behind a threshold, then describe the clips within the limits.
    """

    # a Selector (not a String) so a dashboard offers the table's columns; any name may be set from code
    class_name = param.Selector(default=None, objects=[], check_on_set=False, allow_None=True,
                                doc="Class (score column) to review.")
    strategy = param.Selector(default="stratified", objects=list(SAMPLING_STRATEGIES),
                              doc="top: highest scores; random: uniform; stratified: equal numbers per score bin "
                                  "(best for calibration).")
    n = param.Integer(default=40, bounds=(1, 10000), doc="Clips to review.")
    n_bins = param.Integer(default=4, bounds=(1, 50), doc="Score bins for stratified sampling.")
    seed = param.Integer(default=0, doc="Random seed (the same seed gives the same clips).")
    target_precision = param.Number(default=0.9, bounds=(0.5, 0.999),
                                    doc="Fraction of detections above the threshold that should be real.")
    reviewer = param.String(default="reviewer", doc="Name written with every label.")
    # limits of the sample; a Selector so a dashboard offers the table's recordings, any name may be set from code
    files = param.ListSelector(default=[], objects=[], check_on_set=False, label="Recordings",
                               doc="Draw clips from these recordings only (none chosen: all recordings).")
    date_range = param.DateRange(default=None, allow_None=True, label="Recorded between",
                                 doc="Only clips recorded in this span, from the date and time in the file names "
                                     "(e.g. 20200522_050000), both ends included; empty: any time.")
    score_range = param.Range(default=None, allow_None=True, label="Scores between",
                              doc="Only clips whose score lies in this range, both ends included; None: any score.")

    def select(self, scores: pd.DataFrame, **kwargs) -> pd.DataFrame:
        """:func:`select_clips` with these settings, limits included (keyword arguments override)."""
        options = dict(strategy=self.strategy, n=self.n, n_bins=self.n_bins, seed=self.seed,
                       files=list(self.files) or None, date_range=self.date_range, score_range=self.score_range)
        options.update(kwargs)
        return select_clips(scores, self.class_name, **options)

    def sampling(self) -> dict:
        """The settings that draw a sample (:data:`SAMPLING_FIELDS`) as JSON values, as saved with the sample.

        Returns
        -------
        dict
            ``strategy``, ``n``, ``n_bins``, ``seed``; ``files`` (list of names, empty: all),
            ``date_range`` (``[start, end]`` as ISO 8601 text, or None) and ``score_range``
            (``[low, high]``, or None).
        """
        out = {k: getattr(self, k) for k in ("strategy", "n", "n_bins", "seed")}
        out["files"] = [str(f) for f in self.files or []]
        out["date_range"] = (None if self.date_range is None
                             else [pd.Timestamp(d).isoformat() for d in self.date_range])
        out["score_range"] = None if self.score_range is None else [float(v) for v in self.score_range]
        return out

    @staticmethod
    def sampling_values(sampling: dict) -> dict:
        """Parameter values of a saved ``sampling`` dict (see :meth:`sampling`), ready for ``param.update``.

        Limits missing from ``sampling`` (a sample saved before they existed) are
        given as none: such a sample was drawn from the whole table.
        """
        values = {k: sampling[k] for k in ("strategy", "n", "n_bins", "seed") if k in sampling}
        values["files"] = [str(f) for f in sampling.get("files") or []]
        dates = sampling.get("date_range")
        values["date_range"] = None if dates is None else tuple(pd.Timestamp(d).to_pydatetime() for d in dates)
        scores = sampling.get("score_range")
        values["score_range"] = None if scores is None else tuple(float(v) for v in scores)
        return values

    def use_sampling(self, sampling: dict) -> None:
        """Set the sampling settings and limits to those of a saved sample (e.g. ``session.sampling``)."""
        self.param.update(**self.sampling_values(sampling))


def limits_text(sampling: dict, class_scores=None) -> str:
    """The limits of a sample in plain words (``""`` when it was drawn from the whole table).

    Parameters
    ----------
    sampling : dict
        As :meth:`ReviewSettings.sampling` returns (and ``session.sampling`` holds).
    class_scores : array-like, optional
        The class's scores in the table: a score range holding all of them is no limit and is left out.
    """
    values = ReviewSettings.sampling_values(sampling)
    parts = []
    files = values["files"]
    if files:
        names = [utf8_name(Path(f).name) for f in files]
        parts.append(f"{len(files)} recording(s) ({', '.join(names[:3])}"
                     + (f" and {len(names) - 3} more)" if len(names) > 3 else ")"))
    if values["date_range"] is not None:
        lo, hi = (pd.Timestamp(d) for d in values["date_range"])
        form = "%Y-%m-%d %H:%M" + (":%S" if lo.second or hi.second else "")
        parts.append(f"clips recorded from {lo.strftime(form)} to {hi.strftime(form)}")
    if values["score_range"] is not None:
        lo, hi = values["score_range"]
        finite = None if class_scores is None else np.asarray(class_scores, dtype=float)
        finite = None if finite is None else finite[np.isfinite(finite)]
        if finite is None or not len(finite) or lo > finite.min() or hi < finite.max():
            parts.append(f"scores from {lo:.4g} to {hi:.4g}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- calibration
def _reviewed(scores, labels, class_name, weights=None):
    """Aligned (score, y, weight) arrays of the reviewed clips of one class (unsure left out)."""
    scores = _check_score_table(scores, class_name)
    lab = labels
    if "class" in lab.columns:
        lab = lab[lab["class"] == class_name]
    lab = lab[lab["label"].isin(["present", "absent"])]
    lab = lab[~lab.index.duplicated(keep="last")]
    common = lab.index.intersection(scores.index)
    missing = len(lab) - len(common)
    if missing:
        warnings.warn(f"{missing} labelled clip(s) of {class_name!r} are not in the score table and are left out",
                      UserWarning, stacklevel=3)
    s = scores.loc[common, class_name].to_numpy(dtype=float)
    y = (lab.loc[common, "label"] == "present").to_numpy(dtype=float)
    if weights is None:
        w = np.ones(len(common))
    else:
        w = pd.Series(weights).reindex(common).fillna(1.0).to_numpy(dtype=float)
    ok = np.isfinite(s)
    return s[ok], y[ok], w[ok]


def precision_recall_table(scores_reviewed, present, weights=None) -> pd.DataFrame:
    """Precision, recall and counts at every threshold, from reviewed clips.

    Parameters
    ----------
    scores_reviewed : array-like
        Scores of the reviewed clips.
    present : array-like of bool
        Reviewer's answer for each (True: the class is present).
    weights : array-like, optional
        Clips each reviewed clip stands for (from :func:`select_clips`); with
        them precision and recall estimate those of the whole table.

    Returns
    -------
    DataFrame
        One row per distinct score (the threshold: a clip is a detection when
        its score >= threshold, as :func:`opso_nb.detection.detect` applies
        it), ascending; columns ``threshold``, ``n_above`` (clips at or above
        it, unweighted), ``true_positives``, ``false_positives``,
        ``false_negatives``, ``precision``, ``recall`` (weighted counts when
        ``weights`` is given).

    Notes
    -----
    Computed by the same function as
    :func:`opso_nb.detection.precision_recall_curve_table`: precision and
    recall equal ``sklearn.metrics.precision_recall_curve`` with
    ``sample_weight=weights`` (without its final "nothing detected" point);
    recall is 0 when no clip is present (scikit-learn's metrics'
    ``zero_division=0``, as :mod:`opso_nb.metrics`).
    """
    curve = _precision_recall_at_thresholds(scores_reviewed, present, weights)
    return pd.DataFrame({"threshold": curve["threshold"], "n_above": curve["n_detected"],
                         "true_positives": curve["tp"], "false_positives": curve["fp"],
                         "false_negatives": curve["fn"], "precision": curve["precision"],
                         "recall": curve["recall"]})


def _threshold_for_precision(table, target: float) -> float:
    """Lowest threshold whose precision reaches ``target``; NaN if none does.

    ``table`` has ascending ``threshold`` and ``precision`` (a DataFrame or
    the dict of arrays of the shared curve). The lowest such threshold keeps
    the most detections. Precision estimated from the few clips at the very
    top is noisy, so the rule does not demand that every higher threshold
    also reaches the target.
    """
    ok = np.flatnonzero(np.asarray(table["precision"], dtype=float) >= target)
    return float(np.asarray(table["threshold"])[ok[0]]) if len(ok) else math.nan


@dataclass
class Calibration:
    """Result of :func:`calibrate` for one class.

    Attributes
    ----------
    class_name : str
    intercept, slope : float
        Logistic model ``P(present | s) = 1 / (1 + exp(-(intercept + slope * s)))``.
    n_reviewed, n_present, n_absent : int
    table : DataFrame
        :func:`precision_recall_table` of the reviewed clips (weighted).
    target_precision : float
    threshold : float
        Lowest threshold whose estimated precision reaches the target (NaN if none does).
    threshold_ci : (float, float)
        Bootstrap confidence interval of ``threshold`` (``confidence`` level).
    stable : bool
        False when fewer than :data:`MIN_REVIEWED` clips, or fewer than
        :data:`MIN_PER_LABEL` of either label, were reviewed.
    """

    class_name: str
    intercept: float
    slope: float
    n_reviewed: int
    n_present: int
    n_absent: int
    table: pd.DataFrame
    target_precision: float
    threshold: float
    threshold_ci: tuple
    confidence: float = 0.95
    stable: bool = True
    reviewed: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def probability(self, score) -> np.ndarray:
        """Calibrated P(present | score)."""
        z = self.intercept + self.slope * np.asarray(score, dtype=float)
        return 1.0 / (1.0 + np.exp(-z))

    def score_for_probability(self, probability: float) -> float:
        """The score at which the calibrated probability equals ``probability`` (NaN for a flat curve)."""
        if self.slope == 0 or not 0 < probability < 1:
            return math.nan
        return float((math.log(probability / (1 - probability)) - self.intercept) / self.slope)

    def to_dict(self) -> dict:
        """Plain values for a JSON export (the calibrated threshold file); NaN becomes None."""
        def plain(x):
            return None if isinstance(x, float) and not math.isfinite(x) else x

        return {"class": self.class_name, "target_precision": self.target_precision,
                "threshold": plain(self.threshold), "threshold_ci": [plain(v) for v in self.threshold_ci],
                "confidence": self.confidence,
                "logistic": {"intercept": plain(self.intercept), "slope": plain(self.slope)},
                "n_reviewed": self.n_reviewed, "n_present": self.n_present, "n_absent": self.n_absent,
                "stable": self.stable}

    def save(self, path, **extra) -> Path:
        """Write :meth:`to_dict` (plus ``extra`` keys, e.g. the score table's name) as strict JSON, atomically.

        Undefined numbers (no threshold reaches the target yet) are written as
        ``null``, so any JSON reader opens the file.
        """
        with atomic_write(path, "w", encoding="utf-8") as handle:
            json.dump({**self.to_dict(), **extra}, handle, indent=2, allow_nan=False)
        return Path(path)


def _fit_logistic(s, y, w):
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return math.nan, math.nan
    # Scores come on any scale (RIBBIT ~1e-3, logits ~10): the solver is fitted on standardised
    # scores and the parameters are mapped back, else tiny scores give a flat, unconverged fit.
    centre, spread = float(np.mean(s)), float(np.std(s))
    spread = spread if spread > 0 else 1.0
    # nearly unpenalised: a plain maximum-likelihood fit of the two parameters
    model = LogisticRegression(C=1e6, max_iter=1000)
    model.fit(((s - centre) / spread).reshape(-1, 1), y.astype(int), sample_weight=w)
    slope = float(model.coef_[0, 0]) / spread
    return float(model.intercept_[0]) - slope * centre, slope


def calibrate(scores: pd.DataFrame, labels: pd.DataFrame, class_name: str, target_precision: float = 0.9,
              weights=None, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> Calibration:
    """Calibrate one class's scores from reviewed clips and pick a threshold.

    Parameters
    ----------
    scores : DataFrame
        Score table indexed by ``(file, start_time, end_time)``.
    labels : DataFrame
        Reviewed clips, same index, with a ``label`` column (``present`` /
        ``absent`` / ``unsure``; unsure ones are left out) and optionally
        ``class`` (as :meth:`LabelStore.labels` returns).
    class_name : str
    target_precision : float
        Wanted fraction of true detections above the threshold.
    weights : Series, optional
        Inclusion weights by clip (the ``weight`` column of
        :func:`select_clips`); needed for unbiased precision and recall when
        the sample was stratified or top-k. Default: every clip counts once.
    n_bootstrap : int
        Bootstrap resamples of the reviewed clips for the threshold's interval.
    confidence : float
        Level of that interval.
    seed : int
        Random seed of the bootstrap.

    Returns
    -------
    Calibration

    Warns
    -----
    ReviewTooSmallWarning
        Fewer than :data:`MIN_REVIEWED` reviewed clips, or fewer than
        :data:`MIN_PER_LABEL` of either answer.
    """
    if not 0 < target_precision < 1:
        raise ValueError(f"target_precision must be between 0 and 1, got {target_precision}")
    s, y, w = _reviewed(scores, labels, class_name, weights)
    n_present, n_absent = int(y.sum()), int(len(y) - y.sum())
    stable = len(y) >= MIN_REVIEWED and min(n_present, n_absent) >= MIN_PER_LABEL
    if not stable:
        warnings.warn(
            f"{class_name}: only {len(y)} clip(s) reviewed ({n_present} present, {n_absent} absent); at least "
            f"{MIN_REVIEWED} with {MIN_PER_LABEL} of each answer are needed for a stable calibration",
            ReviewTooSmallWarning, stacklevel=2)
    intercept, slope = _fit_logistic(s, y, w)
    table = precision_recall_table(s, y.astype(bool), w)
    threshold = _threshold_for_precision(table, target_precision)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(int(n_bootstrap) if len(s) else 0):
        pick = rng.integers(0, len(s), len(s))
        # the curve's arrays, not a DataFrame per resample: a thousand resamples stay quick
        boot.append(_threshold_for_precision(_precision_recall_at_thresholds(s[pick], y[pick].astype(bool),
                                                                             w[pick]), target_precision))
    boot = np.asarray(boot, dtype=float)
    boot = boot[np.isfinite(boot)]
    alpha = (1 - confidence) / 2
    ci = (float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))) if len(boot) else (math.nan,
                                                                                                   math.nan)
    reviewed = pd.DataFrame({"score": s, "present": y.astype(bool), "weight": w})
    return Calibration(class_name=class_name, intercept=intercept, slope=slope, n_reviewed=int(len(y)),
                       n_present=n_present, n_absent=n_absent, table=table, target_precision=float(target_precision),
                       threshold=threshold, threshold_ci=ci, confidence=float(confidence), stable=stable,
                       reviewed=reviewed)


# --------------------------------------------------------------------------- closing the loop
def labels_to_one_hot(labels: pd.DataFrame, classes=None, unsure: str = "drop") -> pd.DataFrame:
    """Reviewed labels as a one-hot clip-label table for :meth:`CNN.train`.

    Parameters
    ----------
    labels : DataFrame
        As :meth:`LabelStore.labels` returns (index ``(file, start_time,
        end_time)``; columns ``class`` and ``label``).
    classes : list of str, optional
        Columns of the result (default: every reviewed class, sorted).
    unsure : {"drop", "absent"}
        What an ``unsure`` answer becomes: the clip is left out for that class
        (a clip with any unsure class is dropped) or counted as absent.

    Returns
    -------
    DataFrame
        Indexed by ``(file, start_time, end_time)``, one 0/1 column per class.
        A clip must have been reviewed for every class in ``classes``: clips
        missing an answer for some class are dropped (a one-hot table cannot
        say "unknown").
    """
    if unsure not in ("drop", "absent"):
        raise ValueError(f"unsure must be 'drop' or 'absent', got {unsure!r}")
    if labels.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_arrays([[], [], []], names=CLIP_INDEX), columns=classes or [])
    # pivoted on a code per file: pandas' grouping rebuilds names as pandas strings, which cannot hold
    # a name that is not valid UTF-8; the names are put back afterwards
    flat = reset_clip_index(labels)
    codes, names = pd.factorize(flat["file"].to_numpy(dtype=object), sort=True)
    wide = flat.assign(file=codes).pivot_table(index=CLIP_INDEX, columns="class", values="label", aggfunc="last")
    level = wide.index.get_level_values
    wide.index = make_clip_index(names[level("file")], level("start_time"), level("end_time"))
    classes = sorted(wide.columns) if classes is None else list(classes)
    wide = wide.reindex(columns=classes)
    if unsure == "absent":
        wide = wide.replace("unsure", "absent")
    complete = wide.isin(["present", "absent"]).all(axis=1)
    one_hot = (wide[complete] == "present").astype(int)
    one_hot.columns.name = None
    return one_hot


def confirmed_detections(labels: pd.DataFrame, class_name: str | None = None, scores=None) -> pd.DataFrame:
    """Clips a reviewer marked present, as a detections table.

    Returns
    -------
    DataFrame
        Columns file, start_time, end_time (s), class, score (from ``scores``,
        the score table, when given; else NaN), note: the shape of
        :func:`opso_nb.detection.detections_table` plus the reviewer's note.
    """
    lab = labels if class_name is None else labels[labels["class"] == class_name]
    present = reset_clip_index(lab[lab["label"] == "present"])
    score = np.full(len(present), np.nan)
    if scores is not None and len(present):
        table = _check_score_table(scores)
        for i, row in enumerate(present.itertuples(index=False)):
            key = (row.file, row.start_time, row.end_time)
            if row[3] in table.columns and key in table.index:
                score[i] = float(table.at[key, row[3]])
    present["score"] = score
    return present[CLIP_INDEX + ["class", "score", "note"]].reset_index(drop=True)


def export_raven(labels: pd.DataFrame, folder, class_name: str | None = None, low_f: float = 0.0,
                 high_f: float | None = None, scores=None) -> list[Path]:
    """Write the confirmed detections as Raven selection tables, one per audio file.

    Parameters
    ----------
    labels : DataFrame
        As :meth:`LabelStore.labels` returns.
    folder : str or Path
        Output folder (``<audio stem>.Table.1.selections.txt`` files, written atomically).
    class_name : str, optional
        Only this class (default: all).
    low_f, high_f : float
        Frequency band of every box in Hz (default 0 to the Nyquist frequency of each file).
    scores : DataFrame, optional
        The score table, to write each box's score.

    Returns
    -------
    list of Path
        The tables written (none when nothing was confirmed).
    """
    found = confirmed_detections(labels, class_name, scores)
    if found.empty:
        return []
    return write_raven_tables(found, folder, low_f=low_f, high_f=high_f)


# --------------------------------------------------------------------------- plots
def plot_precision_recall(calibration: Calibration, ax=None):
    """Precision and recall against threshold, with the chosen threshold and its interval."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    t = calibration.table
    ax.plot(t["threshold"], t["precision"], drawstyle="steps-post", label="precision")
    ax.plot(t["threshold"], t["recall"], drawstyle="steps-post", label="recall")
    ax.axhline(calibration.target_precision, color="grey", lw=0.8, ls=":")
    if np.isfinite(calibration.threshold):
        ax.axvline(calibration.threshold, color="k", lw=1, label=f"threshold {calibration.threshold:.3g}")
        lo, hi = calibration.threshold_ci
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axvspan(lo, hi, color="k", alpha=0.1, label=f"{calibration.confidence:.0%} interval")
    ax.set_xlabel("score threshold")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{calibration.class_name}: {calibration.n_reviewed} reviewed clips")
    ax.legend(fontsize=8, loc="lower left")
    return ax


def plot_calibration(calibration: Calibration, ax=None):
    """Calibrated P(present | score) with the reviewed clips drawn at 0 (absent) and 1 (present)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    r = calibration.reviewed
    if len(r):
        jitter = np.random.default_rng(0).uniform(-0.03, 0.03, len(r))
        ax.scatter(r["score"], r["present"].astype(float) + jitter, s=12, alpha=0.6, color="tab:blue",
                   label="reviewed clips")
        grid = np.linspace(r["score"].min(), r["score"].max(), 200)
        if np.isfinite(calibration.slope):
            ax.plot(grid, calibration.probability(grid), color="k", label="P(present | score)")
    ax.set_xlabel("score")
    ax.set_ylabel("probability present")
    ax.set_ylim(-0.08, 1.08)
    if len(r):
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.set_title("no reviewed clips yet")
    return ax


# --------------------------------------------------------------------------- score tables on disk
class ScoreTableError(ValueError):
    """A score table cannot be used: unreadable, without the clip columns, without scores, or empty."""


#: File types :func:`read_score_table` reads (a prediction output folder is read too).
SCORE_TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")
#: Files that mark a folder as a prediction output (streamed prediction; the run store's run folders).
_RUN_MARKERS = ("manifest.json", "settings.json", "latest.json")


def _is_run_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _RUN_MARKERS)


def score_table_choices(folder) -> list[str]:
    """Names in ``folder`` that :func:`read_score_table` can open, sorted.

    CSV and Parquet files, the sub-folders that hold a prediction output (see
    :func:`opso_nb.ml.prediction.load_prediction_output`), or only ``"."``
    when ``folder`` itself is one. Hidden names are skipped; [] when
    ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if _is_run_folder(folder):
        return ["."]  # its files are the run's parts, not tables of their own
    found = []
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return found
    for entry in entries:
        if entry.is_file() and entry.suffix.lower() in SCORE_TABLE_EXTENSIONS:
            found.append(entry.name)
        elif entry.is_dir() and _is_run_folder(entry):
            found.append(entry.name)
    return found


def read_score_table(path) -> pd.DataFrame:
    """Read a score table from a CSV or Parquet file or a prediction output folder, and check it.

    The table is opened with :func:`opso_nb.store.read_results` (which also
    reads a run's ``parts/`` and folders of Parquet files written by Dask);
    this adds the checks a review needs.

    Parameters
    ----------
    path : str, Path or DataFrame
        A CSV or Parquet file with columns (or index) ``file``, ``start_time``,
        ``end_time`` (seconds) and one numeric column per class; the folder
        given to :meth:`opso_nb.ml.cnn.CNN.predict` as ``output_path``; or a
        DataFrame already in memory (checked the same way).

    Returns
    -------
    DataFrame
        Indexed by ``(file, start_time, end_time)``, one float column per class;
        file names as written in the table. Columns that hold text are left out
        with a warning. A file name that is not valid UTF-8 (FAT/exFAT cards;
        kept by prediction and RIBBIT runs, or raw bytes in a CSV) is kept
        exactly, as a Python string with surrogate escapes, in an object-dtype
        level (see :func:`opso_nb.store.make_clip_index`).

    Raises
    ------
    ScoreTableError
        Naming the table and the problem: unreadable, no clip columns, no score
        column, no clips, missing or inverted times, or a clip listed twice.
    """
    if isinstance(path, pd.DataFrame):
        return _checked_scores(path, "the score table")
    path = Path(path)
    name = str(path)
    if path.is_dir():
        if not (_is_run_folder(path) or path.name == "parts" or any(path.glob("*/settings.json"))
                or any(path.glob("*.parquet"))):
            raise ScoreTableError(f"{name}: a folder, but not a prediction output folder (none of "
                                  f"{', '.join(_RUN_MARKERS)} in it) nor a folder of Parquet tables")
        try:
            table, _ = read_results(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ScoreTableError(f"{name}: not a readable prediction output folder ({err})") from None
    elif not path.is_file():
        raise ScoreTableError(f"{name}: no such file or folder")
    elif path.suffix.lower() not in SCORE_TABLE_EXTENSIONS:
        raise ScoreTableError(f"{name}: not a score table (use CSV, Parquet or a prediction output folder)")
    else:
        try:
            # a CSV holding raw file-name bytes that are not UTF-8 (another tool wrote it) reads them as
            # Python's surrogate escapes, i.e. the exact names; object dtype, as pandas' strings cannot hold them
            table = (pd.read_csv(path, encoding_errors="surrogateescape", dtype={"file": object})
                     if path.suffix.lower() == ".csv" else pd.read_parquet(path))
        except Exception as err:  # pandas and pyarrow raise many types for malformed files
            raise ScoreTableError(f"{name}: cannot be read ({type(err).__name__}: {err})") from None
    return _checked_scores(table, name)


def _checked_scores(table: pd.DataFrame, name: str) -> pd.DataFrame:
    if list(table.index.names) != CLIP_INDEX:
        table = table.reset_index(drop=table.index.names == [None])
        table.columns = [str(c).strip() for c in table.columns]
        missing = [c for c in CLIP_INDEX if c not in table.columns]
        if missing:
            raise ScoreTableError(f"{name}: a score table needs the columns {CLIP_INDEX} (seconds); it lacks "
                                  f"{missing} and has {list(table.columns)[:8]}")
        table = table.set_index(CLIP_INDEX)
    table = table.loc[:, [not str(c).startswith("Unnamed") for c in table.columns]]
    if len(table) == 0:
        raise ScoreTableError(f"{name}: the table holds no clips")
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])
               and not pd.api.types.is_bool_dtype(table[c])]
    text = [c for c in table.columns if c not in numeric]
    if not numeric:
        raise ScoreTableError(f"{name}: no column of scores (numbers) besides file, start_time and end_time")
    if text:
        warnings.warn(f"{name}: columns {text} do not hold numbers and are left out", UserWarning, stacklevel=3)
    level = table.index.get_level_values
    # plain Python strings, not pandas' (Arrow) strings, which cannot hold a name that is not valid UTF-8
    files = [None if pd.isna(f) else str(f) for f in level("file").astype(object)]
    no_name = [f is None or not f.strip() for f in files]
    if any(no_name):
        raise ScoreTableError(f"{name}: row {no_name.index(True)} has no file name")
    table = table[numeric].astype(float).set_axis(make_clip_index(
        files, pd.to_numeric(level("start_time"), errors="coerce"),
        pd.to_numeric(level("end_time"), errors="coerce")), axis=0)
    try:
        table = validate_clip_table(table, name)
    except ValueError as err:
        raise ScoreTableError(str(err)) from None
    repeated = table.index[table.index.duplicated()]
    if len(repeated):
        raise ScoreTableError(f"{name}: clip {repeated[0]} is listed more than once ({len(repeated)} repeated "
                              "rows); a score table has one row per clip")
    return table


def example_score_table(folder) -> Path:
    """A score table of the bundled Great Plains toad recordings, made with RIBBIT (written once).

    The 18 ten-second recordings of :func:`opso_nb.sample_data.toads_folder`
    (four with toad trills, ``gpt*.mp3``) are scored in 2 s clips with the
    default :class:`opso_nb.ribbit.RibbitParams` (column ``great_plains_toad``).
    File names are written as base names, so the table pairs with any copy of
    the folder. Used as the clip-review dashboard's first table.

    Parameters
    ----------
    folder : str or Path
        Where ``toad_ribbit_scores.csv`` is written (atomically) unless it already exists.

    Returns
    -------
    Path
        The CSV.
    """
    path = Path(folder) / "toad_ribbit_scores.csv"
    if path.is_file():
        return path
    scores, _ = run_ribbit(toads_folder(), RibbitParams(clip_duration=2.0), progress=False)
    level = scores.index.get_level_values
    scores.index = pd.MultiIndex.from_arrays([level("file").map(lambda f: Path(f).name), level("start_time"),
                                              level("end_time")], names=CLIP_INDEX)
    with atomic_write(path, "w", newline="") as handle:
        scores.reset_index().to_csv(handle, index=False, float_format="%.6g")
    return path


def _safe_name(text: str, limit: int = 60) -> str:
    """``text`` as a file-name part; a short hash keeps names that had to be changed apart."""
    text = str(text)
    safe = re.sub(r"[^\w.-]+", "_", text, flags=re.ASCII).strip("._")[:limit] or "unnamed"
    if safe != text:
        safe += "-" + hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:6]
    return safe


def review_folder_name(table) -> str:
    """Folder name for the reviews of one score table: its name plus a hash of its absolute path.

    Two tables with the same name in different folders get different folders.
    """
    table = Path(table).absolute()
    digest = hashlib.sha1(os.fsencode(str(table))).hexdigest()[:8]
    return f"{_safe_name(table.stem if table.suffix else table.name, 40)}-{digest}"


# --------------------------------------------------------------------------- a review session
#: Sampling settings saved with a sample (the fields of :class:`ReviewSettings` that draw it): how clips are drawn
#: and the limits of the pool they are drawn from. Saved with the sample, so a resumed review keeps its own limits
#: (and its inclusion weights, which describe that limited pool) whatever the settings on screen.
SAMPLING_FIELDS = ("strategy", "n", "n_bins", "seed", "files", "date_range", "score_range")


def _review_order(sample: pd.DataFrame, strategy: str, seed: int) -> pd.DataFrame:
    """Order in which clips are shown: top-k by descending score, others shuffled (seeded).

    Heard in score order, a reviewer learns what answer to expect next; shuffled,
    each clip is judged on its own sound.
    """
    if strategy == "top" or len(sample) < 2:
        return sample
    return sample.iloc[np.random.default_rng(seed).permutation(len(sample))]


def _write_sample(path: Path, sample: pd.DataFrame, sampling: dict) -> None:
    clips = [{"file": str(f), "start_time": float(s), "end_time": float(e), "score": float(row.score),
              "bin": int(row.bin), "weight": float(row.weight)}
             for (f, s, e), row in zip(sample.index, sample.itertuples(index=False))]
    # ensure_ascii: file names that are not valid UTF-8 (surrogate escapes) survive as \udcxx escapes
    text = json.dumps({"sampling": sampling, "clips": clips}, ensure_ascii=True, indent=1)
    with atomic_write(path, "w", encoding="ascii") as handle:
        handle.write(text)


def _read_sample(path: Path, scores: pd.DataFrame):
    """(sample, sampling) saved at ``path``, or None when there is none or it no longer fits ``scores``."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="ascii"))
        rows = saved["clips"]
        # column by column: a DataFrame from records cannot hold a name that is not valid UTF-8
        index = make_clip_index([r["file"] for r in rows], [r["start_time"] for r in rows],
                                [r["end_time"] for r in rows])
        sample = pd.DataFrame({"score": np.array([r["score"] for r in rows], dtype=float),
                               "bin": np.array([r["bin"] for r in rows], dtype=int),
                               "weight": np.array([r["weight"] for r in rows], dtype=float)}, index=index)
        sampling = dict(saved["sampling"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"{path}: the saved sample cannot be read ({err}); a new one is drawn", UserWarning,
                      stacklevel=3)
        return None
    if not sample.index.isin(scores.index).all():
        warnings.warn(f"{path}: the saved sample has clips that are not in the score table (did the table "
                      "change?); a new sample is drawn, labels are kept", UserWarning, stacklevel=3)
        return None
    return sample, sampling


class ReviewSession:
    """One reviewer working through a sample of one class's clips: what the dashboard and notebooks drive.

    Open one with :meth:`open`. The sample (clips, score bins and inclusion
    weights, in review order) is saved next to the :class:`LabelStore` when it
    is drawn, so reopening the review later (after a crash, another day, in the
    dashboard or a notebook) continues with the same clips at the first one
    without a label. Every :meth:`label` is written to the store at once.

    Parameters
    ----------
    scores : DataFrame
        The score table (index ``(file, start_time, end_time)``).
    class_name : str
    store : LabelStore
    sample : DataFrame
        Clips to review in order, as :func:`select_clips` returns them.
    sampling : dict, optional
        How the sample was drawn (saved with it).
    audio_paths : dict, optional
        Audio file of each file name of the table, when they differ (a table
        written on another computer); names not in it are used as paths.

    Attributes
    ----------
    position : int
        Row of :attr:`sample` shown now; ``len(sample)`` past the end.
    """

    def __init__(self, scores: pd.DataFrame, class_name: str, store: LabelStore, sample: pd.DataFrame,
                 sampling: dict | None = None, audio_paths: dict | None = None):
        self.scores = _check_score_table(scores, class_name)
        self.class_name = class_name
        self.store = store
        self.sample = sample
        self.sampling = dict(sampling or {})
        self.audio_paths = dict(audio_paths or {})
        self._history: list[int] = []
        self._reload()
        first = self._next_unreviewed(-1)
        self.position = len(sample) if first is None else first

    @classmethod
    def open(cls, scores: pd.DataFrame, settings: ReviewSettings, folder, files=None, new_sample: bool = False,
             audio_paths: dict | None = None) -> "ReviewSession":
        """Resume the review of ``settings.class_name`` by ``settings.reviewer`` in ``folder``, or start it.

        Parameters
        ----------
        scores : DataFrame
        settings : ReviewSettings
            ``class_name`` and ``reviewer`` name the review; ``strategy``, ``n``,
            ``n_bins``, ``seed`` and the limits ``files``, ``date_range`` and
            ``score_range`` draw the sample when none is saved. A saved sample is
            resumed with the settings it was drawn with, which are in
            :attr:`sampling` (:meth:`ReviewSettings.use_sampling` shows them);
            the settings given are then not used.
        folder : str or Path
            Folder of this score table's reviews (the dashboard uses
            ``<output>/review/<review_folder_name(table)>``). Holds the label store
            ``<class>__<reviewer>.jsonl`` and the sample ``<class>__<reviewer>.sample.json``.
        files : list of str, optional
            Draw clips of these files only (e.g. those whose audio was found), on
            top of ``settings.files``: a clip must be in both. Not saved with the sample.
        new_sample : bool
            Draw a new sample from ``settings`` even if one is saved; labels are kept.
            A saved sample without clips is always drawn again, with its own
            settings (nothing was reviewed, and the recordings may be found now).
        audio_paths : dict, optional
            See :class:`ReviewSession`.

        Raises
        ------
        KeyError
            The class is not a column of ``scores``.
        ValueError
            ``scores`` is not a score table.
        """
        scores = _check_score_table(scores, settings.class_name)
        folder = Path(folder)
        stem = f"{_safe_name(settings.class_name)}__{_safe_name(settings.reviewer)}"
        store = LabelStore(folder / f"{stem}.jsonl", reviewer=settings.reviewer)
        sample_path = folder / f"{stem}.sample.json"
        saved = None if new_sample else _read_sample(sample_path, scores)
        if saved is not None and len(saved[0]) == 0:
            settings = ReviewSettings(**{**settings.param.values(), **ReviewSettings.sampling_values(saved[1])})
            saved = None
        if saved is None:
            sampling = settings.sampling()
            only = None if files is None else [str(f) for f in files]
            if settings.files:  # both limits hold
                chosen = {str(f) for f in settings.files}
                only = list(chosen) if only is None else [f for f in only if f in chosen]
            drawn = settings.select(scores, files=only)
            sample = _review_order(drawn, settings.strategy, settings.seed)
            sampling["drawn"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            _write_sample(sample_path, sample, sampling)
        else:
            sample, sampling = saved
        session = cls(scores, settings.class_name, store, sample, sampling, audio_paths)
        session.sample_path = sample_path
        return session

    # ------------------------------------------------------------------ state
    def _reload(self) -> None:
        self.labels = self.store.labels(self.class_name)
        self._done = self.sample.index.isin(self.labels.index)

    def _next_unreviewed(self, after: int, exclude: int | None = None):
        todo = np.flatnonzero(~self._done)
        if exclude is not None:
            todo = todo[todo != exclude]
        if not len(todo):
            return None
        later = todo[todo > after]
        return int(later[0] if len(later) else todo[0])

    def __len__(self) -> int:
        return len(self.sample)

    @property
    def current(self):
        """The clip shown now, ``(file, start_time, end_time)``; None past the end."""
        return self.sample.index[self.position] if self.position < len(self.sample) else None

    @property
    def finished(self) -> bool:
        """Every clip of the sample has a label."""
        return bool(self._done.all())

    def progress(self) -> tuple[int, int]:
        """(clips of the sample with a label, clips in the sample)."""
        return int(self._done.sum()), len(self.sample)

    def current_label(self) -> dict | None:
        """``{"label", "note", "reviewer", "time"}`` of the clip shown, None when it has no label."""
        clip = self.current
        if clip is None or clip not in self.labels.index:
            return None
        row = self.labels.loc[clip]
        row = row.iloc[-1] if isinstance(row, pd.DataFrame) else row
        return {k: row[k] for k in ("label", "note", "reviewer", "time")}

    # ------------------------------------------------------------------ moving
    def _move(self, position: int) -> None:
        if position != self.position:
            self._history.append(self.position)
            self.position = position

    def label(self, value: str, note: str = "") -> dict:
        """Save ``value`` (present / absent / unsure) for the clip shown, then go to the next one without a label.

        The search for the next clip goes on after this one and wraps round to
        skipped clips; past the end when every clip has a label.

        Returns
        -------
        dict
            The record written (see :meth:`LabelStore.add`).

        Raises
        ------
        IndexError
            Past the end of the sample (no clip shown).
        ValueError
            ``value`` is not one of :data:`LABEL_VALUES`.
        """
        clip = self.current
        if clip is None:
            raise IndexError("no clip to label: past the end of the sample (go back, or open a new sample)")
        record = self.store.add(clip, self.class_name, value, note)
        self._reload()
        nxt = self._next_unreviewed(self.position)
        self._move(len(self.sample) if nxt is None else nxt)
        return record

    def skip(self) -> None:
        """Leave the clip shown without a label and go to the next one without a label (past the end if none)."""
        nxt = self._next_unreviewed(self.position, exclude=self.position)
        self._move(len(self.sample) if nxt is None else nxt)

    def back(self) -> None:
        """Go back to the clip shown before (after reopening: the previous clip of the sample)."""
        if self._history:
            self.position = self._history.pop()
        else:
            self.position = max(0, self.position - 1)

    def go_to(self, position: int) -> None:
        """Show clip number ``position`` (0-based) of the sample."""
        if not 0 <= int(position) <= len(self.sample):
            raise IndexError(f"position must be between 0 and {len(self.sample)}, got {position}")
        self._move(int(position))

    # ------------------------------------------------------------------ audio
    def audio_path(self, file) -> str:
        """The audio file of a file name of the table."""
        return str(self.audio_paths.get(file, file))

    def clip_audio(self, context: float = 1.0, position: int | None = None) -> tuple[Audio, float]:
        """Audio of a clip with ``context`` seconds on each side (cut at the recording's ends).

        Only that stretch is read from disk.

        Returns
        -------
        (Audio, offset)
            ``offset`` is the time in the recording (s) where the audio starts.

        Raises
        ------
        opso_nb.audio.AudioLoadError
            The file is missing or unreadable (the message names it).
        """
        position = self.position if position is None else position
        file, start, end = self.sample.index[position]
        offset = max(0.0, float(start) - context)
        audio = Audio.from_file(self.audio_path(file), offset=offset, duration=float(end) + context - offset,
                                out_of_bounds_mode="ignore")
        return audio, offset

    # ------------------------------------------------------------------ results
    def reviewed(self) -> pd.DataFrame:
        """The sample's clips that have a label: score, bin, weight, class, label, note, reviewer, time."""
        mine = self.labels[self.labels.index.isin(self.sample.index)]
        table = self.sample.join(mine[["class", "label", "note", "reviewer", "time"]], how="inner")
        return table

    def calibrate(self, target_precision: float = 0.9, n_bootstrap: int = 200, confidence: float = 0.95,
                  seed: int = 0) -> Calibration:
        """:func:`calibrate` on the sample's labelled clips, weighted by their inclusion weights.

        Labels of clips outside the sample (an earlier sample) are left out:
        their weights belong to another design.
        """
        done = self.reviewed()
        return calibrate(self.scores, done[["class", "label"]], self.class_name, target_precision=target_precision,
                         weights=self.sample["weight"], n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)

    def _with_audio_paths(self, table: pd.DataFrame) -> pd.DataFrame:
        level = table.index.get_level_values
        index = make_clip_index([self.audio_path(f) for f in level("file")], level("start_time"), level("end_time"))
        return table.set_axis(index, axis=0)

    def training_labels(self) -> pd.DataFrame:
        """This class's answers as a one-hot clip-label table to train a CNN on (see :func:`labels_to_one_hot`).

        Every present or absent answer in the label store counts, also those
        of clips outside the current sample (training needs no inclusion
        weights); unsure clips are left out.

        Returns
        -------
        DataFrame
            Indexed by ``(file, start_time, end_time)`` (s) with the audio file
            of each clip as an absolute path (see :meth:`audio_path`), one int
            column named after the class: 1 present, 0 absent.
        """
        labels = self.store.labels(self.class_name)
        one_hot = labels_to_one_hot(labels, classes=[self.class_name])
        level = one_hot.index.get_level_values
        # absolute: a CSV's relative paths are read relative to its own folder, not where the audio was found
        files = [str(Path(self.audio_path(f)).absolute()) for f in level("file")]
        return one_hot.set_axis(make_clip_index(files, level("start_time"), level("end_time")), axis=0).astype(int)

    def export(self, folder, calibration: Calibration | None = None, **extra) -> dict:
        """Write the labels CSV, a training table, the calibrated-threshold JSON and Raven tables of confirmed clips.

        Parameters
        ----------
        folder : str or Path
            Created if needed; gets ``labels.csv`` (one row per answer of the
            sample, with score, bin, weight, note, reviewer and time),
            ``training_labels.csv`` (:meth:`training_labels`: columns
            ``file, start_time, end_time, <class>``: read with
            :func:`opso_nb.ml.training_run.read_labels_table` it goes straight
            to :meth:`opso_nb.ml.cnn.CNN.train`, and the training monitor
            dashboard offers it as a clip-label CSV), ``threshold.json`` and
            ``raven/<audio stem>.Table.1.selections.txt``, all written atomically.
            The CSV files are UTF-8: a file name that is not valid UTF-8 (FAT/exFAT
            cards) is written as :mod:`opso_nb.store` writes it, undecodable bytes
            as ``\\xNN`` (:func:`opso_nb.store.utf8_name`), and so is a Raven
            table's name (see :func:`opso_nb.detection.write_raven_tables`).
        calibration : Calibration, optional
            Default :meth:`calibrate` with a target precision of 0.9.
        **extra
            More keys for the JSON file (e.g. ``score_table``).

        Returns
        -------
        dict
            ``labels``, ``training_labels``, ``threshold`` (Paths) and ``raven``
            (list of Paths), all absolute. The training table has a header and
            no rows while no clip is labelled present or absent.
        """
        folder = Path(folder).absolute()
        calibration = calibration if calibration is not None else self.calibrate()
        labels_path = folder / "labels.csv"
        # file names that are not valid UTF-8 are written as the store writes them: bytes as \xNN (utf8_names)
        with atomic_write(labels_path, "w", newline="", encoding="utf-8") as handle:
            utf8_names(reset_clip_index(self.reviewed())).to_csv(handle, index=False)
        training_path = folder / "training_labels.csv"
        with atomic_write(training_path, "w", newline="", encoding="utf-8") as handle:
            utf8_names(reset_clip_index(self.training_labels())).to_csv(handle, index=False)
        threshold_path = calibration.save(folder / "threshold.json", sampling=self.sampling,
                                          reviewer=self.store.reviewer, **extra)
        sample_scores = self._with_audio_paths(self.scores.loc[self.sample.index, [self.class_name]])
        raven = export_raven(self._with_audio_paths(self.reviewed()), folder / "raven", self.class_name,
                             scores=sample_scores)
        return {"labels": labels_path, "training_labels": training_path, "threshold": threshold_path,
                "raven": [Path(p).absolute() for p in raven]}
