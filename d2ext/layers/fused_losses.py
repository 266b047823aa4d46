"""Focal-family losses fused in logit space: compiled forward and backward kernels, the
references in reference.py as fallback.

Labels are integers per row (anchor): a class in [0, K), K = background, -1 = ignored (the row
contributes nothing). Scores (QFL, VFL) and weights are per row and treated as constants (no
gradient). Half / bfloat16 logits are computed in float32 and the loss returned in float32.
``reduction``: "none" ((N, K); DFL (N,)), "sum", or "mean" (over every element of "none"; 0 for
an empty input, not NaN).
"""
from typing import Optional

import torch
from torch import Tensor

from . import reference
from ._extension import has_ops, warn_fallback_once

# Indices must match enum Reduction in csrc/focal_losses/focal_losses_checks.h.
REDUCTIONS = ("none", "sum", "mean")


def _reduction_index(reduction: str) -> int:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return REDUCTIONS.index(reduction)


def _float(t: Optional[Tensor]) -> Optional[Tensor]:
    """Half and bfloat16 are computed in float32."""
    if t is not None and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def _check_labels(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, K), got {tuple(logits.shape)}")
    if labels.dtype != torch.int64 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must be int64 of shape ({logits.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and not torch.compiler.is_compiling():
        lo, hi = labels.min().item(), labels.max().item()
        if lo < -1 or hi > logits.shape[1]:
            bad = lo if lo < -1 else hi
            raise ValueError(f"labels must be in [-1, {logits.shape[1]}] (K = background), got {bad}")


def _use_reference(name: str) -> bool:
    if has_ops():
        return False
    warn_fallback_once(name)
    return True


def sigmoid_focal_loss(
    logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0,
    weight: Optional[Tensor] = None, reduction: str = "sum",
) -> Tensor:
    """Focal loss, alpha_t (1 - p_t)^gamma BCE(x, t), t = 1 at the label's class (METHODS.md §1.3).
    alpha < 0 disables the alpha_t weighting."""
    logits, weight = _float(logits), _float(weight)
    _check_labels(logits, labels)
    r = _reduction_index(reduction)
    if _use_reference("sigmoid_focal_loss"):
        return reference.sigmoid_focal_loss(logits, labels, alpha, gamma, weight, reduction)
    return torch.ops.d2ext.sigmoid_focal_loss(logits, labels, weight, alpha, gamma, r)


def quality_focal_loss(
    logits: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0,
    weight: Optional[Tensor] = None, reduction: str = "sum",
) -> Tensor:
    """Quality focal loss, |y - p|^beta BCE(x, y), y = the row's score at its label's class and 0
    elsewhere (METHODS.md §3.3)."""
    logits, scores, weight = _float(logits), _float(scores), _float(weight)
    _check_labels(logits, labels)
    r = _reduction_index(reduction)
    if _use_reference("quality_focal_loss"):
        return reference.quality_focal_loss(logits, labels, scores, beta, weight, reduction)
    return torch.ops.d2ext.quality_focal_loss(logits, labels, scores, weight, beta, r)


def varifocal_loss(
    logits: Tensor, labels: Tensor, scores: Tensor, alpha: float = 0.75, gamma: float = 2.0,
    iou_weighted: bool = True, weight: Optional[Tensor] = None, reduction: str = "sum",
) -> Tensor:
    """Varifocal loss: q BCE(x, q) where the target q > 0 (BCE alone if not iou_weighted),
    alpha p^gamma BCE(x, 0) elsewhere; q = the row's score at its label's class (METHODS.md §4.3)."""
    logits, scores, weight = _float(logits), _float(scores), _float(weight)
    _check_labels(logits, labels)
    r = _reduction_index(reduction)
    if _use_reference("varifocal_loss"):
        return reference.varifocal_loss(logits, labels, scores, alpha, gamma, iou_weighted, weight, reduction)
    return torch.ops.d2ext.varifocal_loss(logits, labels, scores, weight, alpha, gamma, iou_weighted, r)


def distribution_focal_loss(
    logits: Tensor, target: Tensor, weight: Optional[Tensor] = None, reduction: str = "sum"
) -> Tensor:
    """Distribution focal loss of (N, n + 1) bin logits against targets in [0, n]: cross-entropy to
    the two bins around the target, weighted by linear interpolation (METHODS.md §3.3)."""
    logits, target, weight = _float(logits), _float(target), _float(weight)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, n + 1) with n >= 1, got {tuple(logits.shape)}")
    if target.numel() and not torch.compiler.is_compiling():
        lo, hi, n = target.min().item(), target.max().item(), logits.shape[1] - 1
        if lo < 0 or hi > n:
            raise ValueError(f"target must be in [0, {n}] (clamp it, e.g. to {n - 0.1}), got {lo if lo < 0 else hi}")
    r = _reduction_index(reduction)
    if _use_reference("distribution_focal_loss"):
        return reference.distribution_focal_loss(logits, target, weight, reduction)
    return torch.ops.d2ext.distribution_focal_loss(logits, target, weight, r)
