"""Classification metrics for clip scores, in numpy (no scikit-learn needed).

``targets`` are 0/1 arrays (n_samples x n_classes), ``scores`` are continuous
(higher = more confident). Classes with no positives (or no negatives) have an
undefined ROC-AUC and average precision: they are NaN and left out of macro means.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def _as_2d(x) -> np.ndarray:
    if isinstance(x, pd.DataFrame):
        x = x.values
    elif hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    return x


def _like_input(result: np.ndarray, original):
    """Return ``result`` in the container type of ``original`` (numpy, list, torch, DataFrame)."""
    if isinstance(original, pd.DataFrame):
        return pd.DataFrame(result, index=original.index, columns=original.columns)
    if hasattr(original, "detach"):
        import torch

        return torch.as_tensor(result)
    if isinstance(original, list):
        return result.tolist()
    return result


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties get their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=float)
    # boundaries of runs of equal values
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1..end
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(targets, scores) -> float:
    """ROC-AUC of one class: the probability that a random positive outscores a random negative.

    Uses the Mann-Whitney rank statistic; ties count one half. NaN if the class
    has no positives or no negatives. Rows with NaN scores are ignored.
    """
    t = np.asarray(targets, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    ok = ~np.isnan(s) & ~np.isnan(t)
    t, s = t[ok], s[ok]
    n_pos = int((t == 1).sum())
    n_neg = len(t) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _rankdata(s)
    return float((ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(targets, scores) -> float:
    """Average precision of one class: sum over thresholds of (recall step) x precision.

    Same definition as scikit-learn's ``average_precision_score`` (no
    interpolation). NaN if the class has no positives.
    """
    t = np.asarray(targets, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    ok = ~np.isnan(s) & ~np.isnan(t)
    t, s = t[ok], s[ok]
    n_pos = (t == 1).sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    # one threshold per distinct score: take the last row of each tie group
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(t)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_step = np.diff(np.r_[0.0, recall])
    return float((recall_step * precision).sum())


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    if np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


def predict_single_target_labels(scores):
    """One-hot labels with a 1 at each row's highest score.

    Accepts numpy arrays, lists, torch tensors or DataFrames and returns the same type.
    """
    s = _as_2d(scores)
    out = np.zeros_like(s, dtype=int)
    if len(s):
        out[np.arange(len(s)), np.nanargmax(np.where(np.isnan(s), -np.inf, s), axis=1)] = 1
    return _like_input(out, scores)


def predict_multi_target_labels(scores, threshold):
    """0/1 labels: 1 where score exceeds ``threshold`` (scalar, or one value per class).

    Accepts numpy arrays, lists, torch tensors or DataFrames and returns the same type.
    A dict ``{class: threshold}`` is accepted for DataFrames.
    """
    s = _as_2d(scores)
    if isinstance(threshold, dict):
        if not isinstance(scores, pd.DataFrame):
            raise TypeError("a dict of thresholds needs a DataFrame of scores (columns = classes)")
        missing = set(scores.columns) - set(threshold)
        if missing:
            raise ValueError(f"no threshold given for classes {sorted(missing)}")
        threshold = [threshold[c] for c in scores.columns]
    thr = np.asarray(threshold, dtype=float)
    if thr.ndim == 1 and thr.shape[0] != s.shape[1]:
        raise ValueError(f"got {thr.shape[0]} thresholds for {s.shape[1]} classes")
    out = (s > thr).astype(int)
    return _like_input(out, scores)


def precision_recall_f1(targets, predictions) -> tuple:
    """Per-class precision, recall and F1 from 0/1 arrays (0 where undefined)."""
    t = _as_2d(targets)
    p = _as_2d(predictions)
    tp = ((p == 1) & (t == 1)).sum(0).astype(float)
    fp = ((p == 1) & (t == 0)).sum(0).astype(float)
    fn = ((p == 0) & (t == 1)).sum(0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def _summary(t, s, p, class_names) -> dict:
    n_classes = t.shape[1]
    class_names = list(class_names) if class_names is not None else list(range(n_classes))
    precision, recall, f1 = precision_recall_f1(t, p)
    aucs = np.array([roc_auc(t[:, i], s[:, i]) for i in range(n_classes)])
    aps = np.array([average_precision(t[:, i], s[:, i]) for i in range(n_classes)])
    finite = ~np.isnan(s)
    metrics = {
        "precision": float(precision.mean()) if n_classes else float("nan"),
        "recall": float(recall.mean()) if n_classes else float("nan"),
        "f1": float(f1.mean()) if n_classes else float("nan"),
        "map": _nanmean(aps),
        "au_roc": _nanmean(aucs),
        "macro_roc_auc": _nanmean(aucs),
        "micro_roc_auc": roc_auc(t[finite], s[finite]) if finite.any() else float("nan"),
        "jaccard": float(((p == 1) & (t == 1)).sum() / max(((p == 1) | (t == 1)).sum(), 1)),
        "hamming_loss": float((p != t).mean()) if t.size else float("nan"),
    }
    for i, c in enumerate(class_names):
        metrics[c] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "au_roc": float(aucs[i]),
            "avg_precision": float(aps[i]),
        }
    return metrics


def multi_target_metrics(targets, scores, class_names=None, threshold=0.5) -> dict:
    """Metrics for multi-label models: scores >= ``threshold`` count as detections.

    Parameters
    ----------
    targets : array-like (n_samples, n_classes)
        0/1 labels.
    scores : array-like (n_samples, n_classes)
        Post-activation scores (e.g. sigmoid, in [0, 1]).
    class_names : list, optional
        Keys for per-class entries.
    threshold : float or list
        Score at or above which a class is predicted present.

    Returns
    -------
    dict
        Overall ``precision``, ``recall``, ``f1`` (class means at threshold),
        ``map`` (mean average precision), ``macro_roc_auc`` (``au_roc``),
        ``micro_roc_auc``, ``jaccard``, ``hamming_loss``, and one dict per class.
    """
    t, s = _as_2d(targets), _as_2d(scores)
    _check_shapes(t, s)
    p = (s >= np.asarray(threshold, dtype=float)).astype(int)
    return _summary(t, s, p, class_names)


def single_target_metrics(targets, scores, class_names=None) -> dict:
    """Metrics for single-label models: each row's highest score is the prediction.

    Same keys as :func:`multi_target_metrics`, plus ``accuracy``.
    """
    t, s = _as_2d(targets), _as_2d(scores)
    _check_shapes(t, s)
    p = predict_single_target_labels(s)
    metrics = _summary(t, s, p, class_names)
    metrics["accuracy"] = float((p.argmax(1) == t.argmax(1)).mean()) if len(t) else float("nan")
    return metrics


def _check_shapes(t, s):
    if t.shape != s.shape:
        raise ValueError(f"targets shape {t.shape} does not match scores shape {s.shape}")
    if len(s) and np.isnan(s).all():
        warnings.warn("Received empty list of predictions (or all nan)", UserWarning, stacklevel=3)


def metrics_table(targets, scores, class_names=None, threshold=0.5, single_target=False) -> pd.DataFrame:
    """Per-class table (rows = classes) of precision, recall, F1, ROC-AUC and average precision."""
    fn = single_target_metrics if single_target else multi_target_metrics
    kwargs = {} if single_target else {"threshold": threshold}
    m = fn(targets, scores, class_names=class_names, **kwargs)
    names = list(class_names) if class_names is not None else list(range(_as_2d(scores).shape[1]))
    return pd.DataFrame({c: m[c] for c in names}).T
