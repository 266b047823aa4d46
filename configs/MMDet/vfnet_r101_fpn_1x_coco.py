# Lazy twin of vfnet_r101_fpn_1x_coco.yaml: mmdetection 3.3's vfnet_r101_fpn_1x_coco (box AP 43.6
# published): vfnet_r50_fpn_1x_coco with ResNet-101.
from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import IMAGENET_WEIGHTS, set_resnet_stages
from .vfnet_r50_fpn_1x_coco import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

set_resnet_stages(model, depth=101)
train.init_checkpoint = IMAGENET_WEIGHTS["r101"]
train.output_dir = "./output/mmdet/vfnet_r101_fpn_1x_coco"
