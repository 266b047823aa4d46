# Lazy twin of gfocal_r50_fpn_1x.yaml: implus/GFocalV2's gfocal_r50_fpn_1x (GFL v2 R-50 1x, box AP
# 41.0 published in its README), loading that repo's checkpoint converted on load.
from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from .gfl_r50_fpn_1x_coco import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

# GFocalHead(reg_topk=4, reg_channels=64, add_mean=True).
model.head.dgqp = True
model.head.dgqp_topk = 4
model.head.dgqp_channels = 64
model.head.dgqp_add_mean = True
# The GFocal repos: W not clamped at 1, plain IoU target; top-k over locations.
model.loc_weight_sum_min = 0.0
model.quality_iou_plus_one = False
model.test_topk_by = "location"

train.output_dir = "./output/mmdet/gfocal_r50_fpn_1x"
