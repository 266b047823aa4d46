# Lazy twin of gfl_r101_fpn_ms-2x_coco.yaml: mmdetection 3.3's gfl_r101_fpn_ms-2x_coco (box AP 44.7
# published): gfl_r50_fpn_ms-2x_coco with ResNet-101.
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import IMAGENET_WEIGHTS, set_resnet_stages

# (load_rel: a file name with "-" cannot be imported.)
dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "gfl_r50_fpn_ms-2x_coco.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)
set_resnet_stages(model, depth=101)
train.init_checkpoint = IMAGENET_WEIGHTS["r101"]
train.output_dir = "./output/mmdet/gfl_r101_fpn_ms-2x_coco"
