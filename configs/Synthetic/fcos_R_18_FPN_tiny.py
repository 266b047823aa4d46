# Detectron2's FCOS (its lazy common/models/fcos.py: GN head, P6/P7 from P5, centre sampling,
# score threshold 0.2 on sqrt(cls x centerness)) at the size and with the recipe of the tiny
# ATSS config: a baseline of tools/compare_methods.py. Lazy only: Detectron2 has no yaml FCOS.
from detectron2.model_zoo import get_config

from ..common.tiny import shrink_to_tiny
from .atss_R_18_FPN_tiny import dataloader, lr_multiplier, optimizer, train  # noqa: F401

model = get_config("common/models/fcos.py").model
shrink_to_tiny(model)
model.backbone.top_block.in_channels = 64  # P6 from the 64-channel P5
train.output_dir = "./output/fcos_R_18_FPN_tiny_lazy"
