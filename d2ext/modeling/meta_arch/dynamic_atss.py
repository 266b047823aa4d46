"""DynamicATSS: Zhang et al., "Dynamic Label Assignment for Object Detection by Combining
Predicted IoUs and Anchor IoUs", J. Imaging 2022 (arXiv 2201.09396). Spec: METHODS.md §2.

ATSS whose assignment ranks candidates by the combined IoU of the anchor and of the current
(detached) predicted box with the GT, whose classifier learns the predicted box's IoU (QFL or
VFL) and whose third branch predicts that IoU instead of centerness.

Letters: N images, R anchors per image (all levels), M ground truths, P positives, K classes.
"""

from typing import List

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor
from torch.nn import functional as F

from d2ext.layers import aligned_iou, giou_loss, quality_focal_loss, varifocal_loss
from d2ext.layers.precision import float32_region
from d2ext.modeling.assigners import atss_assign
from d2ext.modeling.input_checks import check_range

from .atss import ATSS, ATSSHead
from .atss_base import dense_head_args, positives_sum

CLS_LOSSES = ("QFL", "VFL")
CIOU_SCHEDULES = ("constant", "up", "down")


def scheduled_pred_weight(schedule: str, weight: float, iteration: int, num_iters: int) -> float:
    """
    Weight of the predicted-box IoU in the combined IoU at `iteration`: constant (the method,
    as released), or, as d2ext ablations (METHODS.md Errata 10), rising from 0 ("up") /
    falling to 0 ("down") linearly over num_iters iterations, then constant.
    """
    progress = min(max(iteration, 0) / max(num_iters, 1), 1.0)
    if schedule == "constant":
        return weight
    if schedule == "up":
        return weight * progress
    if schedule == "down":
        return weight * (1.0 - progress)
    raise ValueError(
        f"MODEL.DYNAMIC_ATSS.CIOU_SCHEDULE must be one of {CIOU_SCHEDULES}, got {schedule!r}"
    )


