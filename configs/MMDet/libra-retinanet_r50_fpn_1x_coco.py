# Lazy twin of libra-retinanet_r50_fpn_1x_coco.yaml: mmdetection 3.3's libra-retinanet_r50_fpn_1x_coco
# (box AP 37.6 published): mmdetection's RetinaNet R-50-FPN 1x with the balanced feature pyramid and
# the balanced L1 box loss (d2ext's LibraRetinaNet), loading its checkpoint converted on load and
# training with its recipe (atss_r50_fpn_1x_coco's data and schedule: mmdetection's R-50 1x).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from d2ext.modeling.backbone import (
    FPN,
    BalancedFeaturePyramid,
    LastLevelP6P7,
    train_frozen_bn_affine,
)
from d2ext.modeling.meta_arch.libra_retinanet import LibraRetinaNet, MMDetAnchorGenerator

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import mmdet_resnet_stages
from .atss_r50_fpn_1x_coco import dataloader, lr_multiplier, optimizer, train  # noqa: F401

model = get_config("common/models/retinanet.py").model
model._target_ = LibraRetinaNet

# torchvision-style R-50 (stride on the 3x3 conv), BN in eval mode with trainable scale/bias,
# stem + res2 frozen.
fpn = model.backbone
resnet = fpn.bottom_up
resnet.stem.norm = "FrozenBN"
resnet.stages = mmdet_resnet_stages(depth=50)
resnet.freeze_at = 2
fpn.bottom_up = L(train_frozen_bn_affine)(resnet=resnet, freeze_at=2)
# FPN C3-C5, P6 = conv(C5), P7 = conv(P6) without ReLU (add_extra_convs='on_input'), images
# padded to 32; then the BFP over P3-P7, refine level 1 (P4), non-local.
fpn._target_ = FPN
fpn.in_features = ["res3", "res4", "res5"]
fpn.size_divisibility = 32
fpn.top_block = L(LastLevelP6P7)(
    in_channels=2048,
    out_channels=256,
    in_feature="res5",
    relu_before_p6=False,
    relu_before_p7=False,
)
model.backbone = L(BalancedFeaturePyramid)(fpn=fpn, refine_level=1, refine_type="non_local")

# 9 anchors per location in mmdetection's order (ratio major), centres at x * stride.
model.anchor_generator._target_ = MMDetAnchorGenerator
model.anchor_generator.offset = 0.0
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"

# BalancedL1Loss(alpha=0.5, gamma=1.5, beta=0.11) on the deltas; losses / the batch's positives;
# anchors beyond each image's own 32-padding ignored in training.
model.box_reg_loss_type = "balanced_l1"
model.balanced_l1_alpha = 0.5
model.balanced_l1_gamma = 1.5
model.balanced_l1_beta = 0.11
model.loss_normalizer = "num_pos"
model.valid_anchors_pad_divisor = 32
# test_cfg: 1000 pairs per level above 0.05, boxes clipped (empty dropped) before NMS 0.5, 100.
model.test_score_thresh = 0.05
model.test_topk_candidates = 1000
model.test_nms_thresh = 0.5
model.max_detections_per_image = 100
model.clip_before_nms = True

train.output_dir = "./output/mmdet/libra-retinanet_r50_fpn_1x_coco"
