"""Classification metrics for clip scores, computed with scikit-learn.

``targets`` are 0/1 arrays (n_samples x n_classes), ``scores`` are continuous
(higher = more confident). Classes with no positives (or no negatives) have an
undefined ROC-AUC and average precision: they are NaN and left out of macro
means. Rows whose score is NaN (a clip that could not be read) are left out of
the ranking metrics of that class.

:func:`predict_single_target_labels` and :func:`predict_multi_target_labels`
turn scores into 0/1 labels; :mod:`opso_nb.detection` re-exports them, so both
paths give the same labels.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    hamming_loss,
    jaccard_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "average_precision",
    "metrics_table",
    "multi_target_metrics",
    "precision_recall_f1",
    "predict_multi_target_labels",
    "predict_single_target_labels",
    "roc_auc",
    "single_target_metrics",
    "threshold_array",
]


def _as_2d(x) -> np.ndarray:
    if isinstance(x, pd.DataFrame):
        x = x.to_numpy()
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
        # torch is heavy and optional here: only reached when the input already is a tensor
        import torch

        return torch.as_tensor(result)
    if isinstance(original, list):
        return result.tolist()
    return result


def _finite_pairs(targets, scores):
    """Flattened targets and scores without the rows where either is NaN."""
    t = np.asarray(targets, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if t.shape != s.shape:
        raise ValueError(f"targets ({t.size} values) and scores ({s.size} values) differ in length")
    keep = ~(np.isnan(t) | np.isnan(s))
    return t[keep], s[keep]


def roc_auc(targets, scores) -> float:
    """ROC-AUC of one class: the probability that a random positive outscores a random negative.

    scikit-learn's ``roc_auc_score``; ties count one half. NaN when the class has
    no positives or no negatives. Rows with a NaN target or score are left out.
    """
    t, s = _finite_pairs(targets, scores)
    n_pos = int((t == 1).sum())
    if n_pos == 0 or n_pos == len(t):
        return float("nan")
    return float(roc_auc_score(t, s))


def average_precision(targets, scores) -> float:
    """Average precision of one class: the mean of the precision at each recall step.

    scikit-learn's ``average_precision_score`` (no interpolation; tied scores form
    one threshold). NaN when the class has no positives. Rows with a NaN target
    or score are left out.
    """
    t, s = _finite_pairs(targets, scores)
    if not (t == 1).any():
        return float("nan")
    return float(average_precision_score(t, s))


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


def threshold_array(threshold, classes) -> np.ndarray:
    """One threshold per class, in the order of ``classes``.

    Parameters
    ----------
    threshold : float, list, array, dict or pandas.Series
        One value for all classes, one per class in order, or a mapping
        class -> threshold covering every class.
    classes : list
        Class names (columns of a score table).

    Returns
    -------
    numpy.ndarray of float, shape (len(classes),)

    Raises
    ------
    ValueError
        Wrong number of thresholds, classes missing from a mapping, or NaN thresholds.
    """
    classes = list(classes)
    if isinstance(threshold, (dict, pd.Series)):
        mapping = dict(threshold)
        missing = [c for c in classes if c not in mapping]
        if missing:
            raise ValueError(f"threshold has no value for classes {missing}")
        values = [mapping[c] for c in classes]
    elif np.ndim(threshold) == 0:
        values = [threshold] * len(classes)
    else:
        values = list(np.asarray(threshold).ravel())
        if len(values) != len(classes):
            raise ValueError(
                f"got {len(values)} thresholds for {len(classes)} classes {classes}; "
                "give one number, one per class, or a dict {class: threshold}"
            )
    out = np.asarray(values, dtype=float)
    if np.isnan(out).any():
        raise ValueError(f"thresholds must be numbers, got NaN for {[c for c, v in zip(classes, out) if np.isnan(v)]}")
    return out


def predict_single_target_labels(scores):
    """One-hot labels: 1 on each row's highest score, 0 elsewhere.

    NaN scores are ignored; a row whose scores are all NaN (a clip that could not
    be read) gets no label at all (all 0), never a made-up class.

    Parameters
    ----------
    scores : 2-D numpy array, list of lists, torch.Tensor or DataFrame

    Returns
    -------
    0/1 integer labels in the container type of ``scores``.
    """
    s = _as_2d(scores)
    out = np.zeros(s.shape, dtype=int)
    scored = ~np.all(np.isnan(s), axis=1)
    if scored.any():
        best = np.argmax(np.where(np.isnan(s[scored]), -np.inf, s[scored]), axis=1)
        out[np.flatnonzero(scored), best] = 1
    return _like_input(out, scores)


def predict_multi_target_labels(scores, threshold):
    """0/1 labels: 1 where a score reaches its class threshold (``score >= threshold``).

    OpenSoundscape 0.13's function computes ``scores >= threshold`` (its
    ``multi_target_metrics`` documents "scores >= threshold result in
    prediction of 1"), as do :func:`multi_target_metrics`,
    :func:`opso_nb.detection.detect` and ``sklearn.metrics.precision_recall_curve``:
    one rule, so a threshold chosen from a precision/recall table picks the same clips here.

    Parameters
    ----------
    scores : 2-D numpy array, list of lists, torch.Tensor or DataFrame
    threshold : float, list, dict or pandas.Series
        One value for all classes, one per class (column order), or (for a
        DataFrame) a mapping class -> threshold; see :func:`threshold_array`.

    Returns
    -------
    0/1 integer labels in the container type of ``scores``. NaN scores give 0.
    """
    s = _as_2d(scores)
    if isinstance(threshold, (dict, pd.Series)):
        if not isinstance(scores, pd.DataFrame):
            raise TypeError("a mapping of thresholds needs a DataFrame of scores (columns = classes)")
        classes = list(scores.columns)
    else:
        classes = list(scores.columns) if isinstance(scores, pd.DataFrame) else list(range(s.shape[1]))
    thr = threshold_array(threshold, classes)
    with np.errstate(invalid="ignore"):
        out = (s >= thr[None, :]).astype(int)
    return _like_input(out, scores)


def _per_class_scores(targets, predictions) -> dict:
    """Per-class precision, recall, F1, support and Jaccard index (scikit-learn; 0 where undefined)."""
    t, p = _as_2d(targets), _as_2d(predictions)
    if t.shape != p.shape:
        raise ValueError(f"targets shape {t.shape} does not match predictions shape {p.shape}")
    names = ("precision", "recall", "f1", "support", "jaccard")
    out = {name: np.zeros(t.shape[1]) for name in names}
    for j in range(t.shape[1]):
        # one class at a time: scikit-learn reads a single column as binary, several as multi-label
        prf = precision_recall_fscore_support(t[:, j], p[:, j], labels=[1], average=None, zero_division=0)
        jac = jaccard_score(t[:, j], p[:, j], labels=[1], average=None, zero_division=0)
        for name, value in zip(names, (*prf, jac)):
            out[name][j] = float(value[0])
    return out


def precision_recall_f1(targets, predictions) -> tuple:
    """Per-class precision, recall and F1 from 0/1 arrays (scikit-learn; 0 where undefined).

    Returns
    -------
    (precision, recall, f1) : three numpy arrays, one value per class (column)
    """
    scores = _per_class_scores(targets, predictions)
    return scores["precision"], scores["recall"], scores["f1"]


def _summary(t, s, p, class_names) -> dict:
    n_classes = t.shape[1]
    class_names = list(class_names) if class_names is not None else list(range(n_classes))
    per_class = _per_class_scores(t, p)
    aucs = np.array([roc_auc(t[:, i], s[:, i]) for i in range(n_classes)])
    aps = np.array([average_precision(t[:, i], s[:, i]) for i in range(n_classes)])
    metrics = {
        "precision": _nanmean(per_class["precision"]),
        "recall": _nanmean(per_class["recall"]),
        "f1": _nanmean(per_class["f1"]),
        "map": _nanmean(aps),
        "au_roc": _nanmean(aucs),
        "macro_roc_auc": _nanmean(aucs),
        "micro_roc_auc": roc_auc(t, s),
        "jaccard": _nanmean(per_class["jaccard"]),
        "hamming_loss": float(hamming_loss(t.ravel(), p.ravel())) if t.size else float("nan"),
    }
    for i, c in enumerate(class_names):
        metrics[c] = {
            "precision": float(per_class["precision"][i]),
            "recall": float(per_class["recall"][i]),
            "f1": float(per_class["f1"][i]),
            "au_roc": float(aucs[i]),
            "avg_precision": float(aps[i]),
            "support": int(per_class["support"][i]),
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
        Keys for per-class entries (default 0, 1, ...).
    threshold : float or list
        Score at or above which a class is predicted present.

    Returns
    -------
    dict
        Overall ``precision``, ``recall``, ``f1`` (class means at threshold),
        ``map`` (mean average precision), ``macro_roc_auc`` (also ``au_roc``),
        ``micro_roc_auc``, ``jaccard`` (class mean of the Jaccard index),
        ``hamming_loss``, and one dict per class (``precision``, ``recall``, ``f1``,
        ``au_roc``, ``avg_precision``, ``support`` = number of positives).
    """
    t, s = _as_2d(targets), _as_2d(scores)
    _check_shapes(t, s)
    with np.errstate(invalid="ignore"):
        p = (s >= np.asarray(threshold, dtype=float)).astype(int)
    return _summary(t, s, p, class_names)


