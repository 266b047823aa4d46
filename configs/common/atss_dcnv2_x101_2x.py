# The strongest single-model recipe of the ATSS code base (sfzhang15/ATSS
# ATSS_dcnv2_X_101_64x4d_FPN_2x, which DynamicATSS's released dcnv2 config copies), applied to an
# ATSS-family lazy config: ResNeXt-101 64x4d (stride in the 3x3 conv, Detectron's FAIR ImageNet
# weights) with DCNv2 in every block of res4-res5 and as the last conv of both head towers
# (USE_DCN_IN_TOWER), short side drawn from 640..800 (long side <= 1333), 2x: 180k iterations at
# batch 16, x0.1 at 120k and 160k.
from detectron2.config import LazyCall as L

from d2ext.modeling.backbone import make_resnet_stages

from .schedules import step_schedule

MAX_ITER = 180000


def apply_atss_dcnv2_x101_2x(model, dataloader, train, output_dir):
    """Sets the recipe on `model`, `dataloader` and `train`; returns its lr_multiplier."""
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
    resize = dataloader.train.mapper.augmentations[0]
    resize.short_edge_length, resize.sample_style, resize.max_size = (640, 800), "range", 1333
    train.max_iter = MAX_ITER
    train.init_checkpoint = "catalog://ImageNetPretrained/FAIR/X-101-64x4d"
    train.output_dir = output_dir
    return step_schedule(MAX_ITER, [120000, 160000])
