# Lazy twin of vfnet_r101-mdconv-c3-c5_fpn_ms-2x_coco.yaml: mmdetection 3.3's
# vfnet_r101-mdconv-c3-c5_fpn_ms-2x_coco (box AP 49.2 published): vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco
# with ResNet-101.
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import IMAGENET_WEIGHTS, set_resnet_stages

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco.py",
    ("dataloader", "lr_multiplier", "model", "optimizer", "train"),
)
set_resnet_stages(
    model, depth=101, deform_on_per_stage=(False, True, True, True), deform_modulated=True
)
train.init_checkpoint = IMAGENET_WEIGHTS["r101"]
train.output_dir = "./output/mmdet/vfnet_r101-mdconv-c3-c5_fpn_ms-2x_coco"
