"""What the ATSS-family detectors (ATSS, DynamicATSS, GFL) share: the config reading, ATSS
label assignment, the loss normaliser and per-level top-k + NMS inference.

Letters: N images, R anchors per image (all levels), M ground truths, K classes.
"""

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, nonzero_tuple
from detectron2.modeling import build_anchor_generator, build_backbone
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from d2ext.layers.precision import autocast_enabled, float32_region
from d2ext.modeling.assigners import atss_assign
from d2ext.modeling.backbone.deformable import DeformConvPack
from d2ext.modeling.box_regression import scriptable_box2box_transform
from d2ext.modeling.input_checks import (
    check_dense_head_args,
    check_each,
    check_gt_classes,
    check_pixel_std,
    check_range,
)
from d2ext.utils.comm import reduce_mean

LOSS_NORMALIZERS = ("num_pos", "ema")
# What the pre-NMS top-k of each level ranks (METHODS.md Errata 6).
TOPK_UNITS = ("pair", "location")


class ATSSBase(DenseDetector):
    """
    A dense detector with one square anchor per location, ATSS label assignment and
    :meth:`forward_inference` that ranks the candidates of each level by the scores subclasses
    compute in :meth:`inference_scores_and_deltas`.
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
        loss_normalizer="num_pos",
        test_score_thresh=0.05,
        test_topk_candidates=1000,
        test_nms_thresh=0.6,
        max_detections_per_image=100,
        test_topk_by="pair",
        valid_anchors_pad_divisor=0,
        pixel_mean,
        pixel_std,
        input_format="BGR",
    ):
        """
        Args:
            backbone, head, head_in_features, pixel_mean, pixel_std: see :class:`DenseDetector`.
            anchor_generator (nn.Module): one anchor per location (8 x stride).
            box2box_transform: anchor <-> box coding.
            num_classes (int): K.
            topk (int): ATSS candidates per level and GT.
            loss_normalizer (str): "num_pos" (positives averaged over workers, every iteration)
                or "ema" (Detectron2 RetinaNet's moving average).
            test_*: candidates need a class probability > test_score_thresh; the
                test_topk_candidates best per level are decoded; boxes are clipped to the
                image; class-wise NMS at test_nms_thresh; max_detections_per_image kept.
            test_topk_by (str): what that per-level top-k ranks: "pair" = the (location, class)
                pairs above the threshold (Detectron2, official ATSS); "location" = the
                locations by their best class score, then every (location, class) of those
                above the threshold (official GFL v1/v2 and VFNet).
            valid_anchors_pad_divisor (int): 0 = every anchor of the padded batch is assigned
                and trained on; N > 0 = anchors at grid locations beyond the image's own size
                rounded up to a multiple of N are ignored (no assignment, no loss), as
                mmdetection's valid_flags with its per-image pad_shape (N = 32).
        """
        check_pixel_std(pixel_std, "MODEL.PIXEL_STD (model.pixel_std)")
        node = f"MODEL.{self.config_node}"
        check_range(f"{node}.NUM_CLASSES (model.num_classes)", num_classes, 1, integer=True)
        check_range(f"{node}.TOPK (model.topk)", topk, 1, integer=True)
        check_range(
            f"{node}.SCORE_THRESH_TEST (model.test_score_thresh)",
            test_score_thresh,
            0,
            1,
            high_open=True,
        )
        check_range(
            f"{node}.TOPK_CANDIDATES_TEST (model.test_topk_candidates)",
            test_topk_candidates,
            1,
            integer=True,
        )
        check_range(f"{node}.NMS_THRESH_TEST (model.test_nms_thresh)", test_nms_thresh, 0, 1)
        check_range(
            "TEST.DETECTIONS_PER_IMAGE (model.max_detections_per_image)",
            max_detections_per_image,
            1,
            integer=True,
        )
        if hasattr(box2box_transform, "weights"):  # Box2BoxTransform: deltas are multiplied by them
            check_each(
                f"{node}.BBOX_REG_WEIGHTS (model.box2box_transform.weights)",
                box2box_transform.weights,
                4,
                low=0,
                low_open=True,
            )
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        if loss_normalizer not in LOSS_NORMALIZERS:
            raise ValueError(
                f"MODEL.{self.config_node}.LOSS_NORMALIZER must be one of {LOSS_NORMALIZERS}, "
                f"got {loss_normalizer!r}"
            )
        if test_topk_by not in TOPK_UNITS:
            raise ValueError(
                f"MODEL.{self.config_node}.TOPK_CANDIDATES_TEST_BY must be one of {TOPK_UNITS}, "
                f"got {test_topk_by!r}"
            )
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        # Detectron2's Box2BoxTransformLinear (GFL, VFNet) as a TorchScript class, same numbers.
        self.box2box_transform = scriptable_box2box_transform(box2box_transform)
        self.topk = topk
        self.loss_normalizer = loss_normalizer
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.test_topk_by = test_topk_by
        if valid_anchors_pad_divisor < 0:
            raise ValueError(
                f"MODEL.{self.config_node}.VALID_ANCHORS_PAD_DIVISOR must be >= 0, got "
                f"{valid_anchors_pad_divisor}"
            )
        self.valid_anchors_pad_divisor = valid_anchors_pad_divisor
        self.input_format = input_format

    # The config node of the subclass's keys, MODEL.<config_node>.
    config_node = "ATSS"

    @classmethod
    def base_config(cls, cfg) -> Tuple[Dict, List[ShapeSpec]]:
        """The keyword arguments of :meth:`__init__` but head and box2box_transform, read from
        MODEL.<config_node>, and the shapes of the features the head runs on."""
        node = cfg.MODEL.get(cls.config_node)
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        missing = [f for f in node.IN_FEATURES if f not in backbone_shape]
        if missing:
            raise ValueError(
                f"MODEL.{cls.config_node}.IN_FEATURES names {missing}, which the backbone does "
                f"not output (it has {sorted(backbone_shape)})"
            )
        feature_shapes = [backbone_shape[f] for f in node.IN_FEATURES]
        args = {
            "backbone": backbone,
            "head_in_features": node.IN_FEATURES,
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "num_classes": node.NUM_CLASSES,
            "topk": node.TOPK,
            "loss_normalizer": node.LOSS_NORMALIZER,
            "test_score_thresh": node.SCORE_THRESH_TEST,
            "test_topk_candidates": node.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": node.NMS_THRESH_TEST,
            "test_topk_by": node.TOPK_CANDIDATES_TEST_BY,
            "valid_anchors_pad_divisor": node.VALID_ANCHORS_PAD_DIVISOR,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
        }
        return args, feature_shapes

    def check_gt_classes(self, gt_instances: List[Instances]) -> None:
        """Refuses GT classes outside [0, num_classes), naming this method's key: each
        subclass's forward_training calls it first (a batch from a user's own loop is not
        checked by d2ext's data loaders)."""
        check_gt_classes(
            gt_instances,
            self.num_classes,
            f"MODEL.{self.config_node}.NUM_CLASSES (model.num_classes)",
        )

    @torch.no_grad()
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """
        Plain ATSS assignment of every image (of its valid anchors, see
        :meth:`valid_anchors`).

        Returns:
            gt_labels: list[Tensor] of N (R,) tensors: class of the matched GT, num_classes
                for background, -1 for anchors ignored as outside the image's padding.
            matched_gt_boxes: list[Tensor] of N (R, 4) tensors: box of the matched GT
                (meaningless for background anchors).
        """
        num_anchors_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors).tensor  # (R, 4)
        gt_labels, matched_gt_boxes = [], []
        for gt_per_image in gt_instances:
            valid = self.valid_anchors(anchors, num_anchors_per_level, gt_per_image.image_size)
            if valid is None:
                matched_idxs, _, _ = atss_assign(
                    anchors, num_anchors_per_level, gt_per_image.gt_boxes.tensor, self.topk
                )
            else:
                valid_per_level = [int(v.sum()) for v in valid.split(num_anchors_per_level)]
                matched_valid, _, _ = atss_assign(
                    anchors[valid], valid_per_level, gt_per_image.gt_boxes.tensor, self.topk
                )
                matched_idxs = torch.full(
                    (len(anchors),), -1, dtype=matched_valid.dtype, device=anchors.device
                )
                matched_idxs[valid] = matched_valid
            labels, boxes = self.matched_targets(matched_idxs, gt_per_image, anchors)
            if valid is not None:
                labels[~valid] = -1
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)
        return gt_labels, matched_gt_boxes

    def valid_anchors(self, anchors: Tensor, num_anchors_per_level: List[int], image_size):
        """
        (R,) bool: the anchors whose grid location lies inside the image's size rounded up to
        valid_anchors_pad_divisor (mmdetection's valid_flags), or None when all are valid.
        """
        if not self.valid_anchors_pad_divisor:
            return None
        div = self.valid_anchors_pad_divisor
        pad_h, pad_w = (-(-int(size) // div) * div for size in image_size)
        strides = torch.cat(
            [
                torch.full((n,), float(s), device=anchors.device)
                for n, s in zip(num_anchors_per_level, self.anchor_generator.strides)
            ]
        )
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        # Grid index of each anchor: its centre is at (index + offset) * stride.
        index = torch.floor(centers / strides[:, None] - self.anchor_generator.offset + 0.5)
        limit = torch.stack([torch.ceil(pad_w / strides), torch.ceil(pad_h / strides)], dim=1)
        return (index < limit).all(dim=1)

    def matched_targets(self, matched_idxs: Tensor, gt_per_image: Instances, anchors: Tensor):
        """(R,) class per anchor (num_classes = background) and (R, 4) matched GT box."""
        if len(gt_per_image) == 0:
            return torch.full_like(matched_idxs, self.num_classes), torch.zeros_like(anchors)
        labels = gt_per_image.gt_classes[matched_idxs.clamp(min=0)]
        labels[matched_idxs < 0] = self.num_classes
        return labels, gt_per_image.gt_boxes.tensor[matched_idxs.clamp(min=0)]

    def positives(self, gt_labels: List[Tensor]) -> Tuple[Tensor, Tensor, float]:
        """
        Stacks the per-image labels of :meth:`label_anchors` into (N, R), finds the (N, R)
        positives, logs their count per image and returns the loss normaliser.
        """
        gt_labels = torch.stack(gt_labels)
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos = pos_mask.sum()
        get_event_storage().put_scalar("num_pos_anchors", num_pos.item() / len(gt_labels))
        return gt_labels, pos_mask, self.normalizer(num_pos)

    def normalizer(self, num_pos: Tensor) -> float:
        """N_pos_avg (METHODS.md §0), or Detectron2's EMA of it; never below 1."""
        if self.loss_normalizer == "ema":
            return self._ema_update("loss_normalizer_ema", max(num_pos.item(), 1), 100)
        return reduce_mean(num_pos.float()).clamp(min=1.0).item()

    def anchor_strides(self, anchors: List[Boxes]) -> Tensor:
        """(R,) the stride of the level of every anchor."""
        return torch.cat(
            [
                torch.full((len(a),), float(s), device=a.tensor.device)
                for a, s in zip(anchors, self.anchor_generator.strides)
            ]
        )

    def forward_inference(
        self, images: ImageList, features: List[Tensor], predictions: List[List[Tensor]]
    ) -> List[Instances]:
        # Decoding and NMS in float32 (autocast off) when called under autocast. Not a
        # float32_region decorator: TorchScript compiles this method and skips this branch (an
        # `and` of the two conditions would be compiled).
        if not torch.jit.is_scripting():
            if autocast_enabled():
                return self._forward_inference_float32(images, features, predictions)
        anchors = self.anchor_generator(features)
        scores, deltas, factors = self.inference_scores_and_deltas(anchors, predictions)
        results: List[Instances] = []
        for i, image_size in enumerate(images.image_sizes):
            factors_per_image: Optional[List[Tensor]] = None
            if factors is not None:
                factors_per_image = [f[i] for f in factors]
            results.append(
                self.inference_single_image(
                    anchors,
                    [s[i] for s in scores],
                    [d[i] for d in deltas],
                    image_size,
                    factors_per_image,
                )
            )
        return results

    @float32_region("predictions")
    def _forward_inference_float32(self, images, features, predictions):
        return self.forward_inference(images, features, predictions)  # autocast is off here

    def inference_scores_and_deltas(
        self, anchors: List[Boxes], predictions: List[List[Tensor]]
    ) -> Tuple[List[Tensor], List[Tensor], Optional[List[Tensor]]]:
        """
        Returns:
            tuple: (scores, deltas, factors)

            - scores: per level (N, R_l, K) ranking scores, 0 where a location is not a candidate.
            - deltas: per level (N, R_l, 4) regression in box2box_transform's coding.
            - factors: None, or per level (N, R_l, 1) factors the selected candidates' scores are
              multiplied by after the per-level top-k (mmdetection's score_factors: ranked by
              one score, reported as another).
        """
        raise NotImplementedError

    def inference_single_image(
        self,
        anchors: List[Boxes],
        scores: List[Tensor],
        box_delta: List[Tensor],
        image_size: Tuple[int, int],
        factors: Optional[List[Tensor]] = None,
    ) -> Instances:
        """
        Args:
            scores (list[Tensor]): per level (R_l, K) ranking scores, 0 where not a candidate.
            box_delta (list[Tensor]): per level (R_l, 4).
            factors (list[Tensor] or None): per level (R_l, 1), see
                :meth:`inference_scores_and_deltas`.
        """
        # Scores are > 0 exactly for candidates that passed the classification threshold.
        pred = self._decode_top_k(anchors, scores, box_delta, image_size, factors)
        # Every reference of the family clips before NMS (Errata 6): boxes sticking out of the
        # image would otherwise suppress, or survive, differently.
        pred.pred_boxes.clip(image_size)
        # A box clipped to zero width or height cannot be a detection (mmdetection drops it
        # before NMS, min_bbox_size=0; Detectron2's postprocess after): it must not take one
        # of the max_detections_per_image places.
        pred = pred[pred.pred_boxes.nonempty()]
        keep = batched_nms(
            pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh
        )
        return pred[keep[: self.max_detections_per_image]]

    def _decode_top_k(
        self,
        anchors: List[Boxes],
        scores: List[Tensor],
        box_delta: List[Tensor],
        image_size: Tuple[int, int],
        factors: Optional[List[Tensor]] = None,
    ) -> Instances:
        """
        Per level, the test_topk_candidates best candidates (scores > 0), decoded: with
        test_topk_by "location" the locations with the highest best-class score, then every
        (location, class) of those that is a candidate; with "pair" the (location, class) pairs.
        The kept scores are multiplied by their location's factor where factors are given.
        """
        per_level: List[Instances] = []
        for level, (anchors_l, scores_l, deltas_l) in enumerate(zip(anchors, scores, box_delta)):
            if self.test_topk_by == "location":
                locations = scores_l.max(dim=1).values.topk(self._num_top(scores_l)).indices
                location_scores = scores_l[locations]
                rows, classes = nonzero_tuple(location_scores > 0)
                kept = locations[rows]
                kept_scores = location_scores[rows, classes]
            else:
                candidates = torch.nonzero(scores_l > 0)  # (C, 2): location, class
                candidate_scores = scores_l[candidates[:, 0], candidates[:, 1]]
                kept_scores, order = candidate_scores.topk(self._num_top(candidate_scores))
                kept, classes = candidates[order].unbind(dim=1)
            if factors is not None:
                kept_scores = kept_scores * factors[level][kept, 0]
            boxes = self.box2box_transform.apply_deltas(deltas_l[kept], anchors_l.tensor[kept])
            per_level.append(
                Instances(
                    image_size,
                    pred_boxes=Boxes(boxes),
                    scores=kept_scores,
                    pred_classes=classes,
                )
            )
        return per_level[0].cat(per_level)  # Instances.cat is not scriptable, this is

    def _num_top(self, scores: Tensor):
        """min(test_topk_candidates, len(scores)); a tensor while tracing (as Detectron2's
        decoding), so an exported graph keeps the min for every image size."""
        size = scores.shape[0]
        if isinstance(size, Tensor):
            return torch.clamp(size, max=self.test_topk_candidates)
        return min(size, self.test_topk_candidates)


def dense_head_args(cfg, node_name: str, input_shape: List[ShapeSpec]) -> Dict:
    """The RetinaNetHead keyword arguments of an ATSS-family head, from MODEL.<node_name>."""
    node = cfg.MODEL.get(node_name)
    # Checked before the head is built: NUM_CLASSES 0 would fail as a conv weight error,
    # PRIOR_PROB 0 as a ZeroDivisionError.
    check_dense_head_args(f"MODEL.{node_name}", node.NUM_CLASSES, node.NUM_CONVS, node.PRIOR_PROB)
    num_anchors = build_anchor_generator(cfg, input_shape).num_cell_anchors
    if len(set(num_anchors)) != 1:
        raise ValueError(
            f"The {node_name} head needs the same anchor count on every level "
            f"(MODEL.ANCHOR_GENERATOR), got {num_anchors}"
        )
    return {
        "input_shape": input_shape,
        "num_classes": node.NUM_CLASSES,
        "conv_dims": [input_shape[0].channels] * node.NUM_CONVS,
        "prior_prob": node.PRIOR_PROB,
        "norm": node.NORM,
        "num_anchors": num_anchors[0],
        "tower_conv_bias": node.TOWER_CONV_BIAS,
        "dcn_on_last_conv": node.DCN_ON_LAST_CONV,
    }


def drop_tower_conv_bias(*towers: nn.Module) -> None:
    """Removes the bias of the convs of these towers (mmdetection's conv + norm ConvModules
    have none; Detectron2's RetinaNetHead always adds one): MODEL.<METHOD>.TOWER_CONV_BIAS."""
    for tower in towers:
        for module in tower.modules():
            if isinstance(module, nn.Conv2d):
                module.bias = None


def positives_sum(values: Tensor, min_value: float) -> Tensor:
    """Sum of per-positive weights averaged over workers, at least min_value: the normaliser
    of weighted box losses (METHODS.md §9.1: never 0, also without positives)."""
    return reduce_mean(values.sum().detach()).clamp(min=min_value)


def deformable_last_convs(*towers: nn.Sequential, bias: bool) -> None:
    """MODEL.<METHOD>.DCN_ON_LAST_CONV: replaces the last 3x3 conv of each tower by a DCNv2 pack
    (its own zero-initialised offset and mask conv; weight N(0, 0.01) as the tower's convs),
    keeping its index so the norm and ReLU after it stay where they are: mmdetection's
    ``dcn_on_last_conv``, official ATSS's ``USE_DCN_IN_TOWER``."""
    for tower in towers:
        index = max(i for i, m in enumerate(tower) if isinstance(m, nn.Conv2d))
        conv = tower[index]
        pack = DeformConvPack(
            conv.in_channels, conv.out_channels, kernel_size=3, padding=1, bias=bias, modulated=True
        )
        nn.init.normal_(pack.conv.weight, std=0.01)
        if pack.conv.bias is not None:
            nn.init.constant_(pack.conv.bias, 0)
        tower[index] = pack
