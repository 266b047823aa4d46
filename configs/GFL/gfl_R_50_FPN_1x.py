# Lazy twin of gfl_R_50_FPN_1x.yaml: GFL v1 R-50-FPN, COCO 1x (40.2 AP minival in the paper's
# README); linear warmup from 1/3 over 500 iterations.
from ..ATSS.atss_R_50_FPN_1x import dataloader, lr_multiplier, optimizer, train  # noqa: F401
from ..common.models.gfl import model

model.backbone.bottom_up.freeze_at = 2
model.quality_iou_plus_one = True  # the GFL v1 repo's iou_target
lr_multiplier.warmup_method = "linear"
train.output_dir = "./output/gfl_R_50_FPN_1x"
