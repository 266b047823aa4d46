from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator import RPN
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import Tensor

from d2ext.layers.precision import float32_region

from ..input_checks import drop_degenerate_gt_boxes
from ..sampling import libra_subsample_labels


@PROPOSAL_GENERATOR_REGISTRY.register()
class LibraRPN(RPN):
    """
    Detectron2's RPN with Libra R-CNN's RPN sampler (mmdet's RandomSampler with neg_pos_ub = 5,
    METHODS.md §7.5; Detectron2 has no such bound): the negatives are capped at `neg_pos_ub` per
    sampled positive (at least one), and both RPN losses (objectness and box) are divided by the
    number of anchors actually sampled, as mmdet's anchor head does with a sampler
    (avg_factor = num_total_pos + num_total_neg, each image counting at least 1 + 1), not by
    Detectron2's fixed batch_size_per_image x #images. neg_pos_ub = -1 is Detectron2's RPN exactly.
    """

    @configurable
    def __init__(self, *, neg_pos_ub: int = -1, valid_anchors_pad_divisor: int = 0, **kwargs):
        """
        Args:
            valid_anchors_pad_divisor (int): in training, anchors whose grid location lies beyond
                the image's own size rounded up to this are ignored (mmdetection's valid_flags,
                MODEL.RPN.VALID_ANCHORS_PAD_DIVISOR); 0 = every anchor of the padded batch is
                labelled (Detectron2).
        """
        super().__init__(**kwargs)
        if neg_pos_ub < 0 and neg_pos_ub != -1:
            raise ValueError(f"MODEL.LIBRA.RPN_NEG_POS_UB must be >= 0 or -1, got {neg_pos_ub}")
        if valid_anchors_pad_divisor < 0:
            raise ValueError(
                f"MODEL.RPN.VALID_ANCHORS_PAD_DIVISOR must be >= 0, got {valid_anchors_pad_divisor}"
            )
        self.neg_pos_ub = neg_pos_ub
        self.valid_anchors_pad_divisor = valid_anchors_pad_divisor

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["neg_pos_ub"] = cfg.MODEL.LIBRA.RPN_NEG_POS_UB
        ret["valid_anchors_pad_divisor"] = cfg.MODEL.RPN.VALID_ANCHORS_PAD_DIVISOR
        return ret

    # Not a forward override (TorchScript has no super() call): the ground truth is only read here.
    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        # Zero-width / inverted GT boxes: log(0) box targets (inf/NaN loss); dropped as the ATSS
        # family ignores them.
        gt_instances = drop_degenerate_gt_boxes(gt_instances, "LibraRPN")
        if not self.valid_anchors_pad_divisor:
            return super().label_and_sample_anchors(anchors, gt_instances)
        # Detectron2's method with the anchors outside each image's padded size ignored before
        # sampling (mmdetection assigns and samples only the valid anchors).
        num_per_level = [len(a) for a in anchors]
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for gt_i in gt_instances:
            gt_boxes_i = gt_i.gt_boxes
            valid = valid_anchor_mask(
                anchors.tensor,
                num_per_level,
                self.anchor_generator.strides,
                self.anchor_generator.offset,
                gt_i.image_size,
                self.valid_anchors_pad_divisor,
            )
            iou = pairwise_iou(gt_boxes_i, anchors)
            if len(gt_boxes_i):
                iou[:, ~valid] = 0.0  # not a low-quality match (Matcher needs IoU >= 0)
            matched_idxs, labels_i = self.anchor_matcher(iou)
            labels_i = labels_i.to(device=gt_boxes_i.device)
            labels_i[~valid] = -1
            if self.anchor_boundary_thresh >= 0:
                labels_i[~anchors.inside_box(gt_i.image_size, self.anchor_boundary_thresh)] = -1
            gt_labels.append(self._subsample_labels(labels_i))
            matched_gt_boxes.append(
                gt_boxes_i[matched_idxs].tensor
                if len(gt_boxes_i)
                else torch.zeros_like(anchors.tensor)
            )
        return gt_labels, matched_gt_boxes

    def _subsample_labels(self, label):
        pos_idx, neg_idx = libra_subsample_labels(
            label,
            self.batch_size_per_image,
            self.positive_fraction,
            0,
            iou_balanced_neg=False,
            instance_balanced_pos=False,
            neg_pos_ub=self.neg_pos_ub,
        )
        label.fill_(-1)
        label.scatter_(0, pos_idx, 1)
        label.scatter_(0, neg_idx, 0)
        return label

    # Under AMP the RPN losses run in float32 on float32 head outputs.
    @float32_region("pred_objectness_logits", "pred_anchor_deltas")
    def losses(self, anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        losses = super().losses(
            anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes
        )
        if self.neg_pos_ub < 0:
            return losses
        # Detectron2 divides by batch_size_per_image * N; with the bound far fewer anchors may be
        # sampled (e.g. 2 positives -> 12 anchors), and mmdet divides by that count (per image
        # max(#pos, 1) + max(#neg, 1), summed over the batch).
        labels = torch.stack(gt_labels)
        num_pos = (labels == 1).sum(dim=1).clamp(min=1)
        num_neg = (labels == 0).sum(dim=1).clamp(min=1)
        scale = self.batch_size_per_image * len(gt_labels) / (num_pos + num_neg).sum()
        return {k: v * scale for k, v in losses.items()}


def valid_anchor_mask(anchors, num_anchors_per_level, strides, offset, image_size, divisor):
    """
    (R,) bool: the anchors whose grid location lies inside ``image_size`` rounded up to
    ``divisor`` (mmdetection's AnchorGenerator.valid_flags with the image's own pad_shape).
    """
    pad_h, pad_w = (-(-int(size) // divisor) * divisor for size in image_size)
    stride = torch.cat(
        [
            torch.full((n,), float(s), device=anchors.device)
            for n, s in zip(num_anchors_per_level, strides)
        ]
    )
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    # Grid index of each anchor: its centre is at (index + offset) * stride.
    index = torch.floor(centers / stride[:, None] - offset + 0.5)
    limit = torch.stack([torch.ceil(pad_w / stride), torch.ceil(pad_h / stride)], dim=1)
    return (index < limit).all(dim=1)
