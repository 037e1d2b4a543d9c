"""SpecAugment-style masks measured in pixels (the older OpenSoundscape API).

The pipeline's :class:`~opso_nb.preprocess.actions.TimeMask` and
:class:`~opso_nb.preprocess.actions.FrequencyMask` measure widths as fractions;
these take absolute widths and fill with the mean unless ``replace_with_zero``.
"""
from __future__ import annotations

import torch


def _mask(spec, max_width, max_masks, replace_with_zero, dim):
    spec = spec.clone()
    size = spec.shape[dim]
    fill = 0.0 if replace_with_zero else float(spec.mean())
    for _ in range(max_masks):
        w = int(torch.randint(0, max_width + 1, (1,)).item())
        if w == 0 or w >= size:
            continue
        start = int(torch.randint(0, size - w, (1,)).item())
        index = [slice(None)] * spec.dim()
        index[dim] = slice(start, start + w)
        spec[tuple(index)] = fill
    return spec


def freq_mask(spec, F=30, max_masks=3, replace_with_zero=False):
    """Up to ``max_masks`` horizontal bars, each at most ``F`` rows tall, over a [..., H, W] tensor."""
    return _mask(spec, F, max_masks, replace_with_zero, dim=spec.dim() - 2)


def time_mask(spec, T=40, max_masks=3, replace_with_zero=False):
    """Up to ``max_masks`` vertical bars, each at most ``T`` columns wide, over a [..., H, W] tensor."""
    return _mask(spec, T, max_masks, replace_with_zero, dim=spec.dim() - 1)