def single_target_metrics(targets, scores, class_names=None) -> dict:
    """Metrics for single-label models: each row's highest score is the prediction.

    Same keys as :func:`multi_target_metrics` (precision, recall and F1 are
    class averages), plus ``accuracy`` (share of rows whose top class is the
    labelled one) and ``confusion_matrix`` (rows = labelled class, columns =
    predicted class; rows without a prediction are left out).
    """
    t, s = _as_2d(targets), _as_2d(scores)
    _check_shapes(t, s)
    p = predict_single_target_labels(s)
    metrics = _summary(t, s, p, class_names)
    metrics["accuracy"] = float((p == t).all(axis=1).mean()) if len(t) else float("nan")
    predicted = p.sum(axis=1) == 1
    metrics["confusion_matrix"] = confusion_matrix(t[predicted].argmax(1), p[predicted].argmax(1),
                                                   labels=list(range(t.shape[1])))
    return metrics


def _check_shapes(t, s):
    if t.shape != s.shape:
        raise ValueError(f"targets shape {t.shape} does not match scores shape {s.shape}")
    if len(s) == 0 or np.isnan(s).all():
        warnings.warn("Received empty list of predictions (or all nan)", UserWarning, stacklevel=3)


def metrics_table(targets, scores, class_names=None, threshold=0.5, single_target=False) -> pd.DataFrame:
    """Per-class table (rows = classes) of precision, recall, F1, ROC-AUC and average precision."""
    fn = single_target_metrics if single_target else multi_target_metrics
    kwargs = {} if single_target else {"threshold": threshold}
    m = fn(targets, scores, class_names=class_names, **kwargs)
    names = list(class_names) if class_names is not None else list(range(_as_2d(scores).shape[1]))
    return pd.DataFrame({c: m[c] for c in names}).T
