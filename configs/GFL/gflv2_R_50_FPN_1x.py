# Lazy twin of gflv2_R_50_FPN_1x.yaml: GFL v2 R-50-FPN, COCO 1x (41.0 AP minival in the paper's
# README): plain SGD (no bias LR x2), linear warmup from 0.001 over 500 iterations.
from ..ATSS.atss_R_50_FPN_1x import dataloader, lr_multiplier, optimizer, train  # noqa: F401
from ..common.models.gfl import model

model.backbone.bottom_up.freeze_at = 2
model.head.dgqp = True
optimizer.params.bias_lr_factor = 1.0
optimizer.params.weight_decay_bias = None
lr_multiplier.warmup_method = "linear"
lr_multiplier.warmup_factor = 0.001
train.output_dir = "./output/gflv2_R_50_FPN_1x"
