# Lazy twin of vfnet_x101-64x4d-mdconv-c3-c5_fpn_ms-2x_coco.yaml: mmdetection 3.3's
# vfnet_x101-64x4d-mdconv-c3-c5_fpn_ms-2x_coco (box AP 50.8 published):
# vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco with ResNeXt-101 64x4d.
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import IMAGENET_WEIGHTS, set_resnet_stages

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco.py",
    ("dataloader", "lr_multiplier", "model", "optimizer", "train"),
)
set_resnet_stages(
    model,
    depth=101,
    groups=64,
    width_per_group=4,
    deform_on_per_stage=(False, True, True, True),
    deform_modulated=True,
)
train.init_checkpoint = IMAGENET_WEIGHTS["x101-64x4d"]
train.output_dir = "./output/mmdet/vfnet_x101-64x4d-mdconv-c3-c5_fpn_ms-2x_coco"
