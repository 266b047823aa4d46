# Lazy twin of musu_direct_R_18_FPN_tiny.yaml.
from .musu_R_18_FPN_tiny import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.mix_lambda = 0.0
train.output_dir = "./output/musu_direct_R_18_FPN_tiny_lazy"
