# Lazy twin of libra-faster-rcnn_x101-64x4d_fpn_1x_coco.yaml: mmdetection 3.3's
# libra-faster-rcnn_x101-64x4d_fpn_1x_coco (box AP 42.7 published): libra-faster-rcnn_r50_fpn_1x_coco
# with ResNeXt-101 64x4d.
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import IMAGENET_WEIGHTS, set_resnet_stages

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "libra-faster-rcnn_r50_fpn_1x_coco.py",
    ("dataloader", "lr_multiplier", "model", "optimizer", "train"),
)
set_resnet_stages(model, depth=101, groups=64, width_per_group=4)
train.init_checkpoint = IMAGENET_WEIGHTS["x101-64x4d"]
train.output_dir = "./output/mmdet/libra-faster-rcnn_x101-64x4d_fpn_1x_coco"
