# Lazy twin of gfl_r101-dconv-c3-c5_fpn_ms-2x_coco.yaml: mmdetection 3.3's
# gfl_r101-dconv-c3-c5_fpn_ms-2x_coco (box AP 47.1 published): gfl_r101_fpn_ms-2x_coco with DCN v1
# in res3-res5 (d2ext's deformable bottleneck on d2ext.layers.DeformConv2d).
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import set_resnet_stages

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "gfl_r101_fpn_ms-2x_coco.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)
set_resnet_stages(model, depth=101, deform_on_per_stage=(False, True, True, True))
train.output_dir = "./output/mmdet/gfl_r101-dconv-c3-c5_fpn_ms-2x_coco"
