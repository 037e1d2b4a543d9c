"""Augmentations on PIL images."""
from __future__ import annotations

import numpy as np
from PIL import Image


def time_split(img, seed=None):
    """Cut a PIL image at a random column and swap the two halves (time wraps around).

    Parameters
    ----------
    img : PIL.Image.Image
    seed : int, optional
        Seed of the random cut position (None: a fresh draw).

    Returns
    -------
    PIL.Image.Image
        Same size; columns ``cut:`` followed by columns ``:cut``.
    """
    rng = np.random.default_rng(seed)
    array = np.asarray(img)
    cut = int(rng.integers(0, array.shape[1]))
    return Image.fromarray(np.concatenate([array[:, cut:], array[:, :cut]], axis=1))
