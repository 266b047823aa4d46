# Lazy twin of vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco.yaml: mmdetection 3.3's
# vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco (box AP 48.0 published): vfnet_r50_fpn_ms-2x_coco with DCNv2
# in res3-res5 and as the last conv of both head towers (dcn_on_last_conv).
from detectron2.config import LazyConfig

from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import set_resnet_stages

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "vfnet_r50_fpn_ms-2x_coco.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)
set_resnet_stages(
    model, depth=50, deform_on_per_stage=(False, True, True, True), deform_modulated=True
)
model.head.dcn_on_last_conv = True
train.output_dir = "./output/mmdet/vfnet_r50-mdconv-c3-c5_fpn_ms-2x_coco"
