# Lazy twin of vfnet_R_18_FPN_tiny.yaml.
from ..common.models.vfnet import model
from ..common.tiny import shrink_to_tiny
from .atss_R_18_FPN_tiny import dataloader, lr_multiplier, optimizer, train  # noqa: F401

shrink_to_tiny(model)
train.output_dir = "./output/vfnet_R_18_FPN_tiny_lazy"
