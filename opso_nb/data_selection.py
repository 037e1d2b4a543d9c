"""Selecting and balancing label tables before training.

Two label shapes are handled:

* one-hot tables (one 0/1 column per class, any index, usually the clip table
  ``(file, start_time, end_time)``): :func:`resample`;
* categorical tables (one column of text labels, ``"a|b"`` for several):
  :func:`upsample`, :func:`expand_multi_labeled`, :func:`add_numeric_labels`,
  :func:`add_binary_numeric_labels`, :func:`train_valid_split`.

All functions are out-of-place and deterministic for a given ``random_state``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = [
    "resample",
    "upsample",
    "expand_multi_labeled",
    "add_numeric_labels",
    "add_binary_numeric_labels",
    "train_valid_split",
]


def _rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def _take(rows: pd.DataFrame, n: int, with_replace: bool, rng) -> pd.DataFrame:
    """``n`` rows of ``rows``: whole copies first, then a random rest (or all random with replacement)."""
    count = len(rows)
    if n <= 0 or count == 0:
        return rows.iloc[:0]
    if with_replace:
        return rows.iloc[rng.integers(0, count, size=n)]
    if n <= count:
        return rows.iloc[np.sort(rng.choice(count, size=n, replace=False))]
    repeats, rest = divmod(n, count)
    parts = [rows] * repeats
    if rest:
        parts.append(rows.iloc[np.sort(rng.choice(count, size=rest, replace=False))])
    return pd.concat(parts)


def resample(
    df: pd.DataFrame,
    n_samples_per_class: int,
    upsample: bool = True,
    downsample: bool = True,
    with_replace: bool = False,
    random_state=None,
    n_samples_without_labels: int | None = 0,
) -> pd.DataFrame:
    """Draw ``n_samples_per_class`` rows for every class of a one-hot label table.

    Parameters
    ----------
    df : pandas.DataFrame
        One-hot labels: columns are classes, values 0/1; the index (e.g.
        ``(file, start_time, end_time)``) is kept, so rows may repeat.
    n_samples_per_class : int
        Target number of rows per class.
    upsample : bool
        Repeat rows of classes with fewer than ``n`` rows (whole copies, then a
        random rest) to reach ``n``.
    downsample : bool
        Randomly keep ``n`` rows of classes with more than ``n``.
    with_replace : bool
        Draw rows with replacement instead.
    random_state : int or numpy.random.Generator, optional
        Seed for reproducible draws.
    n_samples_without_labels : int or None
        Rows with no positive class to draw as well: ``0`` drops them (with a
        warning), ``None`` keeps them all (OpenSoundscape 0.10+'s default).

    Returns
    -------
    pandas.DataFrame
        Rows grouped by class in column order (all-negative rows last).

    Notes
    -----
    Assumes one label per row: a row positive for two classes can be drawn
    for each, over-representing those classes.

    Examples
    --------
    >>> labels = pd.DataFrame({"a": [1, 1, 1, 0], "b": [0, 0, 0, 1]}, index=list("wxyz"))
    >>> resample(labels, 2, random_state=0).sum().tolist()
    [2, 2]
    """
    if n_samples_per_class < 0:
        raise ValueError(f"n_samples_per_class must be >= 0, got {n_samples_per_class}")
    values = df.to_numpy()
    if not np.isin(values[~pd.isna(values)], [0, 1]).all() or pd.isna(values).any():
        raise ValueError("resample needs a one-hot table: every value must be 0 or 1 (no NaN)")
    rng = _rng(random_state)
    parts = []
    empty_classes = []
    for cls in df.columns:
        rows = df[df[cls] == 1]
        n = len(rows)
        if n == 0:
            empty_classes.append(cls)
            continue
        target = n
        if n < n_samples_per_class and upsample:
            target = n_samples_per_class
        elif n > n_samples_per_class and downsample:
            target = n_samples_per_class
        parts.append(_take(rows, target, with_replace, rng) if (target != n or with_replace) else rows)
    negatives = df[(df == 0).all(axis=1)]
    if len(negatives):
        if n_samples_without_labels is None:
            parts.append(negatives)
        elif n_samples_without_labels > 0:
            parts.append(_take(negatives, n_samples_without_labels, with_replace, rng))
        else:
            warnings.warn(
                f"resample dropped {len(negatives)} row(s) with no positive class; "
                "pass n_samples_without_labels to keep some",
                stacklevel=2,
            )
    if empty_classes:
        warnings.warn(f"classes with no positive rows cannot be resampled: {empty_classes}", stacklevel=2)
    return pd.concat(parts) if parts else df.iloc[:0]


def upsample(input_df: pd.DataFrame, label_column: str = "Labels", with_replace: bool = False,
             random_state=None) -> pd.DataFrame:
    """Repeat rows of rarer categorical labels until every label has as many rows as the commonest.

    Each label's rows are repeated ``max_count // count`` times, then a random
    ``max_count % count`` of them are added (or all ``max_count`` are drawn at
    random with replacement when ``with_replace``).

    Parameters
    ----------
    input_df : pandas.DataFrame
        Table with a categorical label column.
    label_column : str
        Column holding the labels.
    with_replace : bool
        Draw rows with replacement.
    random_state : int, optional
        Seed.

    Returns
    -------
    pandas.DataFrame
        Rows grouped by label (sorted).
    """
    if label_column not in input_df.columns:
        raise ValueError(f"no column {label_column!r}; columns are {list(input_df.columns)}")
    if input_df[label_column].isna().any():
        raise ValueError(f"column {label_column!r} has missing labels (NaN); fill or drop them first")
    rng = _rng(random_state)
    counts = input_df[label_column].value_counts()
    max_count = int(counts.max()) if len(counts) else 0
    parts = [
        _take(input_df[input_df[label_column] == label], max_count, with_replace, rng)
        for label in sorted(counts.index, key=str)
    ]
    return pd.concat(parts) if parts else input_df.iloc[:0]


def expand_multi_labeled(input_df: pd.DataFrame, column_header: str = "Labels",
                         label_separator: str = "|") -> pd.DataFrame:
    """One row per label for rows like ``"robin|wren"``; other columns are copied.

    Examples
    --------
    >>> df = pd.DataFrame({"file": ["a.wav", "b.wav"], "Labels": ["robin|wren", "wren"]})
    >>> expand_multi_labeled(df).Labels.tolist()
    ['robin', 'wren', 'wren']
    """
    if column_header not in input_df.columns:
        raise ValueError(f"no column {column_header!r}; columns are {list(input_df.columns)}")
    out = input_df.copy()
    out[column_header] = out[column_header].map(
        lambda v: [s.strip() for s in str(v).split(label_separator) if s.strip()] if pd.notna(v) else [v]
    )
    return out.explode(column_header)


def add_numeric_labels(input_df: pd.DataFrame, input_column: str = "Labels",
                       output_column: str = "NumericLabels"):
    """Add integer codes for a categorical label column (sorted labels -> 0, 1, ...).

    Returns
    -------
    (pandas.DataFrame, dict)
        The table with ``output_column`` and the ``{label: code}`` map.
    """
    if input_column not in input_df.columns:
        raise ValueError(f"no column {input_column!r}; columns are {list(input_df.columns)}")
    labels = sorted(input_df[input_column].dropna().unique(), key=str)
    mapping = {label: i for i, label in enumerate(labels)}
    out = input_df.copy()
    out[output_column] = out[input_column].map(mapping)
    return out, mapping


def add_binary_numeric_labels(input_df: pd.DataFrame, label, input_column: str = "Labels",
                              output_column: str = "NumericLabels"):
    """1 where ``input_column == label``, else 0.

    Returns
    -------
    (pandas.DataFrame, dict)
        The table and ``{f"not_{label}": 0, label: 1}``.
    """
    if input_column not in input_df.columns:
        raise ValueError(f"no column {input_column!r}; columns are {list(input_df.columns)}")
    out = input_df.copy()
    out[output_column] = (out[input_column] == label).astype(int)
    return out, {f"not_{label}": 0, label: 1}


def train_valid_split(input_df: pd.DataFrame, stratify_from_column: str | None = "Labels",
                      train_size: float = 0.8, random_state=101):
    """Split rows into training and validation tables, keeping label proportions.

    Parameters
    ----------
    input_df : pandas.DataFrame
    stratify_from_column : str or None
        Split each value of this column separately (``None``: plain random split).
    train_size : float
        Fraction (0-1) of rows for training; each stratum gets
        ``round(train_size * count)`` rows.
    random_state : int
        Seed.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        ``(train, valid)``, each in the original row order.
    """
    if not 0 < train_size < 1:
        raise ValueError(f"train_size must be between 0 and 1, got {train_size}")
    rng = _rng(random_state)
    positions = np.arange(len(input_df))
    if stratify_from_column is None:
        groups = [positions]
    else:
        if stratify_from_column not in input_df.columns:
            raise ValueError(f"no column {stratify_from_column!r}; columns are {list(input_df.columns)}")
        codes = pd.factorize(input_df[stratify_from_column].astype(str))[0]
        groups = [positions[codes == c] for c in np.unique(codes)]
    train = []
    for g in groups:
        shuffled = rng.permutation(g)
        train.extend(shuffled[: int(round(train_size * len(g)))])
    is_train = np.zeros(len(input_df), dtype=bool)
    is_train[train] = True
    return input_df.iloc[is_train], input_df.iloc[~is_train]
