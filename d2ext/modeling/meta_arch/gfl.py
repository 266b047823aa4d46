"""GFL: Li et al., "Generalized Focal Loss: Learning Qualified and Distributed Bounding Boxes for
Dense Object Detection", NeurIPS 2020, and GFL v2 (Li et al., "Generalized Focal Loss V2:
Learning Reliable Localization Quality Estimation for Dense Object Detection", CVPR 2021).
Spec: METHODS.md §3.

Letters: N images, R anchors per image (all levels), P positives, K classes, n = reg_max.
"""

from typing import List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import Box2BoxTransformLinear
from detectron2.structures import Boxes
from torch import Tensor

from d2ext.layers import (
    aligned_iou,
    distribution_focal_loss,
    giou_loss,
    logit_of_product,
    quality_focal_loss,
)
from d2ext.layers.precision import float32_region
from d2ext.modeling.input_checks import check_range

from .atss_base import ATSSBase, positives_sum
from .gfl_head import GFLHead, integral

# Floor of the localisation normaliser W when LOC_WEIGHT_SUM_MIN is 0: without positives the
# loss sums are 0 and 0 / 1e-6 is 0, where the GFocal repos divide 0 by 0.
MIN_WEIGHT_SUM = 1e-6


@META_ARCH_REGISTRY.register()
class GFL(ATSSBase):
    """
    Implement GFL (METHODS.md §3): ATSS assignment; the classifier learns the joint class-IoU
    score with the quality focal loss; box sides are distributions (distribution focal loss)
    whose means give the box (GIoU loss). With the head's DGQP (GFL v2) the score is
    sigmoid(cls) * sigmoid(quality) and QFL runs on that product.

    The box coding is ltrb distances in pixels from the anchor centre
    (``Box2BoxTransformLinear(normalize_by_size=False)``); the head's distributions are in
    strides and are scaled by each level's stride.
    """

    config_node = "GFL"

    @configurable
    def __init__(
        self,
        *,
        qfl_beta=2.0,
        loss_cls_weight=1.0,
        loss_dfl_weight=0.25,
        loss_box_weight=2.0,
        dfl_target_eps=0.1,
        loc_weight_sum_min=0.0,
        quality_iou_plus_one=False,
        **kwargs,
    ):
        """
        Args:
            qfl_beta, loss_*_weight, dfl_target_eps, loc_weight_sum_min, quality_iou_plus_one:
                as the MODEL.GFL keys of the same name (d2ext/config/gfl.py).
            kwargs: see :class:`ATSSBase`; the head is a :class:`GFLHead`.
        """
        super().__init__(**kwargs)
        self.reg_max = self.head.reg_max
        for key, value in (
            ("QFL_BETA", qfl_beta),
            ("LOSS_CLS_WEIGHT", loss_cls_weight),
            ("LOSS_DFL_WEIGHT", loss_dfl_weight),
            ("LOSS_BOX_WEIGHT", loss_box_weight),
        ):
            check_range(f"MODEL.GFL.{key} (model.{key.lower()})", value, 0)
        self.qfl_beta = qfl_beta
        self.loss_cls_weight = loss_cls_weight
        self.loss_dfl_weight = loss_dfl_weight
        self.loss_box_weight = loss_box_weight
        if not 0 < dfl_target_eps < 1:
            raise ValueError(f"MODEL.GFL.DFL_TARGET_EPS must be in (0, 1), got {dfl_target_eps}")
        self.dfl_target_eps = dfl_target_eps
        if not loc_weight_sum_min >= 0:
            raise ValueError(f"MODEL.GFL.LOC_WEIGHT_SUM_MIN must be >= 0, got {loc_weight_sum_min}")
        self.loc_weight_sum_min = loc_weight_sum_min
        self.quality_iou_plus_one = quality_iou_plus_one

    @classmethod
    def from_config(cls, cfg):
        args, feature_shapes = cls.base_config(cfg)
        node = cfg.MODEL.GFL
        args.update(
            head=GFLHead(cfg, feature_shapes),
            box2box_transform=Box2BoxTransformLinear(normalize_by_size=False),
            qfl_beta=node.QFL_BETA,
            loss_cls_weight=node.LOSS_CLS_WEIGHT,
            loss_dfl_weight=node.LOSS_DFL_WEIGHT,
            loss_box_weight=node.LOSS_BOX_WEIGHT,
            dfl_target_eps=node.DFL_TARGET_EPS,
            loc_weight_sum_min=node.LOC_WEIGHT_SUM_MIN,
            quality_iou_plus_one=node.QUALITY_IOU_PLUS_ONE,
        )
        return args

    @property
    def uses_dgqp(self) -> bool:
        return self.head.dgqp is not None

    def split_predictions(self, predictions):
        """Per level (N, R_l, K) score logits (GFL v2: logit of cls x quality) and
        (N, R_l, 4 * (n + 1)) distribution logits."""
        bins = 4 * (self.reg_max + 1)
        if self.uses_dgqp:
            logits, dists, quality = self._transpose_dense_predictions(
                predictions, [self.num_classes, bins, 1]
            )
            return [logit_of_product(c, q) for c, q in zip(logits, quality)], dists
        return self._transpose_dense_predictions(predictions, [self.num_classes, bins])

    # Head outputs in float32, autocast off: assignment, decoding and losses stay float32 under AMP.
    @float32_region("predictions")
    def forward_training(self, images, features, predictions, gt_instances):
        self.check_gt_classes(gt_instances)
        score_logits, distributions = self.split_predictions(predictions)
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, score_logits, distributions, gt_labels, gt_boxes)

    def losses(self, anchors: List[Boxes], score_logits, distributions, gt_labels, gt_boxes):
        """
        Args:
            anchors (list[Boxes]): one per level.
            score_logits, distributions (list[Tensor]): per level, (N, R_l, K) and
                (N, R_l, 4 * (n + 1)).
            gt_labels, gt_boxes: from :meth:`label_anchors`.

        Returns:
            dict[str, Tensor]: loss_cls (QFL), loss_box_reg (GIoU), loss_dfl.
        """
        gt_labels, pos_mask, normalizer = self.positives(gt_labels)

        num_images = len(gt_labels)
        strides = self.anchor_strides(anchors).expand(num_images, -1)[pos_mask]  # (P,)
        pos_anchors = Boxes.cat(anchors).tensor.expand(num_images, -1, -1)[pos_mask]  # (P, 4)
        pos_gt = torch.stack(gt_boxes)[pos_mask]
        pos_dist = cat(distributions, dim=1)[pos_mask]  # (P, 4 * (n + 1))
        logits = cat(score_logits, dim=1)

        pred_boxes = self.box2box_transform.apply_deltas(
            integral(pos_dist) * strides[:, None], pos_anchors
        )
        quality = self.quality_targets(pred_boxes.detach(), pos_gt, strides)
        scores = torch.zeros(gt_labels.shape, dtype=logits.dtype, device=logits.device)
        scores[pos_mask] = quality.to(logits.dtype)
        loss_cls = quality_focal_loss(
            logits.flatten(0, 1),
            gt_labels.flatten(),
            scores.flatten(),
            beta=self.qfl_beta,
            reduction="sum",
        )

        # Localisation terms: each positive weighted by its detached best class score, both
        # normalised by the weights' sum over workers (clamped as loc_weight_sum_min says).
        weight = logits[pos_mask].detach().sigmoid().max(dim=1).values  # (P,)
        weight_sum = positives_sum(weight, max(self.loc_weight_sum_min, MIN_WEIGHT_SUM))
        loss_box = giou_loss(pred_boxes, pos_gt, weight=weight, reduction="sum")
        loss_dfl = distribution_focal_loss(
            pos_dist.reshape(-1, self.reg_max + 1),
            self.dfl_targets(pos_anchors, pos_gt, strides).flatten(),
            weight=weight.repeat_interleave(4),
            reduction="sum",
        )
        return {
            "loss_cls": self.loss_cls_weight * loss_cls / normalizer,
            "loss_box_reg": self.loss_box_weight * loss_box / weight_sum,
            "loss_dfl": self.loss_dfl_weight * loss_dfl / 4 / weight_sum,
        }

    def quality_targets(self, pred_boxes: Tensor, gt_boxes: Tensor, strides: Tensor) -> Tensor:
        """(P,) QFL's soft target: the IoU of each detached predicted box with its GT. With
        quality_iou_plus_one, GFL v1's legacy IoU whose widths and heights are one stride
        larger (x2 - x1 + 1 in stride units), which equals the IoU of both boxes with x2, y2
        moved out by a stride."""
        if self.quality_iou_plus_one:
            grow = torch.zeros_like(pred_boxes)
            grow[:, 2:] = strides[:, None]
            pred_boxes, gt_boxes = pred_boxes + grow, gt_boxes + grow
        return aligned_iou(pred_boxes, gt_boxes)

    def dfl_targets(self, anchors: Tensor, gt_boxes: Tensor, strides: Tensor) -> Tensor:
        """(P, 4) ltrb distances of each anchor centre to its GT in strides, clamped to
        [0, n - eps] so the upper of the two bins around the target exists."""
        ltrb = self.box2box_transform.get_deltas(anchors, gt_boxes) / strides[:, None]
        return ltrb.clamp(min=0, max=self.reg_max - self.dfl_target_eps)

    def inference_scores_and_deltas(
        self, anchors: List[Boxes], predictions: List[List[Tensor]]
    ) -> Tuple[List[Tensor], List[Tensor], Optional[List[Tensor]]]:
        bins = 4 * (self.reg_max + 1)
        if self.uses_dgqp:
            # GFL v2's score sigmoid(cls) * sigmoid(quality) as the plain product: the same value
            # (up to rounding) as sigmoid(logit_of_product), whose expm1 ONNX has no operator for.
            logits, distributions, quality = self._transpose_dense_predictions(
                predictions, [self.num_classes, bins, 1]
            )
            probs = [c.sigmoid() * q.sigmoid() for c, q in zip(logits, quality)]
        else:
            logits, distributions = self._transpose_dense_predictions(
                predictions, [self.num_classes, bins]
            )
            probs = [c.sigmoid() for c in logits]
        scores = []
        for prob in probs:
            scores.append(torch.where(prob > self.test_score_thresh, prob, 0.0))
        deltas = [
            integral(dist) * stride
            for dist, stride in zip(distributions, self.anchor_generator.strides)
        ]
        return scores, deltas, None
