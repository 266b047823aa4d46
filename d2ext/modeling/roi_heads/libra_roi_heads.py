from typing import List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Instances, pairwise_iou
from detectron2.utils.events import get_event_storage
from torch.jit import Final

from ..input_checks import check_gt_classes, drop_degenerate_gt_boxes
from ..sampling import iou_bin_index, libra_subsample_labels
from .libra_fast_rcnn import LibraFastRCNNOutputLayers


@ROI_HEADS_REGISTRY.register()
class LibraROIHeads(StandardROIHeads):
    """
    StandardROIHeads with Libra R-CNN's proposal sampling (Pang et al., CVPR 2019, §3.1;
    METHODS.md §7.1-7.2): IoU-balanced negatives and instance-balanced positives, each switchable
    (off = Detectron2's uniform sampling), and a box predictor that can use balanced L1
    (`LibraFastRCNNOutputLayers`). Only the labelling/sampling step is overridden, because it is
    where each proposal's max IoU (the negative's bin) is known; the rest is Detectron2's.

    Logs per iteration (mean per image): the sampled negatives in each of NUM_IOU_BINS IoU bins
    over [0, max IoU) (`roi_head/num_neg_iou_bin<k>`, also with random sampling, for comparison),
    the GTs the positives cover and the most positives any single GT got.
    """

    # Constants for TorchScript, so that the absent mask / keypoint branches are compiled away:
    # Detectron2's scripting annotates StandardROIHeads so, and a subclass with annotations of
    # its own (scripting_with_instances adds "training") does not inherit them.
    mask_on: Final[bool]
    keypoint_on: Final[bool]

    @configurable
    def __init__(
        self,
        *,
        iou_balanced_neg: bool = True,
        num_iou_bins: int = 3,
        floor_thresh: float = 0.0,
        floor_fraction: float = 0.0,
        instance_balanced_pos: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_iou_bins < 1:
            raise ValueError(f"MODEL.LIBRA.NUM_IOU_BINS must be >= 1, got {num_iou_bins}")
        if not (floor_thresh >= 0 or floor_thresh == -1):
            raise ValueError(f"MODEL.LIBRA.FLOOR_THRESH must be >= 0 or -1, got {floor_thresh}")
        if not 0.0 <= floor_fraction <= 1.0:
            raise ValueError(f"MODEL.LIBRA.FLOOR_FRACTION must be in [0, 1], got {floor_fraction}")
        self.iou_balanced_neg = iou_balanced_neg
        self.num_iou_bins = num_iou_bins
        self.floor_thresh = floor_thresh
        self.floor_fraction = floor_fraction
        self.instance_balanced_pos = instance_balanced_pos

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        libra = cfg.MODEL.LIBRA
        ret.update(
            iou_balanced_neg=libra.IOU_BALANCED_NEG,
            num_iou_bins=libra.NUM_IOU_BINS,
            floor_thresh=libra.FLOOR_THRESH,
            floor_fraction=libra.FLOOR_FRACTION,
            instance_balanced_pos=libra.INSTANCE_BALANCED_POS,
        )
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = LibraFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    def _sample_proposals_with_ious(self, matched_idxs, matched_labels, max_ious, gt_classes):
        """Detectron2's `_sample_proposals`, drawing with `libra_subsample_labels`."""
        if gt_classes.numel() > 0:
            gt_classes = gt_classes[matched_idxs]
            gt_classes[matched_labels == 0] = self.num_classes
            gt_classes[matched_labels == -1] = -1
        else:
            gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
        fg_idxs, bg_idxs = libra_subsample_labels(
            gt_classes,
            self.batch_size_per_image,
            self.positive_fraction,
            self.num_classes,
            max_ious=max_ious,
            matched_idxs=matched_idxs,
            iou_balanced_neg=self.iou_balanced_neg,
            num_bins=self.num_iou_bins,
            floor_thresh=self.floor_thresh,
            floor_fraction=self.floor_fraction,
            instance_balanced_pos=self.instance_balanced_pos,
        )
        sampled_idxs = torch.cat([fg_idxs, bg_idxs], dim=0)
        return sampled_idxs, gt_classes[sampled_idxs]

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: List[Instances], targets: List[Instances]
    ) -> List[Instances]:
        """Detectron2's method (same outputs and fields), with Libra sampling and its stats."""
        # A class >= NUM_CLASSES would index past the box predictor's logits in the loss.
        check_gt_classes(
            targets, self.num_classes, "MODEL.ROI_HEADS.NUM_CLASSES (model.roi_heads.num_classes)"
        )
        # Zero-width / inverted GT boxes would be added as proposals with log(0) box targets.
        targets = drop_degenerate_gt_boxes(targets, "LibraROIHeads")
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        proposals_with_gt = []
        stats = []
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            has_gt = len(targets_per_image) > 0
            iou = pairwise_iou(targets_per_image.gt_boxes, proposals_per_image.proposal_boxes)
            matched_idxs, matched_labels = self.proposal_matcher(iou)
            # Max IoU of every proposal (0 without GT): the negatives' IoU bins need it.
            max_ious = iou.max(dim=0).values if has_gt else iou.new_zeros(len(proposals_per_image))
            sampled_idxs, gt_classes = self._sample_proposals_with_ious(
                matched_idxs, matched_labels, max_ious, targets_per_image.gt_classes
            )
            proposals_per_image = proposals_per_image[sampled_idxs]
            proposals_per_image.gt_classes = gt_classes
            if has_gt:
                sampled_targets = matched_idxs[sampled_idxs]
                for trg_name, trg_value in targets_per_image.get_fields().items():
                    if trg_name.startswith("gt_") and not proposals_per_image.has(trg_name):
                        proposals_per_image.set(trg_name, trg_value[sampled_targets])
            stats.append(self._sampling_stats(gt_classes, sampled_idxs, matched_idxs, max_ious))
            proposals_with_gt.append(proposals_per_image)

        storage = get_event_storage()
        for key in stats[0]:
            storage.put_scalar(f"roi_head/{key}", np.mean([s[key] for s in stats]))
        return proposals_with_gt

    def _sampling_stats(self, gt_classes, sampled_idxs, matched_idxs, max_ious):
        bg = gt_classes == self.num_classes
        fg = (gt_classes >= 0) & ~bg
        num_bins = max(self.num_iou_bins, 2)
        upper = max_ious.max() if max_ious.numel() else max_ious.new_tensor(1.0)
        bins = iou_bin_index(max_ious[sampled_idxs[bg]], upper, num_bins)
        bin_counts = torch.bincount(bins[bins >= 0], minlength=num_bins).tolist()
        per_gt = torch.bincount(matched_idxs[sampled_idxs[fg]]) if fg.any() else bins.new_zeros(1)
        stats = {"num_fg_samples": int(fg.sum()), "num_bg_samples": int(bg.sum())}
        stats.update({f"num_neg_iou_bin{k}": c for k, c in enumerate(bin_counts)})
        stats["num_gt_with_pos_samples"] = int((per_gt > 0).sum())
        stats["max_pos_samples_per_gt"] = int(per_gt.max())
        return stats
