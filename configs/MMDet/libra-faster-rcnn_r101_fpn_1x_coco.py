# Lazy twin of libra-faster-rcnn_r101_fpn_1x_coco.yaml: mmdetection 3.3's
# libra-faster-rcnn_r101_fpn_1x_coco (box AP 40.1 published): libra-faster-rcnn_r50_fpn_1x_coco with
# ResNet-101.
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import IMAGENET_WEIGHTS, set_resnet_stages

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "libra-faster-rcnn_r50_fpn_1x_coco.py",
    ("dataloader", "lr_multiplier", "model", "optimizer", "train"),
)
set_resnet_stages(model, depth=101)
train.init_checkpoint = IMAGENET_WEIGHTS["r101"]
train.output_dir = "./output/mmdet/libra-faster-rcnn_r101_fpn_1x_coco"
