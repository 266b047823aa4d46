# Lazy twin of gfl_R_18_FPN_tiny.yaml.
from ..common.models.gfl import model
from ..common.tiny import shrink_to_tiny
from .atss_R_18_FPN_tiny import dataloader, lr_multiplier, optimizer, train  # noqa: F401

shrink_to_tiny(model)
model.quality_iou_plus_one = True  # as GFL/gfl_R_50_FPN_1x (the GFL v1 repo)
train.output_dir = "./output/gfl_R_18_FPN_tiny_lazy"
