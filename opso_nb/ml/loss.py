"""Loss functions taking one-hot (0/1) label tensors, as the CNN's data loaders produce.

* :class:`BCEWithLogitsLoss_hot`: multi-target (each class independent), optional
  label smoothing and per-class positive weights.
* :class:`CrossEntropyLoss_hot`: single-target (exactly one positive per sample),
  optional class weights and label smoothing.
* :class:`ResampleLoss`: distribution-balanced loss for imbalanced multi-target data
  (Wu et al. 2020, "Distribution-Balanced Loss for Multi-Label Classification in
  Long-Tailed Datasets"): re-weights each positive by how rare its class is relative
  to the other labels of the same sample, and softens the push on negatives of rare
  classes so they are not suppressed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce an element-wise loss: ``"none"``, ``"mean"`` or ``"sum"``."""
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def weight_reduce_loss(loss, weight=None, reduction="mean", avg_factor=None):
    """Multiply by element-wise ``weight`` then reduce; ``avg_factor`` replaces the count in the mean."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    if reduction == "mean":
        return loss.sum() / avg_factor
    if reduction == "none":
        return loss
    raise ValueError("avg_factor can only be used with reduction='mean' or 'none'")


def binary_cross_entropy(pred, label, weight=None, reduction="mean", avg_factor=None):
    """Element-wise BCE on logits ``pred`` against float ``label``, weighted and reduced."""
    loss = F.binary_cross_entropy_with_logits(pred, label.float(), reduction="none")
    return weight_reduce_loss(loss, weight=weight, reduction=reduction, avg_factor=avg_factor)


class BCEWithLogitsLoss_hot(torch.nn.BCEWithLogitsLoss):
    """``nn.BCEWithLogitsLoss`` for 0/1 integer labels, with optional label smoothing.

    Parameters
    ----------
    label_smoothing : float
        Targets become ``y * (1 - eps) + eps / 2``: a little doubt about every label,
        which helps when labels are noisy (common with weak clip labels).
    pos_weight : tensor, optional
        Weight of positives per class (e.g. n_negative / n_positive for rare classes).
    """

    def __init__(self, *args, label_smoothing: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        target = target.float()
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
        return super().forward(input, target)


class CrossEntropyLoss_hot(torch.nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` taking one-hot labels (converted to class indices).

    Raises
    ------
    ValueError
        If a row of the labels does not have exactly one 1.
    """

    def forward(self, input, target):
        if target.ndim == 2:
            if not torch.all(target.sum(1) == 1):
                raise ValueError(
                    "CrossEntropyLoss_hot needs one-hot labels (exactly one positive class per "
                    "sample); use a multi-target model (single_target=False) otherwise"
                )
            target = target.argmax(1)
        return super().forward(input, target.long())


class ResampleLoss(torch.nn.Module):
    """Distribution-balanced BCE for multi-target training on imbalanced classes.

    Parameters
    ----------
    class_freq : array-like (n_classes,)
        Number of positive training samples per class.
    reduction : {"mean", "sum", "none"}
    loss_weight : float
        Multiplier on the returned loss.
    train_num : int, optional
        Number of training samples (default: ``max(class_freq) * 2``, a rough guess
        when only counts are known; pass it when you have it).
    focal : bool
        Down-weight easy examples by ``(1 - p_t) ** gamma``.
    gamma : float
        Focal exponent.
    map_alpha, map_beta, map_gamma : float
        Smoothing of the re-balancing weight: ``alpha + sigmoid(beta * (r - gamma))``.
    neg_scale : float
        Sharpness ``lambda`` of the tolerant loss on negatives (higher = gentler on
        confident negatives).
    init_bias : float
        Scale ``kappa`` of the class-prior logit shift applied to negatives.
    """

    def __init__(self, class_freq, reduction="mean", loss_weight=1.0, train_num=None, focal=True, gamma=2.0,
                 map_alpha=0.1, map_beta=10.0, map_gamma=0.2, neg_scale=2.0, init_bias=0.05):
        super().__init__()
        freq = torch.as_tensor(np.asarray(class_freq, dtype=float), dtype=torch.float32).clamp(min=1)
        if train_num is None:
            train_num = float(freq.max() * 2)
        self.register_buffer("class_freq", freq)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self.focal = focal
        self.gamma = gamma
        self.map_alpha, self.map_beta, self.map_gamma = map_alpha, map_beta, map_gamma
        self.neg_scale = neg_scale
        prior = (freq / float(train_num)).clamp(1e-4, 1 - 1e-4)
        # negatives of class k get their logit lowered by kappa * logit(prior_k): rare
        # classes' negatives are pushed less hard
        self.register_buffer("neg_shift", -init_bias * torch.log(1 / prior - 1))

    def _rebalance_weight(self, labels):
        inv = 1.0 / self.class_freq  # sampling probability of each class, up to a constant
        per_sample = (labels * inv).sum(1, keepdim=True)
        # samples without positives keep weight from r = 1
        r = torch.where(per_sample > 0, inv / per_sample.clamp(min=1e-12), torch.ones_like(inv))
        return self.map_alpha + torch.sigmoid(self.map_beta * (r - self.map_gamma))

    def forward(self, cls_score, label):
        label = label.float()
        weight = self._rebalance_weight(label)
        logits = cls_score + self.neg_shift * (1 - label)
        # negative-tolerant: scale negatives' logits by lambda, divide loss by lambda
        scale = torch.where(label > 0, torch.ones_like(logits), torch.full_like(logits, self.neg_scale))
        logits_s = logits * scale
        loss = F.binary_cross_entropy_with_logits(logits_s, label, reduction="none") / scale
        if self.focal:
            p = torch.sigmoid(logits_s)
            p_t = torch.where(label > 0, p, 1 - p)
            loss = loss * (1 - p_t) ** self.gamma
        return self.loss_weight * weight_reduce_loss(loss, weight=weight, reduction=self.reduction)
