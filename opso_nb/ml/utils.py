"""Small helpers for the ML modules: activation layers, batching, class-aware loaders."""
from __future__ import annotations

import numpy as np
import torch

ACTIVATION_LAYERS = (None, "sigmoid", "softmax", "softmax_and_logit")


def apply_activation_layer(x, activation_layer=None):
    """Apply an activation to raw network outputs (logits), rows = samples.

    Parameters
    ----------
    x : torch.Tensor or array-like (n_samples, n_classes)
    activation_layer : {None, "sigmoid", "softmax", "softmax_and_logit"}
        None keeps logits; "sigmoid" gives independent scores in [0, 1]; "softmax" gives
        scores summing to 1 per row; "softmax_and_logit" maps softmax scores back to the
        logit scale (spreads scores near 0 and 1 apart).

    Returns
    -------
    torch.Tensor
    """
    if activation_layer not in ACTIVATION_LAYERS:
        raise ValueError(f"activation_layer must be one of {ACTIVATION_LAYERS}, got {activation_layer!r}")
    x = torch.as_tensor(x, dtype=torch.float32)
    if activation_layer is None:
        return x
    if activation_layer == "sigmoid":
        return torch.sigmoid(x)
    soft = torch.softmax(x, dim=1)
    if activation_layer == "softmax":
        return soft
    return torch.logit(soft, eps=1e-7)


def get_batch(array, batch_size, batch_number):
    """Rows ``batch_number * batch_size`` up to the next ``batch_size`` (the last batch may be short)."""
    start = batch_number * batch_size
    return array[start : start + batch_size]


def cas_dataloader(dataset, batch_size, num_workers, labels=None, num_samples_cls=1):
    """DataLoader drawing batches with :class:`~opso_nb.ml.sampling.ClassAwareSampler`.

    ``labels`` default to ``dataset.label_df``.
    """
    from opso_nb.ml.sampling import ClassAwareSampler

    labels = dataset.label_df.values if labels is None else np.asarray(labels)
    sampler = ClassAwareSampler(labels, num_samples_cls=num_samples_cls)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, sampler=sampler)
