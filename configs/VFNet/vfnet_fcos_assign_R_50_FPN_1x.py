# Lazy twin of vfnet_fcos_assign_R_50_FPN_1x.yaml: VFNet R-50-FPN 1x with FCOS's assignment (no
# centre sampling) of points at stride / 2, the official USE_ATSS=False option.
from .vfnet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.anchor_generator.offset = 0.5
model.use_atss = False
model.fcos_size_bounds = [64.0, 128.0, 256.0, 512.0]
train.output_dir = "./output/vfnet_fcos_assign_R_50_FPN_1x"