@META_ARCH_REGISTRY.register()
class DynamicATSS(ATSS):
    """
    Implement DynamicATSS (METHODS.md §2): combined anchor + predicted IoU assignment, QFL (or
    VFL) on the predicted IoU, an IoU branch, IoU-weighted GIoU. Inference as ATSS with the IoU
    branch in place of centerness: sqrt(sigmoid(cls) * sigmoid(iou)).
    """

    config_node = "DYNAMIC_ATSS"

    @configurable
    def __init__(
        self,
        *,
        ciou_anchor_weight=1.0,
        ciou_pred_weight=1.0,
        ciou_schedule="constant",
        ciou_schedule_iters=90000,
        cls_loss="QFL",
        qfl_beta=2.0,
        vfl_alpha=0.75,
        vfl_gamma=2.0,
        reg_loss_weight=2.0,
        iou_loss_weight=1.0,
        **kwargs,
    ):
        """
        Args:
            ciou_*, cls_loss, qfl_beta, vfl_*, reg_loss_weight, iou_loss_weight: as the
                MODEL.DYNAMIC_ATSS keys of the same name (d2ext/config/dynamic_atss.py);
                ciou_schedule_iters is the schedule's length in iterations.
            kwargs: see :class:`ATSSBase`.
        """
        super().__init__(reg_loss_weight=reg_loss_weight, **kwargs)
        if cls_loss not in CLS_LOSSES:
            raise ValueError(
                f"MODEL.DYNAMIC_ATSS.CLS_LOSS must be one of {CLS_LOSSES}, got {cls_loss!r}"
            )
        scheduled_pred_weight(ciou_schedule, 1.0, 0, 1)  # raises now on a bad schedule name
        for key, value in (
            ("CIOU_ANCHOR_WEIGHT", ciou_anchor_weight),
            ("CIOU_PRED_WEIGHT", ciou_pred_weight),
            ("QFL_BETA", qfl_beta),
            ("VFL_ALPHA", vfl_alpha),
            ("VFL_GAMMA", vfl_gamma),
            ("IOU_LOSS_WEIGHT", iou_loss_weight),
        ):
            check_range(f"MODEL.DYNAMIC_ATSS.{key} (model.{key.lower()})", value, 0)
        check_range(
            "MODEL.DYNAMIC_ATSS.CIOU_SCHEDULE_ITERS (model.ciou_schedule_iters)",
            ciou_schedule_iters,
            0,
            integer=True,
        )
        self.ciou_anchor_weight = ciou_anchor_weight
        self.ciou_pred_weight = ciou_pred_weight
        self.ciou_schedule = ciou_schedule
        self.ciou_schedule_iters = ciou_schedule_iters
        self.cls_loss = cls_loss
        self.qfl_beta = qfl_beta
        self.vfl_alpha = vfl_alpha
        self.vfl_gamma = vfl_gamma
        self.iou_loss_weight = iou_loss_weight

    @classmethod
    def from_config(cls, cfg):
        args, feature_shapes = cls.base_config(cfg)
        node = cfg.MODEL.DYNAMIC_ATSS
        args.update(
            head=ATSSHead(**dense_head_args(cfg, "DYNAMIC_ATSS", feature_shapes)),
            box2box_transform=Box2BoxTransform(weights=node.BBOX_REG_WEIGHTS),
            ciou_anchor_weight=node.CIOU_ANCHOR_WEIGHT,
            ciou_pred_weight=node.CIOU_PRED_WEIGHT,
            ciou_schedule=node.CIOU_SCHEDULE,
            ciou_schedule_iters=node.CIOU_SCHEDULE_ITERS or cfg.SOLVER.MAX_ITER,
            cls_loss=node.CLS_LOSS,
            qfl_beta=node.QFL_BETA,
            vfl_alpha=node.VFL_ALPHA,
            vfl_gamma=node.VFL_GAMMA,
            reg_loss_weight=node.REG_LOSS_WEIGHT,
            iou_loss_weight=node.IOU_LOSS_WEIGHT,
        )
        return args

    def current_pred_weight(self) -> float:
        """The predicted-IoU weight at the event storage's current iteration."""
        iteration = get_event_storage().iter
        return scheduled_pred_weight(
            self.ciou_schedule, self.ciou_pred_weight, iteration, self.ciou_schedule_iters
        )

    # Head outputs in float32, autocast off: assignment, decoding and losses stay float32 under AMP.
    @float32_region("predictions")
    def forward_training(self, images, features, predictions, gt_instances):
        self.check_gt_classes(gt_instances)
        pred_logits, pred_deltas, pred_iou = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        pred_boxes = self.decode_boxes(anchors, pred_deltas)  # (N, R, 4)
        gt_labels, gt_boxes = self.label_anchors_dynamic(anchors, pred_boxes.detach(), gt_instances)
        return self.losses(pred_logits, pred_boxes, pred_iou, gt_labels, gt_boxes)

    def decode_boxes(self, anchors: List[Boxes], pred_deltas: List[Tensor]) -> Tensor:
        """(N, R, 4) predicted boxes of all anchors."""
        deltas = cat(pred_deltas, dim=1)
        anchors = Boxes.cat(anchors).tensor
        return self.box2box_transform.apply_deltas(
            deltas.flatten(0, 1), anchors.repeat(len(deltas), 1)
        ).view(deltas.shape)

    @torch.no_grad()
    def label_anchors_dynamic(
        self, anchors: List[Boxes], pred_boxes: Tensor, gt_instances: List[Instances]
    ):
        """
        Combined-IoU ATSS assignment of every image (METHODS.md §2.1), logging how it differs
        from plain ATSS.

        Returns:
            gt_labels, matched_gt_boxes: as :meth:`ATSSBase.label_anchors`.
        """
        num_anchors_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors).tensor
        pred_weight = self.current_pred_weight()
        gt_labels, matched_gt_boxes = [], []
        num_gt = num_pos = num_new = 0
        thresholds = []
        for gt_per_image, pred_per_image in zip(gt_instances, pred_boxes):
            gt = gt_per_image.gt_boxes.tensor
            matched_idxs, _, gt_thresholds = atss_assign(
                anchors,
                num_anchors_per_level,
                gt,
                self.topk,
                pred_boxes=pred_per_image,
                anchor_weight=self.ciou_anchor_weight,
                pred_weight=pred_weight,
            )
            atss_idxs, _, _ = atss_assign(anchors, num_anchors_per_level, gt, self.topk)
            positive = matched_idxs >= 0
            num_gt += len(gt)
            num_pos += int(positive.sum())
            num_new += int((positive & (atss_idxs != matched_idxs)).sum())
            thresholds.append(gt_thresholds)
            labels, boxes = self.matched_targets(matched_idxs, gt_per_image, anchors)
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)

        storage = get_event_storage()
        storage.put_scalar("dynamic_atss/pred_iou_weight", pred_weight)
        if num_gt > 0:
            storage.put_scalar("dynamic_atss/positives_per_gt", num_pos / num_gt)
            storage.put_scalar(
                "dynamic_atss/mean_threshold", torch.cat(thresholds).nanmean().item()
            )
        if num_pos > 0:
            # Positives plain ATSS would not have given to the same GT: how dynamic it is.
            storage.put_scalar("dynamic_atss/changed_positive_fraction", num_new / num_pos)
        return gt_labels, matched_gt_boxes

    def losses(self, pred_logits, pred_boxes, pred_iou, gt_labels, gt_boxes):
        """
        Args:
            pred_logits, pred_iou (list[Tensor]): per level, (N, R_l, K) and (N, R_l, 1).
            pred_boxes (Tensor): (N, R, 4) decoded predictions.
            gt_labels, gt_boxes: from :meth:`label_anchors_dynamic`.

        Returns:
            dict[str, Tensor]: loss_cls, loss_box_reg, loss_iou.
        """
        gt_labels, pos_mask, normalizer = self.positives(gt_labels)

        logits = cat(pred_logits, dim=1).flatten(0, 1)  # (N * R, K)
        pos_boxes = pred_boxes[pos_mask]  # (P, 4)
        pos_gt = torch.stack(gt_boxes)[pos_mask]
        # Soft target of a positive: its predicted box's IoU with its GT (detached).
        quality = aligned_iou(pos_boxes.detach(), pos_gt)  # (P,)
        scores = torch.zeros(gt_labels.shape, dtype=logits.dtype, device=logits.device)
        scores[pos_mask] = quality.to(logits.dtype)
        scores = scores.flatten()

        if self.cls_loss == "QFL":
            loss_cls = quality_focal_loss(
                logits, gt_labels.flatten(), scores, beta=self.qfl_beta, reduction="sum"
            )
        else:
            loss_cls = varifocal_loss(
                logits,
                gt_labels.flatten(),
                scores,
                alpha=self.vfl_alpha,
                gamma=self.vfl_gamma,
                iou_weighted=True,
                reduction="sum",
            )
        loss_iou = F.binary_cross_entropy_with_logits(
            cat(pred_iou, dim=1)[pos_mask][:, 0], quality, reduction="sum"
        )
        # GIoU of each positive weighted by its IoU target, normalised by the targets' sum.
        loss_box_reg = giou_loss(pos_boxes, pos_gt, weight=quality, reduction="sum")
        return {
            "loss_cls": loss_cls / normalizer,
            "loss_box_reg": self.reg_loss_weight * loss_box_reg / positives_sum(quality, 1e-6),
            "loss_iou": self.iou_loss_weight * loss_iou / normalizer,
        }
