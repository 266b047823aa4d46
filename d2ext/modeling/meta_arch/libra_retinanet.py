"""
Libra RetinaNet (Pang et al., "Libra R-CNN: Towards Balanced Learning for Object Detection",
CVPR 2019, Table 1's RetinaNet row; METHODS.md §7): Detectron2's RetinaNet whose FPN is wrapped in
the balanced feature pyramid (MODEL.BACKBONE.NAME "build_resnet_fpn_bfp_backbone",
d2ext/modeling/backbone/bfp.py) and whose box loss is the balanced L1 loss
(MODEL.RETINANET.BBOX_REG_LOSS_TYPE "balanced_l1", MODEL.LIBRA.BALANCED_L1_*;
d2ext/modeling/losses/balanced_l1.py). IoU-balanced sampling, the third Libra component, does not
apply to a dense detector.

Also, for mmdetection's RetinaNet (the published Libra RetinaNet checkpoint,
configs/MMDet/libra-retinanet_r50_fpn_1x_coco):

- MODEL.RETINANET.LOSS_NORMALIZER "num_pos": losses divided by the positives of the batch (each
  image counted as at least 1: mmdetection's avg_factor), not Detectron2's moving average;
- MODEL.RETINANET.VALID_ANCHORS_PAD_DIVISOR: anchors outside each image's own size padded to 32
  are not assigned and not in the losses (mmdetection's valid_flags);
- MODEL.RETINANET.CLIP_BEFORE_NMS: boxes clipped to the image and empty ones dropped before the
  class-wise NMS (mmdetection's decoding with max_shape and min_bbox_size=0);
- MODEL.ANCHOR_GENERATOR.NAME "MMDetAnchorGenerator": the cell anchors of one location in
  mmdetection's order (aspect ratio major, size minor; Detectron2's is size major), so that the
  head's A * K output channels mean the same anchors as in an mmdetection checkpoint.
"""

import math
from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY, DefaultAnchorGenerator
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import get_event_storage
from fvcore.nn import sigmoid_focal_loss_jit
from torch import Tensor
from torch.nn import functional as F

from d2ext.checkpoint.conversion import Rule
from d2ext.checkpoint.mmdet import register_mmdet_head
from d2ext.config.defaults import register_config
from d2ext.modeling.losses.balanced_l1 import balanced_l1_loss
from d2ext.modeling.proposal_generator.libra_rpn import valid_anchor_mask

LOSS_NORMALIZERS = ("ema", "num_pos")


@register_config
def add_libra_retinanet_config(cfg):
    """Keys of LibraRetinaNet in Detectron2's MODEL.RETINANET node (the balanced L1 loss reads
    MODEL.LIBRA.BALANCED_L1_*; the BFP MODEL.LIBRA.BFP_*)."""
    # "ema": Detectron2's moving average of the positives (momentum 0.9, from 100); "num_pos":
    # the positives of this batch, each image counted as at least one (mmdetection's avg_factor).
    cfg.MODEL.RETINANET.LOSS_NORMALIZER = "ema"
    # Clip the decoded boxes to the image and drop empty ones before NMS (mmdetection);
    # Detectron2 clips after NMS (detector_postprocess).
    cfg.MODEL.RETINANET.CLIP_BEFORE_NMS = False
    # In training, anchors whose grid location lies beyond the image's own size rounded up to
    # this are ignored (mmdetection's valid_flags per image of a padded batch); 0 = Detectron2
    # (every anchor of the padded batch is labelled).
    cfg.MODEL.RETINANET.VALID_ANCHORS_PAD_DIVISOR = 0


@ANCHOR_GENERATOR_REGISTRY.register()
class MMDetAnchorGenerator(DefaultAnchorGenerator):
    """
    Detectron2's DefaultAnchorGenerator with the cell anchors of a location in mmdetection's
    order: for each aspect ratio, every size (mmdetection's AnchorGenerator, scale_major=True:
    ``ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)``). Same boxes (side w =
    size / sqrt(ratio), h = ratio * w), in the order an mmdetection head's channels use them.
    """

    def generate_cell_anchors(self, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1, 2)):
        anchors = []
        for aspect_ratio in aspect_ratios:
            for size in sizes:
                w = math.sqrt(size**2.0 / aspect_ratio)
                h = aspect_ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors)


