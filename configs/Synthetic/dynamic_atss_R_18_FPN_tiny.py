# Lazy twin of dynamic_atss_R_18_FPN_tiny.yaml.
from ..common.models.dynamic_atss import model
from ..common.tiny import shrink_to_tiny
from .atss_R_18_FPN_tiny import dataloader, lr_multiplier, optimizer, train  # noqa: F401

shrink_to_tiny(model)
model.ciou_schedule_iters = train.max_iter
train.output_dir = "./output/dynamic_atss_R_18_FPN_tiny_lazy"
