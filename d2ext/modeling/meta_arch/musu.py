"""MuSu: Gao, Wang, Wu, "Mutual Supervision for Dense Object Detection", ICCV 2021
(arXiv 2109.05986). Spec: METHODS.md §5.1b-5.3.

THIS IS A RECONSTRUCTION from the paper's description, not a port: no code was released and
the paper's equations could not be retrieved here. What is from the paper: the two heads get
different samples from per-object candidate bags over all levels; the regression head's
samples are ranked mainly by the classification score, the classification head's soft targets
mainly by the IoU of the regression predictions; rankings become per-location loss weights;
tiling more anchors per location helps. Everything else (gate formula, mixing, rank -> weight
map, warm start) is our design, each knob a MODEL.MUSU key (d2ext/config/musu.py).

Letters: N images, R anchors per image (all levels), M ground truths, K classes.
"""

from typing import List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from d2ext.layers import aligned_iou, giou_loss, pairwise_iou, quality_focal_loss, varifocal_loss
from d2ext.layers.precision import float32_region
from d2ext.modeling.assigners.musu import mutual_bags, rank_to_weight
from d2ext.modeling.input_checks import check_dense_head_args, check_range

from .atss_base import (
    ATSSBase,
    deformable_last_convs,
    dense_head_args,
    drop_tower_conv_bias,
    positives_sum,
)

MUSU_CLS_LOSSES = ("QFL", "VFL")


class MuSuHead(RetinaNetHead):
    """RetinaNet's towers (GN) with a learnable scale per level on the box regression; no
    centerness branch (METHODS.md §5.2 step 1). Any number of anchors per location."""

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        tower_conv_bias=True,
        dcn_on_last_conv=False,
        **kwargs,
    ):
        check_dense_head_args(
            None,
            kwargs.get("num_classes"),
            len(kwargs.get("conv_dims", ())),
            kwargs.get("prior_prob", 0.01),
        )
        super().__init__(input_shape=input_shape, **kwargs)
        if not tower_conv_bias:
            drop_tower_conv_bias(self.cls_subnet, self.bbox_subnet)
        if dcn_on_last_conv:
            deformable_last_convs(self.cls_subnet, self.bbox_subnet, bias=tower_conv_bias)
        self.scales = nn.Parameter(torch.ones(len(input_shape)))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        return dense_head_args(cfg, "MUSU", input_shape)

    def forward(self, features: List[Tensor]):
        """Returns per level (N, A*K, Hi, Wi) logits and (N, A*4, Hi, Wi) box deltas."""
        logits, bbox_reg = [], []
        for level, feature in enumerate(features):
            logits.append(self.cls_score(self.cls_subnet(feature)))
            bbox_reg.append(self.bbox_pred(self.bbox_subnet(feature)) * self.scales[level])
        return logits, bbox_reg


