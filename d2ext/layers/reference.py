"""Pure-PyTorch references of every d2ext op.

They are the test oracle for the compiled kernels and the fallback when d2ext._C is not built.
Each has the signature of the public function it stands for, and follows the same conventions
(see the C++ headers under csrc/): boxes are (x1, y1, x2, y2); an inverted box counts as
zero-area; a pair with an empty union has IoU 0; a NaN coordinate gives a NaN overlap / loss and
a NaN gradient of its whole box (a diverged box must not look like a finite, trainable one).
"""

import torch
from torch import Tensor


class _ClampMinZero(torch.autograd.Function):
    """clamp(min=0) whose gradient keeps NaN: torch's clamp passes 0 where its input is NaN or
    <= 0 even when the incoming gradient is NaN, so a NaN box would get some finite (0) partials."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, grad, torch.where(torch.isnan(x), x, grad * 0))


def _clamp0(x: Tensor) -> Tensor:
    return _ClampMinZero.apply(x)


def _area(boxes: Tensor) -> Tensor:
    wh = _clamp0(boxes[..., 2:] - boxes[..., :2])
    return wh[..., 0] * wh[..., 1]


def _ratio_or(num: Tensor, den: Tensor, empty) -> Tensor:
    """num / den, or `empty` where den <= 0; NaN where den is NaN (tested as `den <= 0`, which is
    false for NaN, where `den > 0` would replace a NaN by `empty`). den is replaced by 1 where it
    is empty so that no 0/0 reaches the backward pass."""
    return torch.where(den <= 0, empty, num / torch.where(den <= 0, 1.0, den))


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou") -> Tensor:
    """IoU or GIoU between every box of ``boxes1`` (N, 4) and of ``boxes2`` (M, 4): (N, M)."""
    a = boxes1[:, None, :]
    b = boxes2[None, :, :]
    inter_wh = _clamp0(
        torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])
    )
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = _area(a) + _area(b) - inter
    iou = _ratio_or(inter, union, 0.0)
    if mode == "iou":
        return iou
    enclose_wh = _clamp0(
        torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    )
    enclose = enclose_wh[..., 0] * enclose_wh[..., 1]
    return iou - _ratio_or(enclose - union, enclose, 0.0)


# ---- focal-family losses (METHODS.md §1.3, §3.3, §4.3) -------------------------------------
# Integer labels: K = background, -1 = ignored (its row contributes nothing). `reduction` is
# "none" (N, K) / (N,) for DFL, "sum" or "mean" (over every element of the "none" output; 0 when
# there is none).


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    """The mean of no element is 0 (not NaN): an empty batch must not poison training."""
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / max(loss.numel(), 1)


def _dense_targets(logits: Tensor, labels: Tensor, scores=None) -> Tensor:
    """(N, K) target: 1 (or the row's score) at the label's class, 0 elsewhere and for ignored rows."""
    num_classes = logits.shape[1]
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), num_classes + 1)[:, :num_classes]
    onehot = onehot * (labels >= 0)[:, None]
    onehot = onehot.to(logits.dtype)
    return onehot if scores is None else onehot * scores[:, None]


def _row_weight(logits: Tensor, labels: Tensor, weight) -> Tensor:
    valid = (labels >= 0).to(logits.dtype)
    return (valid if weight is None else valid * weight)[:, None]


def sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0, weight=None, reduction="sum"):
    """Focal loss (Lin et al.): alpha_t (1 - p_t)^gamma BCE; alpha < 0 disables alpha_t."""
    targets = _dense_targets(logits, labels)
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return _reduce(loss * _row_weight(logits, labels, weight), reduction)


def quality_focal_loss(logits, labels, scores, beta=2.0, weight=None, reduction="sum"):
    """QFL (GFL): |y - p|^beta BCE(x, y), y = the row's score at its label's class, else 0."""
    targets = _dense_targets(logits, labels, scores)
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = (p - targets).abs() ** beta * ce
    return _reduce(loss * _row_weight(logits, labels, weight), reduction)


def varifocal_loss(
    logits, labels, scores, alpha=0.75, gamma=2.0, iou_weighted=True, weight=None, reduction="sum"
):
    """VFL (VarifocalNet): q BCE(x, q) where q > 0 (1 BCE if not iou_weighted), alpha p^gamma
    BCE(x, 0) elsewhere; q = the row's score at its label's class."""
    targets = _dense_targets(logits, labels, scores)
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    positive = (targets > 0).to(logits.dtype)
    focal_weight = (targets if iou_weighted else 1.0) * positive + alpha * p**gamma * (1 - positive)
    return _reduce(focal_weight * ce * _row_weight(logits, labels, weight), reduction)


def distribution_focal_loss(logits, target, weight=None, reduction="sum"):
    """DFL (GFL): cross-entropy of (N, n + 1) bin logits to the two bins around target in [0, n],
    weighted by linear interpolation; target == n puts all weight on the last bin."""
    last = logits.shape[1] - 1
    target = target.clamp(0, last)
    left = target.floor().long().clamp(max=last - 1)
    w_left = (left + 1).to(target.dtype) - target
    w_right = target - left.to(target.dtype)
    log_p = torch.log_softmax(logits, dim=1)
    loss = -(
        w_left * log_p.gather(1, left[:, None])[:, 0]
        + w_right * log_p.gather(1, left[:, None] + 1)[:, 0]
    )
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def combined_iou(
    anchors: Tensor, pred_boxes: Tensor, gt_boxes: Tensor, anchor_weight=1.0, pred_weight=1.0
):
    """DynamicATSS's combined IoU (R, M): anchor_weight IoU(anchor, gt) + pred_weight IoU(pred, gt)."""
    return anchor_weight * pairwise_iou(anchors, gt_boxes) + pred_weight * pairwise_iou(
        pred_boxes, gt_boxes
    )


# ---- aligned box overlaps and the GIoU loss --------------------------------------------------


def aligned_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou") -> Tensor:
    """IoU or GIoU of each pair (boxes1[i], boxes2[i]): (N,)."""
    inter_wh = _clamp0(
        torch.minimum(boxes1[:, 2:], boxes2[:, 2:]) - torch.maximum(boxes1[:, :2], boxes2[:, :2])
    )
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    union = _area(boxes1) + _area(boxes2) - inter
    iou = _ratio_or(inter, union, 0.0)
    if mode == "iou":
        return iou
    enclose_wh = _clamp0(
        torch.maximum(boxes1[:, 2:], boxes2[:, 2:]) - torch.minimum(boxes1[:, :2], boxes2[:, :2])
    )
    enclose = enclose_wh[:, 0] * enclose_wh[:, 1]
    return iou - _ratio_or(enclose - union, enclose, 0.0)


def giou_loss(pred: Tensor, target: Tensor, weight=None, reduction: str = "sum") -> Tensor:
    """weight_i * (1 - GIoU(pred_i, target_i)), reduced; target is a constant."""
    loss = 1 - aligned_iou(pred, target.detach(), "giou")
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


# ---- ATSS assignment (METHODS.md §1.1, DynamicATSS §2.1) -----------------------------------

CENTER_INSIDE_EPS = 0.01


def atss_assign(
    anchors,
    num_anchors_per_level,
    gt_boxes,
    topk,
    pred_boxes=None,
    anchor_weight=1.0,
    pred_weight=1.0,
):
    """
    Dense ATSS assignment of one image (R anchors x M GTs matrices): the oracle of the compiled
    op, which gives the same result without those matrices. ``topk`` is the number of
    candidates per level and GT. See d2ext.layers.atss_assign for the rule.

    Returns:
        matched_idxs (R,) int64 (-1 = background), matched_scores (R,) and thresholds (M,) in the
        anchors' dtype (float32 for half / bfloat16 anchors, assigned in float32).
    """
    anchors, gt_boxes, pred_boxes = (_float32_if_half(t) for t in (anchors, gt_boxes, pred_boxes))
    num_anchors = anchors.shape[0]
    if sum(num_anchors_per_level) != num_anchors:
        raise ValueError(
            f"num_anchors_per_level {list(num_anchors_per_level)} does not sum to the {num_anchors} anchors given"
        )
    matched_idxs = anchors.new_full((num_anchors,), -1, dtype=torch.int64)
    matched_scores = anchors.new_zeros((num_anchors,))
    if gt_boxes.shape[0] == 0:
        return matched_idxs, matched_scores, anchors.new_zeros((0,))

    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2  # (R, 2)
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # (M, 2)
    sq_dists = (anchor_centers[:, None, :] - gt_centers[None, :, :]).pow(2).sum(-1)  # (R, M)
    candidates, start = [], 0
    for n in num_anchors_per_level:
        if n > 0:  # stable sort: distance ties go to the lower anchor index
            candidates.append(
                torch.sort(sq_dists[start : start + n], dim=0, stable=True).indices[: min(topk, n)]
                + start
            )
        start += n
    candidates = torch.cat(candidates)  # (C, M)

    # Statistics and scores in float64, in the order the kernel computes them.
    iou_anchor = pairwise_iou(anchors, gt_boxes).gather(0, candidates).double()  # (C, M)
    scores = anchor_weight * iou_anchor
    threshold = anchor_weight * (_mean(iou_anchor) + _unbiased_std(iou_anchor))
    if pred_boxes is not None:
        iou_pred = pairwise_iou(pred_boxes, gt_boxes).gather(0, candidates).double()
        scores = scores + pred_weight * iou_pred
        threshold = threshold + pred_weight * (_mean(iou_pred) + _unbiased_std(iou_pred))
    ltrb = torch.cat(
        [
            anchor_centers[candidates] - gt_boxes[None, :, :2],
            gt_boxes[None, :, 2:] - anchor_centers[candidates],
        ],
        -1,
    )
    is_pos = (scores >= threshold[None, :]) & (ltrb.min(dim=-1).values > CENTER_INSIDE_EPS)

    # Anchors claimed by several GTs: highest score wins, ties go to the lower GT index.
    pos_scores = torch.full(
        (num_anchors, gt_boxes.shape[0]), -1.0, dtype=torch.float64, device=anchors.device
    )
    pos_scores.scatter_(0, candidates, torch.where(is_pos, scores, -1.0))
    best_scores, best_gt = pos_scores.max(dim=1)
    is_matched = best_scores >= 0
    matched_idxs[is_matched] = best_gt[is_matched]
    matched_scores[is_matched] = best_scores[is_matched].to(anchors.dtype)
    return matched_idxs, matched_scores, threshold.to(anchors.dtype)


def _float32_if_half(t):
    """Boxes in float16 would be assigned silently wrong: an area above 65504 px^2 overflows, the
    IoUs become NaN and no anchor is positive. bfloat16 rounds coordinates to 8 bits."""
    if t is not None and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def _mean(x: Tensor) -> Tensor:
    return x.sum(0) / x.shape[0]


def _unbiased_std(x: Tensor) -> Tensor:
    """Two-pass unbiased std over dim 0 (NaN for one row, which then selects nothing)."""
    return ((x - _mean(x)) ** 2).sum(0).div(x.shape[0] - 1).sqrt()


# ---- AP-loss (METHODS.md §6.3) ----------------------------------------------------------------


def ap_loss(logits, labels, delta=1.0, interpolated=True, chunk=256):
    """
    AP-loss of the released code, O(P x N): every positive (anchor, class) entry against every
    positive and negative entry, in chunks of positives.

    Returns:
        loss (0-dim): 1 - mean (interpolated) precision; 0 without positives.
        grad (N, K): the error-driven update, d/ds_i = -(1 - p~_i) / P for positives and
        d/ds_j = sum_i L_ij / P for negatives, 0 elsewhere.
    """
    num_classes = logits.shape[1]
    flat = logits.reshape(-1).double()
    valid = labels >= 0
    pos_rows = torch.nonzero(valid & (labels < num_classes)).squeeze(1)
    pos_entries = pos_rows * num_classes + labels[pos_rows]
    neg_mask = valid[:, None].expand(-1, num_classes).reshape(-1).clone()
    neg_mask[pos_entries] = False
    neg_entries = torch.nonzero(neg_mask).squeeze(1)
    grad = torch.zeros_like(flat)
    if len(pos_entries) == 0:
        return logits.new_zeros(()), grad.view_as(logits).to(logits.dtype)
    s_pos, s_neg = flat[pos_entries], flat[neg_entries]

    def step(x):
        return ((x / (2 * delta)) + 0.5).clamp(0, 1)

    # Ascending score order of the positives (the interpolation visits them in it).
    order = torch.sort(s_pos, stable=True).indices
    s_pos, pos_entries = s_pos[order], pos_entries[order]
    chunks = range(0, len(s_pos), chunk)
    prec, rank = [], []
    for start in chunks:
        s = s_pos[start : start + chunk, None]
        r_plus = 1 + step(s_pos[None, :] - s).sum(1) - 0.5  # own H(0) = 1/2 removed
        r = r_plus + step(s_neg[None, :] - s).sum(1)
        prec.append(r_plus / r)
        rank.append(r)
    prec, rank = torch.cat(prec), torch.cat(rank)
    prec_tilde = torch.cummax(prec, 0).values if interpolated else prec
    rescale = torch.where(prec < prec_tilde, (1 - prec_tilde) / (1 - prec), torch.ones_like(prec))
    # Second pass over the (chunk, N) primary terms L_ij = H(s_j - s_i) * rescale_i / R_i, so that
    # memory stays O(chunk * N) as in the released loop.
    neg_grad = torch.zeros_like(s_neg)
    for start in chunks:
        weights = (rescale / rank)[start : start + chunk]
        neg_grad += (
            step(s_neg[None, :] - s_pos[start : start + chunk, None]) * weights[:, None]
        ).sum(0)
    num_pos = len(s_pos)
    grad[pos_entries] = -(1 - prec_tilde) / num_pos
    grad[neg_entries] = neg_grad / num_pos
    return (1 - prec_tilde.mean()).to(logits.dtype), grad.view_as(logits).to(logits.dtype)
