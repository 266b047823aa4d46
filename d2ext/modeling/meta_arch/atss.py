"""ATSS: Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via
Adaptive Training Sample Selection", CVPR 2020. Spec: METHODS.md §1.

Letters: N images, R anchors per image (all levels), M ground truths, K classes.
"""
import logging
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, build_anchor_generator, build_backbone
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage

from d2ext.layers import giou_loss, sigmoid_focal_loss
from d2ext.modeling.assigners import atss_assign
from d2ext.utils.comm import reduce_mean

logger = logging.getLogger(__name__)

LOSS_NORMALIZERS = ("num_pos", "ema")


@META_ARCH_REGISTRY.register()
class ATSS(DenseDetector):
    """
    Implement ATSS in :paper:`ATSS`: adaptive training sample selection, a GN head with
    centerness on the regression tower, focal + centerness-weighted GIoU + centerness losses.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone,
        head,
        head_in_features,
        anchor_generator,
        box2box_transform,
        num_classes,
        topk=9,
        # Loss parameters:
        focal_loss_alpha=0.25,
        focal_loss_gamma=2.0,
        reg_loss_weight=2.0,
        loss_normalizer="num_pos",
        # Inference parameters:
        test_score_thresh=0.05,
        test_topk_candidates=1000,
        test_nms_thresh=0.6,
        max_detections_per_image=100,
        # Input parameters
        pixel_mean,
        pixel_std,
        input_format="BGR",
    ):
        """
        Args:
            backbone, head, head_in_features, pixel_mean, pixel_std: see :class:`DenseDetector`.
            anchor_generator (nn.Module): one anchor per location (8 x stride) for ATSS.
            box2box_transform (Box2BoxTransform): anchor <-> box coding.
            num_classes (int): K.
            topk (int): ATSS candidates per level and GT.
            loss_normalizer (str): "num_pos" (positives averaged over workers, every iteration)
                or "ema" (Detectron2 RetinaNet's moving average).
            Other arguments: as the MODEL.ATSS keys of the same name (d2ext/config/atss.py).
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        if loss_normalizer not in LOSS_NORMALIZERS:
            raise ValueError(
                f"MODEL.ATSS.LOSS_NORMALIZER must be one of {LOSS_NORMALIZERS}, "
                f"got {loss_normalizer!r}"
            )
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.topk = topk
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.reg_loss_weight = reg_loss_weight
        self.loss_normalizer = loss_normalizer
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.input_format = input_format

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        missing = [f for f in cfg.MODEL.ATSS.IN_FEATURES if f not in backbone_shape]
        if missing:
            raise ValueError(
                f"MODEL.ATSS.IN_FEATURES names {missing}, which the backbone does not output "
                f"(it has {sorted(backbone_shape)})"
            )
        feature_shapes = [backbone_shape[f] for f in cfg.MODEL.ATSS.IN_FEATURES]
        return {
            "backbone": backbone,
            "head": ATSSHead(cfg, feature_shapes),
            "head_in_features": cfg.MODEL.ATSS.IN_FEATURES,
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(weights=cfg.MODEL.ATSS.BBOX_REG_WEIGHTS),
            "num_classes": cfg.MODEL.ATSS.NUM_CLASSES,
            "topk": cfg.MODEL.ATSS.TOPK,
            "focal_loss_alpha": cfg.MODEL.ATSS.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": cfg.MODEL.ATSS.FOCAL_LOSS_GAMMA,
            "reg_loss_weight": cfg.MODEL.ATSS.REG_LOSS_WEIGHT,
            "loss_normalizer": cfg.MODEL.ATSS.LOSS_NORMALIZER,
            "test_score_thresh": cfg.MODEL.ATSS.SCORE_THRESH_TEST,
            "test_topk_candidates": cfg.MODEL.ATSS.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": cfg.MODEL.ATSS.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
        }

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_deltas, pred_ctr = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_ctr)

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """
        Returns:
            gt_labels: list[Tensor] of N (R,) tensors: class of the matched GT, or num_classes
                for background.
            matched_gt_boxes: list[Tensor] of N (R, 4) tensors: box of the matched GT
                (meaningless for background anchors).
        """
        num_anchors_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors).tensor  # (R, 4)
        gt_labels, matched_gt_boxes = [], []
        for gt_per_image in gt_instances:
            matched_idxs, _, _ = atss_assign(
                anchors, num_anchors_per_level, gt_per_image.gt_boxes.tensor, self.topk
            )
            if len(gt_per_image) > 0:
                labels = gt_per_image.gt_classes[matched_idxs.clamp(min=0)]
                labels[matched_idxs < 0] = self.num_classes
                boxes = gt_per_image.gt_boxes.tensor[matched_idxs.clamp(min=0)]
            else:
                labels = torch.full_like(matched_idxs, self.num_classes)
                boxes = torch.zeros_like(anchors)
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)
        return gt_labels, matched_gt_boxes

    def losses(self, anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_ctr):
        """
        Args:
            anchors (list[Boxes]): one per level.
            pred_logits, pred_deltas, pred_ctr (list[Tensor]): per level, (N, R_l, K), (N, R_l, 4)
                and (N, R_l, 1).
            gt_labels, gt_boxes: from :meth:`label_anchors`.

        Returns:
            dict[str, Tensor]: loss_cls, loss_box_reg, loss_centerness.
        """
        gt_labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos = pos_mask.sum()
        get_event_storage().put_scalar("num_pos_anchors", num_pos.item() / len(gt_labels))
        normalizer = self._normalizer(num_pos)

        # Fused focal loss on integer labels: no (N*R, K) one-hot target is built.
        loss_cls = sigmoid_focal_loss(
            cat(pred_logits, dim=1).flatten(0, 1),
            gt_labels.flatten(),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )

        anchors = Boxes.cat(anchors).tensor.expand(len(gt_labels), -1, -1)[pos_mask]  # (P, 4)
        gt_boxes = torch.stack(gt_boxes)[pos_mask]  # (P, 4)
        pred_boxes = self.box2box_transform.apply_deltas(cat(pred_deltas, dim=1)[pos_mask], anchors)
        ctr_targets = centerness_targets(anchors, gt_boxes)  # (P,)
        # The GIoU loss of each positive is weighted by its centerness target and normalised by
        # the targets' sum over all workers (never 0: a positive's centre is inside its GT).
        ctr_sum = reduce_mean(ctr_targets.sum().detach()).clamp(min=1e-6)
        loss_box_reg = giou_loss(pred_boxes, gt_boxes, weight=ctr_targets, reduction="sum")
        loss_ctr = F.binary_cross_entropy_with_logits(
            cat(pred_ctr, dim=1)[pos_mask][:, 0], ctr_targets, reduction="sum"
        )
        return {
            "loss_cls": loss_cls / normalizer,
            "loss_box_reg": self.reg_loss_weight * loss_box_reg / ctr_sum,
            "loss_centerness": loss_ctr / normalizer,
        }

    def _normalizer(self, num_pos: Tensor) -> float:
        if self.loss_normalizer == "ema":
            return self._ema_update("loss_normalizer_ema", max(num_pos.item(), 1), 100)
        return reduce_mean(num_pos.float()).clamp(min=1.0).item()

    def forward_inference(self, images, features, predictions):
        pred_logits, pred_deltas, pred_ctr = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        results: List[Instances] = []
        for img_idx, image_size in enumerate(images.image_sizes):
            scores_per_image = [
                _atss_scores(logits[img_idx].sigmoid(), ctr[img_idx].sigmoid(), self.test_score_thresh)
                for logits, ctr in zip(pred_logits, pred_ctr)
            ]
            deltas_per_image = [x[img_idx] for x in pred_deltas]
            results.append(
                self.inference_single_image(anchors, scores_per_image, deltas_per_image, image_size)
            )
        return results

    def inference_single_image(
        self,
        anchors: List[Boxes],
        scores: List[Tensor],
        box_delta: List[Tensor],
        image_size: Tuple[int, int],
    ) -> Instances:
        """
        Args:
            scores (list[Tensor]): per level (R_l, K) final scores, 0 where not a candidate.
            box_delta (list[Tensor]): per level (R_l, 4).
        """
        # Scores are > 0 exactly for candidates that passed the classification threshold.
        pred = self._decode_multi_level_predictions(
            anchors, scores, box_delta, 0.0, self.test_topk_candidates, image_size
        )
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]