@META_ARCH_REGISTRY.register()
class MuSu(ATSSBase):
    """
    MuSu (reconstruction, see the module docstring): candidate bags gated by the predictions,
    a classification-led ranking that weights the GIoU loss and an IoU-led ranking that weights
    the classifier's IoU soft targets (QFL or VFL); anchor-IoU rankings during a warm start.
    Inference: sigmoid(cls), NMS 0.6.
    """

    config_node = "MUSU"

    @configurable
    def __init__(
        self,
        *,
        gate_thresh=0.05,
        gate_shape=0.5,
        mix_lambda=0.2,
        rank_topk=9,
        rank_weight="linear",
        rank_tau=3.0,
        cls_loss="QFL",
        qfl_beta=2.0,
        vfl_alpha=0.75,
        vfl_gamma=2.0,
        reg_loss_weight=2.0,
        warmup_iters=1000,
        **kwargs,
    ):
        """
        Args:
            gate_thresh, gate_shape, mix_lambda, rank_*, cls_loss, qfl_beta, vfl_*,
                reg_loss_weight, warmup_iters: as the MODEL.MUSU keys of the same name
                (d2ext/config/musu.py).
            kwargs: see :class:`ATSSBase`; the head is a :class:`MuSuHead`.
        """
        super().__init__(**kwargs)
        if cls_loss not in MUSU_CLS_LOSSES:
            raise ValueError(
                f"MODEL.MUSU.CLS_LOSS must be one of {MUSU_CLS_LOSSES}, got {cls_loss!r}"
            )
        rank_to_weight(
            torch.zeros(1), rank_weight, max(rank_topk, 1), rank_tau
        )  # raises on a bad name
        for name, value in (("MIX_LAMBDA", mix_lambda), ("GATE_SHAPE", gate_shape)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MODEL.MUSU.{name} must be in [0, 1], got {value}")
        if rank_topk < 1 or rank_tau <= 0:
            raise ValueError(
                f"MODEL.MUSU.RANK_TOPK must be >= 1 and RANK_TAU > 0, got {rank_topk}, {rank_tau}"
            )
        # The gate compares a geometric mean of a probability and an IoU: a threshold > 1 would
        # admit only each GT's best candidate, silently.
        check_range("MODEL.MUSU.GATE_THRESH (model.gate_thresh)", gate_thresh, 0, 1)
        for key, value in (
            ("QFL_BETA", qfl_beta),
            ("VFL_ALPHA", vfl_alpha),
            ("VFL_GAMMA", vfl_gamma),
            ("REG_LOSS_WEIGHT", reg_loss_weight),
        ):
            check_range(f"MODEL.MUSU.{key} (model.{key.lower()})", value, 0)
        check_range("MODEL.MUSU.WARMUP_ITERS (model.warmup_iters)", warmup_iters, 0, integer=True)
        self.gate_thresh = gate_thresh
        self.gate_shape = gate_shape
        self.mix_lambda = mix_lambda
        self.rank_topk = rank_topk
        self.rank_weight = rank_weight
        self.rank_tau = rank_tau
        self.cls_loss = cls_loss
        self.qfl_beta = qfl_beta
        self.vfl_alpha = vfl_alpha
        self.vfl_gamma = vfl_gamma
        self.reg_loss_weight = reg_loss_weight
        self.warmup_iters = warmup_iters
        self.num_anchors_per_location = self.anchor_generator.num_cell_anchors[0]

    @classmethod
    def from_config(cls, cfg):
        args, feature_shapes = cls.base_config(cfg)
        node = cfg.MODEL.MUSU
        args.update(
            head=MuSuHead(cfg, feature_shapes),
            box2box_transform=Box2BoxTransform(weights=node.BBOX_REG_WEIGHTS),
            gate_thresh=node.GATE_THRESH,
            gate_shape=node.GATE_SHAPE,
            mix_lambda=node.MIX_LAMBDA,
            rank_topk=node.RANK_TOPK,
            rank_weight=node.RANK_WEIGHT,
            rank_tau=node.RANK_TAU,
            cls_loss=node.CLS_LOSS,
            qfl_beta=node.QFL_BETA,
            vfl_alpha=node.VFL_ALPHA,
            vfl_gamma=node.VFL_GAMMA,
            reg_loss_weight=node.REG_LOSS_WEIGHT,
            warmup_iters=node.WARMUP_ITERS,
        )
        return args

    def in_warm_start(self) -> bool:
        """True during the first WARMUP_ITERS iterations (the event storage's iteration)."""
        return get_event_storage().iter < self.warmup_iters

    # Head outputs in float32, autocast off: assignment, decoding and losses stay float32 under AMP.
    @float32_region("predictions")
    def forward_training(self, images, features, predictions, gt_instances):
        self.check_gt_classes(gt_instances)
        pred_logits, pred_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        logits = cat(pred_logits, dim=1)  # (N, R, K)
        pred_boxes = self.decode_boxes(anchors, cat(pred_deltas, dim=1))  # (N, R, 4)
        targets = self.label_anchors_mutual(
            anchors, logits.detach(), pred_boxes.detach(), gt_instances
        )
        return self.losses(logits, pred_boxes, *targets)

    def decode_boxes(self, anchors: List[Boxes], deltas: Tensor) -> Tensor:
        """(N, R, 4) predicted boxes from (N, R, 4) deltas."""
        anchors = Boxes.cat(anchors).tensor
        boxes = self.box2box_transform.apply_deltas(
            deltas.flatten(0, 1), anchors.repeat(len(deltas), 1)
        )
        return boxes.view(deltas.shape)

    @torch.no_grad()
    def label_anchors_mutual(
        self,
        anchors: List[Boxes],
        logits: Tensor,
        pred_boxes: Tensor,
        gt_instances: List[Instances],
    ):
        """
        Bags and the two heads' weights of every image (:func:`mutual_bags`), scored by the
        current predictions or, during the warm start, by the anchors' own IoU.

        Returns:
            gt_labels (N, R): class of the bag's GT, num_classes outside every bag.
            gt_boxes (N, R, 4): the bag's GT box (meaningless outside).
            reg_weights, cls_weights (N, R): per-anchor loss weights of the two heads.
        """
        num_anchors_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors).tensor
        warm = self.in_warm_start()
        labels, boxes, reg_weights, cls_weights = [], [], [], []
        bag_sizes, agree = [], []
        for gt_per_image, logits_i, pred_i in zip(gt_instances, logits, pred_boxes):
            gt = gt_per_image.gt_boxes.tensor
            anchor_ious = pairwise_iou(anchors, gt)  # (R, M)
            if warm:
                scores = ious = anchor_ious
            else:
                scores = logits_i[:, gt_per_image.gt_classes].float().sigmoid()
                ious = pairwise_iou(pred_i, gt)
            bags = mutual_bags(
                anchors,
                num_anchors_per_level,
                gt,
                scores,
                ious,
                anchor_ious,
                topk=self.topk,
                num_anchors_per_location=self.num_anchors_per_location,
                gate_thresh=self.gate_thresh,
                gate_shape=self.gate_shape,
                mix_lambda=self.mix_lambda,
                rank_topk=self.rank_topk,
                rank_weight=self.rank_weight,
                rank_tau=self.rank_tau,
            )
            l, b = self.matched_targets(bags.matched_idxs, gt_per_image, anchors)
            labels.append(l)
            boxes.append(b)
            reg_weights.append(bags.reg_weights)
            cls_weights.append(bags.cls_weights)
            bag_sizes.append(bags.bag_sizes)
            agree.append(bags.top_agree)

        reg_weights, cls_weights = torch.stack(reg_weights), torch.stack(cls_weights)
        storage = get_event_storage()
        storage.put_scalar("musu/warm_start", float(warm))
        storage.put_scalar("musu/reg_samples", (reg_weights > 0).sum().item() / len(labels))
        storage.put_scalar("musu/cls_samples", (cls_weights > 0).sum().item() / len(labels))
        bag_sizes, agree = torch.cat(bag_sizes), torch.cat(agree)
        if len(bag_sizes) > 0:
            storage.put_scalar("musu/bag_size", bag_sizes.float().mean().item())
            # How often both heads' best-ranked sample of a GT is the same anchor.
            storage.put_scalar("musu/top_agreement", agree.float().mean().item())
        return torch.stack(labels), torch.stack(boxes), reg_weights, cls_weights

    def losses(self, logits, pred_boxes, gt_labels, gt_boxes, reg_weights, cls_weights):
        """
        Args:
            logits (Tensor): (N, R, K); pred_boxes (Tensor): (N, R, 4) decoded predictions.
            gt_labels, gt_boxes, reg_weights, cls_weights: from :meth:`label_anchors_mutual`.

        Returns:
            dict[str, Tensor]: loss_cls, loss_box_reg.
        """
        in_bag = gt_labels != self.num_classes  # (N, R)
        get_event_storage().put_scalar("num_pos_anchors", in_bag.sum().item() / len(gt_labels))

        # Classification: soft target w_cls * IoU(predicted box, GT) on the GT's class; anchors
        # outside the bags (and bag members of weight 0) are plain negatives.
        quality = aligned_iou(pred_boxes[in_bag].detach(), gt_boxes[in_bag])
        scores = torch.zeros(gt_labels.shape, dtype=torch.float32, device=logits.device)
        scores[in_bag] = (cls_weights[in_bag] * quality).float()
        flat_logits, flat_labels, flat_scores = (
            logits.flatten(0, 1),
            gt_labels.flatten(),
            scores.flatten(),
        )
        if self.cls_loss == "QFL":
            loss_cls = quality_focal_loss(
                flat_logits, flat_labels, flat_scores, beta=self.qfl_beta, reduction="sum"
            )
        else:
            loss_cls = varifocal_loss(
                flat_logits,
                flat_labels,
                flat_scores,
                alpha=self.vfl_alpha,
                gamma=self.vfl_gamma,
                iou_weighted=True,
                reduction="sum",
            )

        # Regression: GIoU weighted by the classification-led rank weight.
        reg = reg_weights > 0
        loss_box = giou_loss(
            pred_boxes[reg], gt_boxes[reg], weight=reg_weights[reg], reduction="sum"
        )
        return {
            "loss_cls": loss_cls / positives_sum(cls_weights, 1.0),
            "loss_box_reg": self.reg_loss_weight * loss_box / positives_sum(reg_weights, 1.0),
        }

    def inference_scores_and_deltas(
        self, anchors: List[Boxes], predictions: List[List[Tensor]]
    ) -> Tuple[List[Tensor], List[Tensor], Optional[List[Tensor]]]:
        pred_logits, pred_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        scores = []
        for logits in pred_logits:
            prob = logits.sigmoid()
            scores.append(torch.where(prob > self.test_score_thresh, prob, 0.0))
        return scores, pred_deltas, None
