# Lazy twin of atss_vfl_R_50_FPN_1x.yaml: ATSS R-50-FPN 1x with the varifocal loss.
from ..ATSS.atss_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.cls_loss = "VFL"
# The VFNet repo's (mmdetection 2) ATSS: no ReLU before P7, anchor centres at x * stride.
model.backbone.top_block.relu_before_p7 = False
model.anchor_generator.offset = 0.0
model.vfl_alpha = 0.75
model.vfl_gamma = 2.0
train.output_dir = "./output/atss_vfl_R_50_FPN_1x"
