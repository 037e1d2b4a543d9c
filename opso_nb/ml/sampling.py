"""Batch samplers for imbalanced training data.

Both take the training labels (a 0/1 array or DataFrame, rows = samples, columns =
classes) rather than a dataset, so they never have to load audio to learn labels.
"""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import torch


def _labels_array(labels) -> np.ndarray:
    if isinstance(labels, pd.DataFrame):
        labels = labels.values
    elif hasattr(labels, "label_df"):  # an AudioFileDataset
        labels = labels.label_df.values
    labels = np.asarray(labels, dtype=float)
    if labels.ndim == 1:
        labels = labels[:, None]
    return labels


def _labels_from_callback(callback, dataset):
    """Labels from a callback taking the dataset, or the dataset and one index.

    Per-sample results may be 0/1 vectors or single class labels (made one-hot here).
    """
    if len(inspect.signature(callback).parameters) < 2:
        return callback(dataset)
    labels = [callback(dataset, i) for i in range(len(dataset))]
    if all(np.ndim(v) == 0 for v in labels):  # one class label per sample
        return pd.get_dummies(pd.Series(labels)).to_numpy(dtype=float)
    return np.stack([np.asarray(v, dtype=float) for v in labels])


class ImbalancedDatasetSampler(torch.utils.data.Sampler):
    """Draw samples with replacement so that every class is seen about equally often.

    A sample's weight is the mean of ``1 / count(class)`` over its positive classes;
    samples with no positive class count as one more "class" (the negatives).

    Parameters
    ----------
    dataset : array-like or DataFrame or dataset with ``label_df``
        0/1 labels, rows = samples.
    indices : list, optional
        Subset of rows to draw from (default all).
    num_samples : int, optional
        Samples per epoch (default: number of indices).
    callback_get_label : callable, optional
        For labels that must be extracted another way: ``callback_get_label(dataset)``
        returning all labels, or ``callback_get_label(dataset, index)`` returning the
        labels of one sample (OpenSoundscape's form).
    generator : torch.Generator, optional
        For reproducible draws.
    """

    def __init__(self, dataset, indices=None, num_samples=None, callback_get_label=None, generator=None):
        labels = _labels_array(_labels_from_callback(callback_get_label, dataset) if callback_get_label else dataset)
        self.indices = list(range(len(labels))) if indices is None else list(indices)
        self.num_samples = len(self.indices) if num_samples is None else int(num_samples)
        labels = labels[self.indices]
        counts = labels.sum(0)
        n_neg = (labels.sum(1) == 0).sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(counts > 0, 1.0 / counts, 0.0)
        pos = labels.sum(1)
        weights = np.where(pos > 0, (labels * inv).sum(1) / np.maximum(pos, 1), 1.0 / max(n_neg, 1))
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.generator = generator

    def __iter__(self):
        draw = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self.generator)
        return (self.indices[i] for i in draw.tolist())

    def __len__(self):
        return self.num_samples


class ClassAwareSampler(torch.utils.data.Sampler):
    """Class-aware sampling: pick a class in turn, then ``num_samples_cls`` samples of it.

    Each stretch of the epoch holds few classes, represented evenly, so rare classes
    appear as often as common ones (Shen et al. 2016, "Relay backpropagation").

    Parameters
    ----------
    labels : array-like or DataFrame
        0/1 labels, rows = samples, columns = classes.
    num_samples_cls : int
        Consecutive samples drawn from each chosen class.
    seed : int, optional
    """

    def __init__(self, labels, num_samples_cls=1, seed=None):
        labels = _labels_array(labels)
        self.num_samples_cls = int(num_samples_cls)
        self.class_members = [np.flatnonzero(labels[:, c]) for c in range(labels.shape[1])]
        self.class_members = [m for m in self.class_members if len(m)]
        if not self.class_members:
            raise ValueError("ClassAwareSampler needs at least one class with a positive sample")
        self.num_samples = len(labels)
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        out = []
        n_classes = len(self.class_members)
        class_order = self.rng.permutation(n_classes)
        k = 0
        while len(out) < self.num_samples:
            members = self.class_members[class_order[k % n_classes]]
            out.extend(self.rng.choice(members, size=self.num_samples_cls, replace=True).tolist())
            k += 1
            if k % n_classes == 0:
                class_order = self.rng.permutation(n_classes)
        return iter(out[: self.num_samples])

    def __len__(self):
        return self.num_samples
