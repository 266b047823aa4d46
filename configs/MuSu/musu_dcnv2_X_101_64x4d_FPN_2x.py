# Lazy twin of musu_dcnv2_X_101_64x4d_FPN_2x.yaml: MuSu (reconstruction) with ResNeXt-101 64x4d,
# DCNv2 in res4-res5 and as the last conv of both head towers, 2x with the short side drawn from
# 640..800 (ATSS's strongest recipe; the paper's own setting and number were not found, see the
# yaml); linear warmup from 1/3 over 500 iterations.
from ..common.atss_dcnv2_x101_2x import apply_atss_dcnv2_x101_2x
from .musu_R_50_FPN_1x import dataloader, model, optimizer, train  # noqa: F401

lr_multiplier = apply_atss_dcnv2_x101_2x(
    model, dataloader, train, "./output/musu_dcnv2_X_101_64x4d_FPN_2x"
)
lr_multiplier.warmup_method = "linear"