@META_ARCH_REGISTRY.register()
class LibraRetinaNet(RetinaNet):
    """RetinaNet with the balanced L1 box loss (and, through its backbone, the balanced feature
    pyramid); see the module docstring."""

    @configurable
    def __init__(
        self,
        *,
        balanced_l1_alpha: float = 0.5,
        balanced_l1_gamma: float = 1.5,
        balanced_l1_beta: float = 0.11,
        loss_normalizer: str = "ema",
        clip_before_nms: bool = False,
        valid_anchors_pad_divisor: int = 0,
        **kwargs,
    ):
        """
        Args:
            balanced_l1_alpha, balanced_l1_gamma, balanced_l1_beta: the balanced L1 loss of the
                box deltas, used when ``box_reg_loss_type`` is "balanced_l1" (RetinaNet's
                recipe: 0.5, 1.5, 0.11).
            loss_normalizer: "ema" (Detectron2) or "num_pos" (mmdetection), see the module.
            clip_before_nms: clip boxes and drop empty ones before NMS (mmdetection).
            valid_anchors_pad_divisor: > 0: in training, the anchors beyond each image's own
                size rounded up to this are ignored (mmdetection's valid_flags, 32).
            kwargs: :class:`RetinaNet`'s.
        """
        super().__init__(**kwargs)
        if loss_normalizer not in LOSS_NORMALIZERS:
            raise ValueError(
                f"MODEL.RETINANET.LOSS_NORMALIZER must be one of {LOSS_NORMALIZERS}, got {loss_normalizer!r}"
            )
        if (
            self.box_reg_loss_type == "balanced_l1"
        ):  # checked here: Detectron2's loss refuses it later
            balanced_l1_loss(
                torch.zeros(1),
                torch.zeros(1),
                balanced_l1_alpha,
                balanced_l1_gamma,
                balanced_l1_beta,
            )
        self.balanced_l1_alpha = balanced_l1_alpha
        self.balanced_l1_gamma = balanced_l1_gamma
        self.balanced_l1_beta = balanced_l1_beta
        self.loss_normalizer = loss_normalizer
        self.clip_before_nms = clip_before_nms
        if valid_anchors_pad_divisor < 0:
            raise ValueError(
                f"MODEL.RETINANET.VALID_ANCHORS_PAD_DIVISOR must be >= 0, got {valid_anchors_pad_divisor}"
            )
        self.valid_anchors_pad_divisor = valid_anchors_pad_divisor

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(
            balanced_l1_alpha=cfg.MODEL.LIBRA.BALANCED_L1_ALPHA,
            balanced_l1_gamma=cfg.MODEL.LIBRA.BALANCED_L1_GAMMA,
            balanced_l1_beta=cfg.MODEL.LIBRA.BALANCED_L1_BETA,
            loss_normalizer=cfg.MODEL.RETINANET.LOSS_NORMALIZER,
            clip_before_nms=cfg.MODEL.RETINANET.CLIP_BEFORE_NMS,
            valid_anchors_pad_divisor=cfg.MODEL.RETINANET.VALID_ANCHORS_PAD_DIVISOR,
        )
        return ret

    @torch.no_grad()
    def label_anchors(self, anchors, gt_instances):
        """RetinaNet.label_anchors, with the anchors outside each image's padded size ignored
        (label -1, and no low-quality match) when valid_anchors_pad_divisor is set."""
        if not self.valid_anchors_pad_divisor:
            return super().label_anchors(anchors, gt_instances)
        num_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for gt_i in gt_instances:
            valid = valid_anchor_mask(
                anchors.tensor,
                num_per_level,
                self.anchor_generator.strides,
                self.anchor_generator.offset,
                gt_i.image_size,
                self.valid_anchors_pad_divisor,
            )
            iou = pairwise_iou(gt_i.gt_boxes, anchors)
            if len(gt_i):
                iou[:, ~valid] = 0.0
            matched_idxs, anchor_labels = self.anchor_matcher(iou)
            del iou
            if len(gt_i) > 0:
                matched_gt_boxes_i = gt_i.gt_boxes.tensor[matched_idxs]
                gt_labels_i = gt_i.gt_classes[matched_idxs]
                gt_labels_i[anchor_labels == 0] = self.num_classes
                gt_labels_i[anchor_labels == -1] = -1
            else:
                matched_gt_boxes_i = torch.zeros_like(anchors.tensor)
                gt_labels_i = torch.zeros_like(matched_idxs) + self.num_classes
            gt_labels_i[~valid] = -1
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """RetinaNet.losses with the balanced L1 box loss and the selectable normaliser."""
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        valid_mask = gt_labels >= 0
        pos_mask = valid_mask & (gt_labels != self.num_classes)
        num_pos_anchors = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        if self.loss_normalizer == "num_pos":
            normalizer = pos_mask.sum(dim=1).clamp(min=1).sum().item()
        else:
            normalizer = self._ema_update("loss_normalizer", max(num_pos_anchors, 1), 100)

        gt_labels_target = F.one_hot(gt_labels[valid_mask], num_classes=self.num_classes + 1)[
            :, :-1
        ]
        loss_cls = sigmoid_focal_loss_jit(
            cat(pred_logits, dim=1)[valid_mask],
            gt_labels_target.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        if self.box_reg_loss_type == "balanced_l1":
            anchors = type(anchors[0]).cat(anchors).tensor  # (R, 4)
            target = torch.stack([self.box2box_transform.get_deltas(anchors, k) for k in gt_boxes])
            loss_box_reg = balanced_l1_loss(
                cat(pred_anchor_deltas, dim=1)[pos_mask],
                target[pos_mask],
                alpha=self.balanced_l1_alpha,
                gamma=self.balanced_l1_gamma,
                beta=self.balanced_l1_beta,
                reduction="sum",
            )
        else:
            loss_box_reg = _dense_box_regression_loss(
                anchors,
                self.box2box_transform,
                pred_anchor_deltas,
                gt_boxes,
                pos_mask,
                box_reg_loss_type=self.box_reg_loss_type,
                smooth_l1_beta=self.smooth_l1_beta,
            )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

    def inference_single_image(
        self,
        anchors: List[Boxes],
        box_cls: List[Tensor],
        box_delta: List[Tensor],
        image_size: Tuple[int, int],
    ):
        if not self.clip_before_nms:
            return super().inference_single_image(anchors, box_cls, box_delta, image_size)
        pred = self._decode_multi_level_predictions(
            anchors,
            box_cls,
            box_delta,
            self.test_score_thresh,
            self.test_topk_candidates,
            image_size,
        )
        pred.pred_boxes.clip(image_size)
        pred = pred[pred.pred_boxes.nonempty()]
        keep = batched_nms(
            pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh
        )
        return pred[keep[: self.max_detections_per_image]]


# mmdetection's RetinaHead: towers of conv (with bias, no norm) + ReLU, which Detectron2's
# RetinaNetHead without norm holds at indices 2i, 2i + 1; retina_cls / retina_reg with the
# anchors of a location in mmdetection's order (MMDetAnchorGenerator).
RETINA_HEAD_RULES = [
    Rule(r"cls_convs\.(\d+)\.conv\.(weight|bias)", lambda m: f"cls_subnet.{2 * int(m[1])}.{m[2]}"),
    Rule(r"reg_convs\.(\d+)\.conv\.(weight|bias)", lambda m: f"bbox_subnet.{2 * int(m[1])}.{m[2]}"),
    Rule(r"retina_cls\.(weight|bias)", r"cls_score.\1"),
    Rule(r"retina_reg\.(weight|bias)", r"bbox_pred.\1"),
]
register_mmdet_head(
    "RetinaNet", ("bbox_head.retina_cls.weight", "head.cls_score.weight"), RETINA_HEAD_RULES
)

__all__ = [
    "LibraRetinaNet",
    "MMDetAnchorGenerator",
    "RETINA_HEAD_RULES",
    "add_libra_retinanet_config",
]
