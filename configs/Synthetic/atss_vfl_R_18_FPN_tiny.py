# Lazy twin of atss_vfl_R_18_FPN_tiny.yaml.
from .atss_R_18_FPN_tiny import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.cls_loss = "VFL"
model.backbone.top_block.relu_before_p7 = False
model.anchor_generator.offset = 0.0
model.vfl_alpha = 0.75
model.vfl_gamma = 2.0
train.output_dir = "./output/atss_vfl_R_18_FPN_tiny_lazy"
