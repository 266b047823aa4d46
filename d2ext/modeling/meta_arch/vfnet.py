"""VFNet: Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021
(arXiv 2008.13367). Spec: METHODS.md §4.

Letters: N images, R points (= anchor centres) per image (all levels), P positives, K classes.
"""

from typing import List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import Box2BoxTransformLinear
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage
from torch import Tensor

from d2ext.layers import aligned_iou, giou_loss, varifocal_loss
from d2ext.layers.precision import float32_region
from d2ext.modeling.assigners import fcos_assign, level_ranges
from d2ext.modeling.assigners.fcos import DEFAULT_SIZE_BOUNDS
from d2ext.modeling.input_checks import check_range

from .atss_base import ATSSBase, positives_sum
from .vfnet_head import VFNetHead

# Lower bound of the detached IoUs used as VFL targets and box-loss weights (official code).
MIN_IOU = 1e-6


@META_ARCH_REGISTRY.register()
class VFNet(ATSSBase):
    """
    Implement VFNet (METHODS.md §4): ATSS assignment on one 8 x stride anchor per location whose
    centres are the points; an initial box and a star-feature refinement of it; the IoU-aware
    classification score (IACS) trained with the varifocal loss to the refined box's IoU; GIoU
    losses on both boxes weighted by their own IoUs. Inference ranks the refined boxes by
    sigmoid(IACS).

    The box coding is ltrb distances in pixels from the anchor centre
    (``Box2BoxTransformLinear(normalize_by_size=False)``). The official FPN's "ReLU before extra
    convs" on the FPN output (P6 = conv(P5), P7 = conv(relu(P6))) is MODEL.FPN.RELU_BEFORE_P6
    False, RELU_BEFORE_P7 True (Base-VFNet.yaml).
    With ``use_atss=False`` the points are assigned as FCOS does instead (the official option).
    """

    config_node = "VFNET"

    @configurable
    def __init__(
        self,
        *,
        vfl_alpha=0.75,
        vfl_gamma=2.0,
        vfl_iou_weighted=True,
        loss_box_init_weight=1.5,
        loss_box_refine_weight=2.0,
        use_atss=True,
        fcos_size_bounds=DEFAULT_SIZE_BOUNDS,
        **kwargs,
    ):
        """
        Args:
            vfl_*, loss_box_*_weight, use_atss, fcos_size_bounds: as the MODEL.VFNET keys of
                the same name (d2ext/config/vfnet.py).
            kwargs: see :class:`ATSSBase`; the head is a :class:`VFNetHead`.
        """
        super().__init__(**kwargs)
        num_levels = len(self.anchor_generator.strides)
        bounds = [float(b) for b in fcos_size_bounds]
        if len(bounds) != num_levels - 1 or bounds != sorted(bounds):
            raise ValueError(
                f"MODEL.VFNET.FCOS_SIZE_BOUNDS (fcos_size_bounds) must be {num_levels - 1} increasing "
                f"bounds, one between each two of the {num_levels} levels, got {list(fcos_size_bounds)}"
            )
        for key, value in (
            ("VFL_ALPHA", vfl_alpha),
            ("VFL_GAMMA", vfl_gamma),
            ("LOSS_BOX_INIT_WEIGHT", loss_box_init_weight),
            ("LOSS_BOX_REFINE_WEIGHT", loss_box_refine_weight),
        ):
            check_range(f"MODEL.VFNET.{key} (model.{key.lower()})", value, 0)
        self.use_atss = use_atss
        self.fcos_size_bounds = tuple(bounds)
        self.vfl_alpha = vfl_alpha
        self.vfl_gamma = vfl_gamma
        self.vfl_iou_weighted = vfl_iou_weighted
        self.loss_box_init_weight = loss_box_init_weight
        self.loss_box_refine_weight = loss_box_refine_weight

    @classmethod
    def from_config(cls, cfg):
        args, feature_shapes = cls.base_config(cfg)
        node = cfg.MODEL.VFNET
        args.update(
            head=VFNetHead(cfg, feature_shapes),
            box2box_transform=Box2BoxTransformLinear(normalize_by_size=False),
            vfl_alpha=node.VFL_ALPHA,
            vfl_gamma=node.VFL_GAMMA,
            vfl_iou_weighted=node.VFL_IOU_WEIGHTED,
            loss_box_init_weight=node.LOSS_BOX_INIT_WEIGHT,
            loss_box_refine_weight=node.LOSS_BOX_REFINE_WEIGHT,
            use_atss=node.USE_ATSS,
            fcos_size_bounds=node.FCOS_SIZE_BOUNDS,
        )
        return args

    def split_predictions(self, predictions: List[List[Tensor]]) -> List[List[Tensor]]:
        """Per level (N, R_l, K) IACS logits, (N, R_l, 4) initial and refined ltrb distances."""
        return self._transpose_dense_predictions(predictions, [self.num_classes, 4, 4])

    # Head outputs in float32, autocast off: assignment, decoding and losses stay float32 under AMP.
    @float32_region("predictions")
    def forward_training(self, images, features, predictions, gt_instances):
        self.check_gt_classes(gt_instances)
        logits, init_ltrb, refined_ltrb = self.split_predictions(predictions)
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, logits, init_ltrb, refined_ltrb, gt_labels, gt_boxes)

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances):
        """ATSS assignment (:meth:`ATSSBase.label_anchors`), or FCOS's of the anchor centres."""
        if self.use_atss:
            gt_labels, matched_gt_boxes = super().label_anchors(anchors, gt_instances)
            # Anchors outside an image's padding (VALID_ANCHORS_PAD_DIVISOR) are not assigned
            # but stay negatives of the varifocal loss: VFNet's loss has no label weights
            # (mmdetection's and the official head alike).
            for labels in gt_labels:
                labels[labels < 0] = self.num_classes
            return gt_labels, matched_gt_boxes
        points_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors)
        points = anchors.get_centers()
        lower, upper = level_ranges(self.fcos_size_bounds, points_per_level, device=points.device)
        gt_labels, matched_gt_boxes = [], []
        for gt_per_image in gt_instances:
            matched_idxs = fcos_assign(points, lower, upper, gt_per_image.gt_boxes.tensor)
            labels, boxes = self.matched_targets(matched_idxs, gt_per_image, anchors.tensor)
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)
        return gt_labels, matched_gt_boxes

    def losses(self, anchors: List[Boxes], logits, init_ltrb, refined_ltrb, gt_labels, gt_boxes):
        """
        Args:
            anchors (list[Boxes]): one per level.
            logits, init_ltrb, refined_ltrb (list[Tensor]): per level, (N, R_l, K), (N, R_l, 4)
                and (N, R_l, 4).
            gt_labels, gt_boxes: from :meth:`label_anchors`.

        Returns:
            dict[str, Tensor]: loss_cls (VFL), loss_box_init and loss_box_refine (GIoU).
        """
        gt_labels, pos_mask, normalizer = self.positives(gt_labels)

        pos_anchors = Boxes.cat(anchors).tensor.expand(len(gt_labels), -1, -1)[pos_mask]  # (P, 4)
        pos_gt = torch.stack(gt_boxes)[pos_mask]  # (P, 4)
        init_boxes = self.box2box_transform.apply_deltas(
            cat(init_ltrb, dim=1)[pos_mask], pos_anchors
        )
        refined_boxes = self.box2box_transform.apply_deltas(
            cat(refined_ltrb, dim=1)[pos_mask], pos_anchors
        )
        init_iou = aligned_iou(init_boxes.detach(), pos_gt).clamp(min=MIN_IOU)  # (P,)
        refined_iou = aligned_iou(refined_boxes.detach(), pos_gt).clamp(min=MIN_IOU)
        if len(pos_gt) > 0:
            storage = get_event_storage()
            storage.put_scalar("vfnet/init_iou", init_iou.mean().item())
            storage.put_scalar("vfnet/refined_iou", refined_iou.mean().item())

        # IACS target: the refined box's IoU on the positive's GT class, 0 everywhere else.
        logits = cat(logits, dim=1)
        scores = torch.zeros(gt_labels.shape, dtype=torch.float32, device=logits.device)
        scores[pos_mask] = refined_iou.float()
        loss_cls = varifocal_loss(
            logits.flatten(0, 1),
            gt_labels.flatten(),
            scores.flatten(),
            alpha=self.vfl_alpha,
            gamma=self.vfl_gamma,
            iou_weighted=self.vfl_iou_weighted,
            reduction="sum",
        )
        # Each box loss weights a positive by its own box's detached IoU and is normalised by
        # the weights' sum over workers (>= 1, as the official code); without positives the
        # sums are empty and the losses 0 with the graph kept.
        loss_init = giou_loss(init_boxes, pos_gt, weight=init_iou, reduction="sum")
        loss_refine = giou_loss(refined_boxes, pos_gt, weight=refined_iou, reduction="sum")
        return {
            "loss_cls": loss_cls / normalizer,
            "loss_box_init": self.loss_box_init_weight * loss_init / positives_sum(init_iou, 1.0),
            "loss_box_refine": self.loss_box_refine_weight
            * loss_refine
            / positives_sum(refined_iou, 1.0),
        }

    def inference_scores_and_deltas(
        self, anchors: List[Boxes], predictions: List[List[Tensor]]
    ) -> Tuple[List[Tensor], List[Tensor], Optional[List[Tensor]]]:
        logits, _, refined_ltrb = self.split_predictions(predictions)
        scores = []
        for level_logits in logits:
            prob = level_logits.sigmoid()
            scores.append(torch.where(prob > self.test_score_thresh, prob, 0.0))
        return scores, refined_ltrb, None
