# Lazy twin of gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco.yaml: mmdetection 3.3's
# gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco (box AP 48.1 published): gfl_x101-32x4d_fpn_ms-2x_coco
# with DCN v1 (32 weight groups) in res4-res5.
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import set_resnet_stages

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "gfl_x101-32x4d_fpn_ms-2x_coco.py",
    ("dataloader", "lr_multiplier", "model", "optimizer", "train"),
)
set_resnet_stages(
    model, depth=101, groups=32, width_per_group=4, deform_on_per_stage=(False, False, True, True)
)
train.output_dir = "./output/mmdet/gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco"
