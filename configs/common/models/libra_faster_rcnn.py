# Libra R-CNN (METHODS.md §7) as a lazy graph over Faster R-CNN: the FPN wrapped in a balanced
# feature pyramid, an RPN with negatives <= 5 x positives (losses divided by the anchors sampled),
# Libra sampling, balanced L1.
from detectron2.config import LazyCall as L

from d2ext.modeling import (
    BalancedFeaturePyramid,
    LibraFastRCNNOutputLayers,
    LibraROIHeads,
    LibraRPN,
)

from .faster_rcnn import model


def to_libra(model):
    """Turns a lazy Faster R-CNN FPN graph into Libra R-CNN in place (paper settings)."""
    model.backbone = L(BalancedFeaturePyramid)(
        fpn=model.backbone,
        refine_level=2,
        refine_type="non_local",  # P4 of P2-P6
    )
    model.proposal_generator._target_ = LibraRPN
    # Anchor centres at x * stride, as mmdetection v2/v3 (center_offset=0), whose Libra config and
    # checkpoint we follow; the Libra repo (mmdet v1) puts them at x * stride + (stride - 1) / 2.
    model.proposal_generator.anchor_generator.offset = 0.0
    model.proposal_generator.neg_pos_ub = 5  # mmdet's RPN sampler: also losses / anchors sampled

    model.roi_heads._target_ = LibraROIHeads
    model.roi_heads.iou_balanced_neg = True
    model.roi_heads.num_iou_bins = 3
    # mmdet's config says floor_thr=-1, but its IoUBalancedNegSampler turns -1 into 0 on the first
    # call (the Libra repo's final config says 0): IoU-0 negatives only top up the IoU > 0 bins.
    model.roi_heads.floor_thresh = 0.0
    model.roi_heads.floor_fraction = 0.0
    model.roi_heads.instance_balanced_pos = True

    predictor = model.roi_heads.box_predictor
    predictor._target_ = LibraFastRCNNOutputLayers
    predictor.box_reg_loss_type = "balanced_l1"
    predictor.balanced_l1_alpha = 0.5
    predictor.balanced_l1_gamma = 1.5
    predictor.balanced_l1_beta = 1.0
    return model


model = to_libra(model)
# 2000 proposals per image in training, 1000 in testing: the Libra repository (mmdetection 1.x);
# mmdetection 2.x/3.x keep 1000 after NMS (configs/MMDet/libra-faster-rcnn_r50_fpn_1x_coco).
model.proposal_generator.post_nms_topk = (2000, 1000)
