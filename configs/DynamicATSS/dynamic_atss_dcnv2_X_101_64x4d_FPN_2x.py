# Lazy twin of dynamic_atss_dcnv2_X_101_64x4d_FPN_2x.yaml: DynamicATSS with ResNeXt-101 64x4d and
# DCNv2 in res4-res5, 2x with the short side drawn from 640..800 (the released code's strongest
# config, DCNv2 as the last conv of both head towers; no paper number found, see the yaml).
from detectron2.config import LazyCall as L

from d2ext.modeling.backbone import make_resnet_stages

from ..common.schedules import step_schedule
from .dynamic_atss_R_50_FPN_1x import dataloader, model, optimizer, train  # noqa: F401

model.backbone.bottom_up.stages = L(make_resnet_stages)(
    depth=101,
    num_groups=64,
    width_per_group=4,
    stride_in_1x1=False,
    norm="FrozenBN",
    deform_on_per_stage=[False, False, True, True],
    deform_modulated=True,
    deform_num_groups=1,
)
model.head.dcn_on_last_conv = True  # ATSS.USE_DCN_IN_TOWER
dataloader.train.mapper.augmentations[0].short_edge_length = (640, 800)
dataloader.train.mapper.augmentations[0].sample_style = "range"
dataloader.train.mapper.augmentations[0].max_size = 1333

# 2x: 180k iterations at batch 16, x0.1 at 120k and 160k, constant warmup (1/3, 500 iterations).
lr_multiplier = step_schedule(180000, [120000, 160000])
train.max_iter = 180000
# The length of the (ablation-only) CIoU weight schedules follows SOLVER.MAX_ITER in the yaml.
model.ciou_schedule_iters = 180000
train.init_checkpoint = "catalog://ImageNetPretrained/FAIR/X-101-64x4d"
train.output_dir = "./output/dynamic_atss_dcnv2_X_101_64x4d_FPN_2x"
