# Lazy twin of gfl_x101-32x4d_fpn_ms-2x_coco.yaml: mmdetection 3.3's gfl_x101-32x4d_fpn_ms-2x_coco
# (box AP 45.9 published): gfl_r50_fpn_ms-2x_coco with ResNeXt-101 32x4d.
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import IMAGENET_WEIGHTS, set_resnet_stages

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "gfl_r50_fpn_ms-2x_coco.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)
set_resnet_stages(model, depth=101, groups=32, width_per_group=4)
train.init_checkpoint = IMAGENET_WEIGHTS["x101-32x4d"]
train.output_dir = "./output/mmdet/gfl_x101-32x4d_fpn_ms-2x_coco"
