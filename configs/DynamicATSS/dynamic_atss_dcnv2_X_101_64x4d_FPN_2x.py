# Lazy twin of dynamic_atss_dcnv2_X_101_64x4d_FPN_2x.yaml: DynamicATSS with ResNeXt-101 64x4d, DCNv2
# in res4-res5 and as the last conv of both head towers, 2x with the short side drawn from 640..800
# (the released code's strongest config; no paper number found, see the yaml).
from ..common.atss_dcnv2_x101_2x import MAX_ITER, apply_atss_dcnv2_x101_2x
from .dynamic_atss_R_50_FPN_1x import dataloader, model, optimizer, train  # noqa: F401

# Constant warmup (1/3, 500 iterations), as the R-50 config.
lr_multiplier = apply_atss_dcnv2_x101_2x(
    model, dataloader, train, "./output/dynamic_atss_dcnv2_X_101_64x4d_FPN_2x"
)
# The length of the (ablation-only) CIoU weight schedules follows SOLVER.MAX_ITER in the yaml.
model.ciou_schedule_iters = MAX_ITER
