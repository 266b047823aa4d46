"""ATSS: Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via
Adaptive Training Sample Selection", CVPR 2020. Spec: METHODS.md §1.

Letters: N images, R anchors per image (all levels), M ground truths, K classes.
"""

from typing import List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes
from torch import Tensor, nn
from torch.nn import functional as F

from d2ext.layers import aligned_iou, giou_loss, sigmoid_focal_loss, varifocal_loss
from d2ext.layers.precision import float32_region
from d2ext.modeling.input_checks import check_dense_head_args, check_range

from .atss_base import (
    ATSSBase,
    deformable_last_convs,
    dense_head_args,
    drop_tower_conv_bias,
    positives_sum,
)

# Classification losses of MODEL.ATSS.CLS_LOSS: focal loss (ATSS) or varifocal loss (VFNet).
ATSS_CLS_LOSSES = ("FL", "VFL")
# Inference scores of MODEL.ATSS.TEST_SCORE (d2ext/config/atss.py).
ATSS_TEST_SCORES = ("sqrt", "product_ranked_by_cls")


@META_ARCH_REGISTRY.register()
class ATSS(ATSSBase):
    """
    Implement ATSS in :paper:`ATSS`: adaptive training sample selection, a GN head with
    centerness on the regression tower, focal + centerness-weighted GIoU + centerness losses.

    With ``cls_loss="VFL"`` the focal loss is replaced by VFNet's varifocal loss on the detached
    predicted box's IoU (the "ATSS + VFL" loss-only row of the VFNet paper, METHODS.md §4.5);
    head, centerness and inference are unchanged.
    """

    config_node = "ATSS"

    @configurable
    def __init__(
        self,
        *,
        focal_loss_alpha=0.25,
        focal_loss_gamma=2.0,
        reg_loss_weight=2.0,
        cls_loss="FL",
        vfl_alpha=0.75,
        vfl_gamma=2.0,
        test_score="sqrt",
        **kwargs,
    ):
        """
        Args:
            focal_loss_alpha, focal_loss_gamma, reg_loss_weight, cls_loss, vfl_alpha, vfl_gamma:
                as the MODEL.ATSS keys of the same name (d2ext/config/atss.py).
            kwargs: see :class:`ATSSBase`.
        """
        super().__init__(**kwargs)
        if cls_loss not in ATSS_CLS_LOSSES:
            raise ValueError(
                f"MODEL.ATSS.CLS_LOSS must be one of {ATSS_CLS_LOSSES}, got {cls_loss!r}"
            )
        if test_score not in ATSS_TEST_SCORES:
            raise ValueError(
                f"MODEL.ATSS.TEST_SCORE must be one of {ATSS_TEST_SCORES}, got {test_score!r}"
            )
        node = f"MODEL.{self.config_node}"
        if self.config_node == "ATSS":  # DynamicATSS has no focal loss keys
            check_range(
                "MODEL.ATSS.FOCAL_LOSS_ALPHA (model.focal_loss_alpha)",
                focal_loss_alpha,
                high=1,
                why="< 0 switches the alpha weighting off",
            )
            check_range("MODEL.ATSS.FOCAL_LOSS_GAMMA (model.focal_loss_gamma)", focal_loss_gamma, 0)
        check_range(f"{node}.REG_LOSS_WEIGHT (model.reg_loss_weight)", reg_loss_weight, 0)
        check_range(f"{node}.VFL_ALPHA (model.vfl_alpha)", vfl_alpha, 0)
        check_range(f"{node}.VFL_GAMMA (model.vfl_gamma)", vfl_gamma, 0)
        self.test_score = test_score
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.reg_loss_weight = reg_loss_weight
        self.cls_loss = cls_loss
        self.vfl_alpha = vfl_alpha
        self.vfl_gamma = vfl_gamma

    @classmethod
    def from_config(cls, cfg):
        args, feature_shapes = cls.base_config(cfg)
        node = cfg.MODEL.ATSS
        args.update(
            head=ATSSHead(cfg, feature_shapes),
            box2box_transform=Box2BoxTransform(weights=node.BBOX_REG_WEIGHTS),
            focal_loss_alpha=node.FOCAL_LOSS_ALPHA,
            focal_loss_gamma=node.FOCAL_LOSS_GAMMA,
            reg_loss_weight=node.REG_LOSS_WEIGHT,
            cls_loss=node.CLS_LOSS,
            vfl_alpha=node.VFL_ALPHA,
            vfl_gamma=node.VFL_GAMMA,
            test_score=node.TEST_SCORE,
        )
        return args

    # Head outputs in float32, autocast off: assignment, decoding and losses stay float32 under AMP.
    @float32_region("predictions")
    def forward_training(self, images, features, predictions, gt_instances):
        self.check_gt_classes(gt_instances)
        pred_logits, pred_deltas, pred_ctr = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_ctr)

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
        gt_labels, pos_mask, normalizer = self.positives(gt_labels)

        anchors = Boxes.cat(anchors).tensor.expand(len(gt_labels), -1, -1)[pos_mask]  # (P, 4)
        gt_boxes = torch.stack(gt_boxes)[pos_mask]  # (P, 4)
        pred_boxes = self.box2box_transform.apply_deltas(cat(pred_deltas, dim=1)[pos_mask], anchors)

        # Fused focal / varifocal loss on integer labels: no (N*R, K) one-hot target is built.
        logits = cat(pred_logits, dim=1).flatten(0, 1)
        if self.cls_loss == "VFL":
            # VFL's target: the detached predicted box's IoU with its GT (VFNet's IACS).
            scores = torch.zeros(gt_labels.shape, dtype=torch.float32, device=logits.device)
            scores[pos_mask] = aligned_iou(pred_boxes.detach(), gt_boxes).clamp(min=1e-6).float()
            loss_cls = varifocal_loss(
                logits,
                gt_labels.flatten(),
                scores.flatten(),
                alpha=self.vfl_alpha,
                gamma=self.vfl_gamma,
                iou_weighted=True,
                reduction="sum",
            )
        else:
            loss_cls = sigmoid_focal_loss(
                logits,
                gt_labels.flatten(),
                alpha=self.focal_loss_alpha,
                gamma=self.focal_loss_gamma,
                reduction="sum",
            )
        ctr_targets = centerness_targets(anchors, gt_boxes)  # (P,)
        # The GIoU loss of each positive is weighted by its centerness target and normalised by
        # the targets' sum over all workers (never 0: a positive's centre is inside its GT).
        loss_box_reg = giou_loss(pred_boxes, gt_boxes, weight=ctr_targets, reduction="sum")
        loss_ctr = F.binary_cross_entropy_with_logits(
            cat(pred_ctr, dim=1)[pos_mask][:, 0], ctr_targets, reduction="sum"
        )
        return {
            "loss_cls": loss_cls / normalizer,
            "loss_box_reg": self.reg_loss_weight * loss_box_reg / positives_sum(ctr_targets, 1e-6),
            "loss_centerness": loss_ctr / normalizer,
        }

    def inference_scores_and_deltas(
        self, anchors: List[Boxes], predictions: List[List[Tensor]]
    ) -> Tuple[List[Tensor], List[Tensor], Optional[List[Tensor]]]:
        pred_logits, pred_deltas, pred_ctr = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        if self.test_score == "product_ranked_by_cls":
            scores = [
                torch.where(prob > self.test_score_thresh, prob, 0.0)
                for prob in (logits.sigmoid() for logits in pred_logits)
            ]
            return scores, pred_deltas, [ctr.sigmoid() for ctr in pred_ctr]
        scores = [
            _atss_scores(logits.sigmoid(), ctr.sigmoid(), self.test_score_thresh)
            for logits, ctr in zip(pred_logits, pred_ctr)
        ]
        return scores, pred_deltas, None


def _atss_scores(cls_prob: Tensor, ctr_prob: Tensor, score_thresh: float) -> Tensor:
    """sqrt(cls * centerness) where cls > score_thresh, else 0: (..., K) from (..., K), (..., 1).
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
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        conv_dims: List[int],
        tower_conv_bias=True,
        dcn_on_last_conv=False,
        **kwargs,
    ):
        check_dense_head_args(
            None, kwargs.get("num_classes"), len(conv_dims), kwargs.get("prior_prob", 0.01)
        )
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, **kwargs)
        if not tower_conv_bias:
            drop_tower_conv_bias(self.cls_subnet, self.bbox_subnet)
        if dcn_on_last_conv:
            deformable_last_convs(self.cls_subnet, self.bbox_subnet, bias=tower_conv_bias)
        num_anchors = self.bbox_pred.out_channels // 4
        self.ctrness = nn.Conv2d(conv_dims[-1], num_anchors, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(self.ctrness.weight, std=0.01)
        nn.init.constant_(self.ctrness.bias, 0)
        self.scales = nn.Parameter(torch.ones(len(input_shape)))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        return dense_head_args(cfg, "ATSS", input_shape)

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
