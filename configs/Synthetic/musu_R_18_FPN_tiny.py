# Lazy twin of musu_R_18_FPN_tiny.yaml.
from ..common.models.musu import model
from ..common.tiny import shrink_to_tiny
from .atss_R_18_FPN_tiny import dataloader, lr_multiplier, optimizer, train  # noqa: F401

shrink_to_tiny(model)
model.warmup_iters = 100
train.output_dir = "./output/musu_R_18_FPN_tiny_lazy"
