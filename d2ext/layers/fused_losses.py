"""Focal-family losses fused in logit space: compiled forward and backward kernels, the
references in reference.py as fallback.

Labels are integers per row (anchor): a class in [0, K), K = background, -1 = ignored (the row
contributes nothing). Scores (QFL, VFL) and weights are per row and treated as constants (no
gradient). Half / bfloat16 logits are computed in float32 and the loss returned in float32.
``reduction``: "none" ((N, K); DFL (N,)), "sum", or "mean" (over every element of "none"; 0 for
an empty input, not NaN).
"""

from typing import List, Optional

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
    if not labels.numel():
        return
    num_classes = logits.shape[1]
    if torch.compiler.is_compiling():
        # .item() would break the graph (or be traced away): an async assert stays in the
        # compiled graph and raises RuntimeError there (a device assert on CUDA). It cannot show
        # the value, so the message says how to see it.
        torch._assert_async(
            ((labels >= -1) & (labels <= num_classes)).all(),
            f"labels must be in [-1, {num_classes}] (K = background), got a label outside it "
            "(checked inside torch.compile; run eagerly to see the value)",
        )
        return
    lo, hi = labels.min().item(), labels.max().item()
    if lo < -1 or hi > num_classes:
        bad = lo if lo < -1 else hi
        raise ValueError(f"labels must be in [-1, {num_classes}] (K = background), got {bad}")


def _use_reference(name: str) -> bool:
    if has_ops():
        return False
    warn_fallback_once(name)
    return True


def sigmoid_focal_loss(
    logits: Tensor,
    labels: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    weight: Optional[Tensor] = None,
    reduction: str = "sum",
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
    logits: Tensor,
    labels: Tensor,
    scores: Tensor,
    beta: float = 2.0,
    weight: Optional[Tensor] = None,
    reduction: str = "sum",
) -> Tensor:
    """Quality focal loss, ``|y - p|^beta BCE(x, y)``, y = the row's score at its label's class
    and 0 elsewhere (METHODS.md §3.3)."""
    logits, scores, weight = _float(logits), _float(scores), _float(weight)
    _check_labels(logits, labels)
    r = _reduction_index(reduction)
    if _use_reference("quality_focal_loss"):
        return reference.quality_focal_loss(logits, labels, scores, beta, weight, reduction)
    return torch.ops.d2ext.quality_focal_loss(logits, labels, scores, weight, beta, r)


def varifocal_loss(
    logits: Tensor,
    labels: Tensor,
    scores: Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
    weight: Optional[Tensor] = None,
    reduction: str = "sum",
) -> Tensor:
    """Varifocal loss: q BCE(x, q) where the target q > 0 (BCE alone if not iou_weighted),
    alpha p^gamma BCE(x, 0) elsewhere; q = the row's score at its label's class (METHODS.md §4.3)."""
    logits, scores, weight = _float(logits), _float(scores), _float(weight)
    _check_labels(logits, labels)
    r = _reduction_index(reduction)
    if _use_reference("varifocal_loss"):
        return reference.varifocal_loss(
            logits, labels, scores, alpha, gamma, iou_weighted, weight, reduction
        )
    return torch.ops.d2ext.varifocal_loss(
        logits, labels, scores, weight, alpha, gamma, iou_weighted, r
    )


def distribution_focal_loss(
    logits: Tensor, target: Tensor, weight: Optional[Tensor] = None, reduction: str = "sum"
) -> Tensor:
    """Distribution focal loss of (N, n + 1) bin logits against targets in [0, n]: cross-entropy to
    the two bins around the target, weighted by linear interpolation (METHODS.md §3.3)."""
    logits, target, weight = _float(logits), _float(target), _float(weight)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"logits must have shape (N, n + 1) with n >= 1, got {tuple(logits.shape)}"
        )
    n = logits.shape[1] - 1
    if target.numel() and torch.compiler.is_compiling():
        # As _check_labels: NaN fails the comparisons too.
        torch._assert_async(
            ((target >= 0) & (target <= n)).all(),
            f"target must be in [0, {n}] (clamp it, e.g. to {n - 0.1}), got a value outside it or NaN "
            "(checked inside torch.compile; run eagerly to see the value)",
        )
    elif target.numel():
        lo, hi = (v.item() for v in torch.aminmax(target))  # NaN if any is NaN
        if not (lo >= 0 and hi <= n):
            raise ValueError(
                f"target must be in [0, {n}] (clamp it, e.g. to {n - 0.1}), got {hi if lo >= 0 else lo}"
            )
    r = _reduction_index(reduction)
    if _use_reference("distribution_focal_loss"):
        return reference.distribution_focal_loss(logits, target, weight, reduction)
    return torch.ops.d2ext.distribution_focal_loss(logits, target, weight, r)[0]


def ap_loss(
    logits: Tensor,
    labels: Tensor,
    delta: float = 1.0,
    interpolated: bool = True,
    rows_per_image: Optional[List[int]] = None,
) -> Tensor:
    """
    AP-loss (Chen et al., CVPR 2019; METHODS.md §6.3) over every (anchor, class) entry, with the
    paper's error-driven update as the gradient of the logits.

    Labels follow d2ext's integer convention, one per row (anchor): class c in [0, K) makes
    entry (row, c) a positive and the row's other K - 1 entries negatives; K (background) makes
    all K entries negatives; -1 (ignored) takes the row out of the ranking.
    All entries are ranked jointly (the minibatch ranking of the paper); with
    ``rows_per_image`` (rows of each image, consecutive) each image is ranked on its own and the
    loss is the mean over images that have positives.

    The kernel sorts the scores once and gets every rank and accumulated error from binary
    searches and prefix sums: O((P + N) log(P + N)) instead of the O(P * N) of the released
    code (kept as d2ext.layers.reference.ap_loss).

    Returns:
        0-dim tensor: 1 - AP (interpolated AP if ``interpolated``, as the released code).
    """
    logits = _float(logits)
    _check_labels(logits, labels)
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if rows_per_image is not None:
        if sum(rows_per_image) != logits.shape[0]:
            raise ValueError(
                f"rows_per_image {list(rows_per_image)} does not sum to the {logits.shape[0]} rows"
            )
        losses = [
            ap_loss(x, y, delta, interpolated)
            for x, y in zip(logits.split(list(rows_per_image)), labels.split(list(rows_per_image)))
            if ((y >= 0) & (y < logits.shape[1])).any()
        ]
        return torch.stack(losses).mean() if losses else logits.sum() * 0.0
    if _use_reference("ap_loss"):
        return _APLossReference.apply(logits, labels, delta, interpolated)
    return torch.ops.d2ext.ap_loss(logits, labels, delta, interpolated)[0]


class _APLossReference(torch.autograd.Function):
    """The reference's error-driven update as a gradient (fallback when the ops are missing)."""

    @staticmethod
    def forward(ctx, logits, labels, delta, interpolated):
        loss, grad = reference.ap_loss(logits.detach(), labels, delta, interpolated)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return grad_loss * grad, None, None, None