def _atss_scores(cls_prob: Tensor, ctr_prob: Tensor, score_thresh: float) -> Tensor:
    """sqrt(cls * centerness) where cls > score_thresh, else 0: (R_l, K) from (R_l, K), (R_l, 1).
    The square root keeps the ranking of cls * centerness (METHODS.md §1.4)."""
    return torch.where(cls_prob > score_thresh, torch.sqrt(cls_prob * ctr_prob), 0.0)


def centerness_targets(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """
    (P,) centerness of each anchor centre in its GT box (P, 4):
    sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), with l, t, r, b the distances from the
    anchor centre to the box sides.
    """
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    lt = centers - gt_boxes[:, :2]
    rb = gt_boxes[:, 2:] - centers
    ratio = torch.minimum(lt, rb) / torch.maximum(lt, rb)
    return torch.sqrt(ratio[:, 0] * ratio[:, 1])


class ATSSHead(RetinaNetHead):
    """
    RetinaNet's two towers (GN by default), plus a centerness output on the regression tower and
    a learnable scale per level on the box regression (METHODS.md §1.2).
    """

    @configurable
    def __init__(self, *, input_shape: List[ShapeSpec], conv_dims: List[int], **kwargs):
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, **kwargs)
        num_anchors = self.bbox_pred.out_channels // 4
        self.ctrness = nn.Conv2d(conv_dims[-1], num_anchors, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(self.ctrness.weight, std=0.01)
        nn.init.constant_(self.ctrness.bias, 0)
        self.scales = nn.Parameter(torch.ones(len(input_shape)))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        num_anchors = build_anchor_generator(cfg, input_shape).num_cell_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(f"ATSSHead needs the same anchor count on every level, got {num_anchors}")
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.ATSS.NUM_CLASSES,
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.ATSS.NUM_CONVS,
            "prior_prob": cfg.MODEL.ATSS.PRIOR_PROB,
            "norm": cfg.MODEL.ATSS.NORM,
            "num_anchors": num_anchors[0],
        }

    def forward(self, features: List[Tensor]):
        """
        Returns:
            logits, bbox_reg, ctrness: three lists with one (N, A*K | A*4 | A, Hi, Wi) tensor per
            level.
        """
        logits, bbox_reg, ctrness = [], [], []
        for level, feature in enumerate(features):
            bbox_feature = self.bbox_subnet(feature)
            logits.append(self.cls_score(self.cls_subnet(feature)))
            bbox_reg.append(self.bbox_pred(bbox_feature) * self.scales[level])
            ctrness.append(self.ctrness(bbox_feature))
        return logits, bbox_reg, ctrness
