# Lazy twin of gfl_r50_fpn_1x_coco.yaml: mmdetection 3.3's gfl_r50_fpn_1x_coco (box AP 40.2
# published), loading its checkpoint converted on load and training with its recipe.
from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.gfl import model
from ..common.models.mmdet_backbone import mmdet_r50_fpn
from .atss_r50_fpn_1x_coco import dataloader, lr_multiplier, optimizer, train  # noqa: F401

# P7 = conv(P6), no ReLU (relu_before_extra_convs=False, METHODS.md Errata 3).
mmdet_r50_fpn(model, relu_before_p6=False, relu_before_p7=False)
# mmdetection: W clamped at 1, plain IoU as QFL target; top-k over (location, class) pairs.
model.loc_weight_sum_min = 1.0
model.quality_iou_plus_one = False
model.test_topk_by = "pair"

train.output_dir = "./output/mmdet/gfl_r50_fpn_1x_coco"
