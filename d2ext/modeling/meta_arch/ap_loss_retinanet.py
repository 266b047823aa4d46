"""AP-loss RetinaNet: Chen et al., "Towards Accurate One-Stage Object Detection with AP-Loss",
CVPR 2019 (extended in TPAMI 2020, arXiv 2008.07294). Spec: METHODS.md §6.

Letters: N images, R anchors per image (all levels), K classes, P positive and Q negative
(anchor, class) entries in a ranking.
"""

import logging
from typing import Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import Tensor

from d2ext.layers import ap_loss
from d2ext.layers.precision import float32_region
from d2ext.modeling.input_checks import (
    check_dense_head_args,
    check_each,
    check_gt_classes,
    check_increasing,
    check_pixel_std,
    check_range,
    drop_degenerate_gt_boxes,
)
from d2ext.utils.comm import all_gather_rows, reduce_mean

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class APLossRetinaNet(RetinaNet):
    """
    Implement :paper:`AP-loss`: RetinaNet (head, anchors, IoU matching and inference of
    Detectron2's) whose classification loss is the AP-loss over all (anchor, class) entries,
    trained by the paper's error-driven update (d2ext.layers.ap_loss), and whose box loss is
    smooth-L1 averaged over the 4 * N_pos coordinates.
    """

    @configurable
    def __init__(
        self,
        *,
        delta: float = 1.0,
        interpolated: bool = True,
        ranking_images: int = 0,
        smooth_l1_beta: float = 1.0,
        **kwargs,
    ):
        """
        Args:
            delta (float): half-width of the linear part of the step function (δ, §6.3).
            interpolated (bool): interpolated AP, as the released code.
            ranking_images (int): images ranked together, consecutive in the global batch
                (process 0's images first). 0: this process' whole minibatch, whatever its size.
                k >= 1: groups of k images, the loss being the mean over the groups; groups
                larger than a process' minibatch span consecutive processes (all-gather).
                1 is per-image ranking, the global batch size one global ranking. The released
                code ranks 8 images (one GPU of 2 x 8, METHODS.md Errata 7).
            smooth_l1_beta (float): β of the smooth-L1 box loss.
            kwargs: the arguments of :class:`RetinaNet` (except the focal-loss and
                box-loss-type ones, which AP-loss does not use).
        """
        check_pixel_std(kwargs["pixel_std"], "MODEL.PIXEL_STD (model.pixel_std)")
        if delta <= 0:
            raise ValueError(f"MODEL.AP_LOSS.DELTA must be > 0, got {delta}")
        if ranking_images < 0:
            raise ValueError(f"MODEL.AP_LOSS.RANKING_IMAGES must be >= 0, got {ranking_images}")
        check_range("MODEL.AP_LOSS.SMOOTH_L1_BETA (model.smooth_l1_beta)", smooth_l1_beta, 0)
        check_range(
            "MODEL.RETINANET.NUM_CLASSES (model.num_classes)",
            kwargs["num_classes"],
            1,
            integer=True,
        )
        check_range(
            "MODEL.AP_LOSS.SCORE_THRESH_TEST (model.test_score_thresh)",
            kwargs.get("test_score_thresh", 0.05),
            0,
            1,
            high_open=True,
        )
        check_range(
            "MODEL.AP_LOSS.NMS_THRESH_TEST (model.test_nms_thresh)",
            kwargs.get("test_nms_thresh", 0.5),
            0,
            1,
        )
        check_range(
            "MODEL.RETINANET.TOPK_CANDIDATES_TEST (model.test_topk_candidates)",
            kwargs.get("test_topk_candidates", 1000),
            1,
            integer=True,
        )
        weights = getattr(kwargs.get("box2box_transform"), "weights", None)
        if weights is not None:  # deltas are multiplied by them: 0 gives NaN boxes
            check_each(
                "MODEL.AP_LOSS.BBOX_REG_WEIGHTS (model.box2box_transform.weights)",
                weights,
                4,
                low=0,
                low_open=True,
            )
        super().__init__(smooth_l1_beta=smooth_l1_beta, box_reg_loss_type="smooth_l1", **kwargs)
        self.delta = delta
        self.interpolated = interpolated
        self.ranking_images = ranking_images
        # Warns while training collapses or a loss explodes (issue 31), before Detectron2's final
        # FloatingPointError. Imported here: d2ext.engine imports d2ext.modeling.
        from d2ext.engine.collapse_guard import TrainingGuard

        norm_head = any("Norm" in type(m).__name__ for m in self.head.modules())
        self.guard = TrainingGuard(prefix="APLossRetinaNet", norm_head_hint=not norm_head)

    @classmethod
    def from_config(cls, cfg):
        # Before RetinaNet.from_config builds the head and the matcher (NUM_CLASSES 0: a conv
        # weight error; PRIOR_PROB 0: ZeroDivisionError; thresholds out of order: a bare
        # AssertionError in Matcher).
        check_dense_head_args(
            "MODEL.RETINANET",
            cfg.MODEL.RETINANET.NUM_CLASSES,
            cfg.MODEL.RETINANET.NUM_CONVS,
            cfg.MODEL.RETINANET.PRIOR_PROB,
        )
        thresholds = list(cfg.MODEL.AP_LOSS.IOU_THRESHOLDS)
        check_increasing("MODEL.AP_LOSS.IOU_THRESHOLDS", thresholds, 0, 1)
        if len(thresholds) != 2:
            raise ValueError(
                f"MODEL.AP_LOSS.IOU_THRESHOLDS must be 2 values (negative below, positive from), got {thresholds}"
            )
        check_each(
            "MODEL.AP_LOSS.BBOX_REG_WEIGHTS",
            cfg.MODEL.AP_LOSS.BBOX_REG_WEIGHTS,
            4,
            low=0,
            low_open=True,
        )
        ret = super().from_config(cfg)
        for key in ("focal_loss_alpha", "focal_loss_gamma", "box_reg_loss_type"):
            del ret[key]
        _C = cfg.MODEL.AP_LOSS
        ret.update(
            {
                "anchor_matcher": Matcher(
                    _C.IOU_THRESHOLDS,
                    [0, -1, 1],
                    allow_low_quality_matches=_C.ALLOW_LOW_QUALITY_MATCHES,
                ),
                "box2box_transform": Box2BoxTransform(weights=_C.BBOX_REG_WEIGHTS),
                "smooth_l1_beta": _C.SMOOTH_L1_BETA,
                "test_score_thresh": _C.SCORE_THRESH_TEST,
                "test_nms_thresh": _C.NMS_THRESH_TEST,
                "delta": _C.DELTA,
                "interpolated": _C.INTERPOLATED,
                "ranking_images": _C.RANKING_IMAGES,
            }
        )
        return ret

    def forward_training(self, images, features, predictions, gt_instances):
        check_gt_classes(
            gt_instances, self.num_classes, "MODEL.RETINANET.NUM_CLASSES (model.num_classes)"
        )
        # IoU matching with low-quality matches would make every anchor a positive of a
        # zero-width GT (IoU 0 ties) with log(0) targets: such boxes are dropped (the ATSS family
        # never assigns them).
        gt_instances = drop_degenerate_gt_boxes(gt_instances, "APLossRetinaNet")
        return super().forward_training(images, features, predictions, gt_instances)

    # Under AMP the AP-loss ranking and box regression run in float32 on float32 head outputs.
    @float32_region("pred_logits", "pred_anchor_deltas")
    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """
        Args:
            anchors (list[Boxes]): one per level.
            pred_logits, pred_anchor_deltas (list[Tensor]): per level, (N, R_l, K) and (N, R_l, 4).
            gt_labels, gt_boxes: from :meth:`RetinaNet.label_anchors` (-1 ignored, K background).

        Returns:
            dict[str, Tensor]: loss_cls (1 - AP of the ranking), loss_box_reg.
        """
        gt_labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos = pos_mask.sum()
        storage = get_event_storage()
        storage.put_scalar("num_pos_anchors", num_pos.item() / len(gt_labels))

        loss_cls = self.ranking_loss(cat(pred_logits, dim=1), gt_labels)

        # Smooth-L1 summed over the positives' coordinates, divided by 4 * N_pos with N_pos the
        # batch's positives over all workers / world size: the gradient of the reference (§6.4).
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type="smooth_l1",
            smooth_l1_beta=self.smooth_l1_beta,
        )
        normalizer = 4 * reduce_mean(num_pos.float()).clamp(min=1.0).item()
        losses = {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg / normalizer}
        self._feed_guard(storage, losses)
        return losses

    @torch.no_grad()
    def _feed_guard(self, storage, losses) -> None:
        """This iteration's losses and ranking statistics (ap_loss/*) to :attr:`guard`."""
        if self.guard is None:
            return
        values = {
            k: v
            for k, (v, it) in storage.latest().items()
            if k.startswith("ap_loss/") and it == storage.iter
        }
        values.update({k: v.item() for k, v in losses.items()})
        self.guard.update(storage.iter, values)

    def ranking_loss(self, logits: Tensor, gt_labels: Tensor) -> Tensor:
        """
        AP-loss of the (anchor, class) entries, ranked in groups of ``ranking_images`` images,
        and its statistics logged to the event storage.

        Args:
            logits: (N, R, K) raw classification scores of this process.
            gt_labels: (N, R) anchor labels, -1 ignored, K background.

        Returns:
            0-dim tensor 1 - AP (mean over the groups) whose gradient, with respect to this
            process' logits, is the error-driven update of the configured ranking (§6.3 step 5).
        """
        num_images = logits.shape[0]
        logits, labels = logits.flatten(0, 1), gt_labels.flatten()  # (N*R, K), (N*R,)
        group, processes_per_group = self._ranking_group(num_images)
        rows_per_group = None
        if group < num_images:  # several rankings in this process
            rows_per_group = [len(labels) // num_images * group] * (num_images // group)
        if processes_per_group > 1:
            logits, labels = _gather_group(logits, labels, processes_per_group)
        loss = ap_loss(logits, labels, self.delta, self.interpolated, rows_per_group)
        self._log_ranking(loss, logits, labels, rows_per_group)
        if processes_per_group > 1:
            # DDP averages the gradients of the W processes; the processes of a group each hold
            # the group's update of their own entries, so the average is sum_g grad_g / W where
            # the mean over the W / m groups is wanted: scale by m. The value stays 1 - AP.
            loss = loss + (processes_per_group - 1) * (loss - loss.detach())
        return loss

    def _ranking_group(self, num_images: int) -> Tuple[int, int]:
        """(images per ranking, processes per ranking) for `num_images` images per process."""
        group = self.ranking_images or num_images
        world_size = comm.get_world_size()
        if group <= num_images:
            if num_images % group == 0:
                return group, 1
        elif group % num_images == 0 and world_size % (group // num_images) == 0:
            return group, group // num_images
        raise ValueError(
            f"MODEL.AP_LOSS.RANKING_IMAGES={group} cannot group the {num_images} images per "
            f"process x {world_size} processes: it must divide the images per process, or be a "
            "multiple of them that divides the total"
        )

    @torch.no_grad()
    def _log_ranking(self, loss, logits, labels, rows_per_group) -> None:
        """Logs the interpolated AP of the ranking(s) and the ranked entry counts."""
        if rows_per_group is None:
            rows_per_group = [len(labels)]
        num_pos, num_neg, num_active = 0, 0, 0
        for x, y in zip(logits.split(rows_per_group), labels.split(rows_per_group)):
            p, q, a = ranking_counts(x, y, self.delta)
            num_pos, num_neg, num_active = num_pos + p, num_neg + q, num_active + a
        storage = get_event_storage()
        storage.put_scalar("ap_loss/num_pos", num_pos)
        storage.put_scalar("ap_loss/num_neg", num_neg)
        storage.put_scalar("ap_loss/num_active_neg", num_active)
        # The scores' spread: the AP-loss is blind to their scale, so a runaway shows here first
        # (the guard watches it, d2ext/engine/collapse_guard.py).
        spread = logits.float().std().item() if logits.numel() > 1 else 0.0
        storage.put_scalar("ap_loss/logit_std", spread)
        if num_pos == 0:
            return
        if not self.interpolated:
            loss = ap_loss(logits.detach(), labels, self.delta, True, rows_per_group)
        storage.put_scalar("ap_loss/interpolated_ap", 1.0 - loss.item())


def _gather_group(
    logits: Tensor, labels: Tensor, processes_per_group: int
) -> Tuple[Tensor, Tensor]:
    """
    The entries of this worker's group of `processes_per_group` consecutive ranks, in rank
    order, this worker's logits keeping their gradient. Gathers from every worker (one
    collective, no sub-groups to create); only the group's rows are kept.
    """
    all_logits = all_gather_rows(logits)
    all_labels = all_gather_rows(labels)
    rank = comm.get_rank()
    all_logits[rank] = logits
    first = rank - rank % processes_per_group
    members = slice(first, first + processes_per_group)
    return cat(all_logits[members]), cat(all_labels[members])


@torch.no_grad()
def ranking_counts(logits: Tensor, labels: Tensor, delta: float) -> Tuple[int, int, int]:
    """
    Entries of one ranking: (P positives, Q negatives, negatives within delta of the lowest
    positive, the only ones an update reaches (§6.3 step 2)).

    Args:
        logits: (M, K); labels: (M,) with -1 ignored and K background.
    """
    num_classes = logits.shape[1]
    valid = labels >= 0
    pos_rows = torch.nonzero(valid & (labels < num_classes)).squeeze(1)
    num_pos = len(pos_rows)
    num_neg = int(valid.sum().item()) * num_classes - num_pos
    if num_pos == 0:
        return 0, num_neg, 0
    lowest = logits[pos_rows, labels[pos_rows]].min()
    # Every positive is >= lowest: count all valid entries above the bar, minus the positives.
    num_active = int((logits[valid] >= lowest - delta).sum().item()) - num_pos
    return num_pos, num_neg, num_active
