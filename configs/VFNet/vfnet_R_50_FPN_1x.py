# Lazy twin of vfnet_R_50_FPN_1x.yaml: VFNet R-50-FPN, COCO 1x without SWA (41.6 AP val in the
# paper's README); linear warmup from 0.1 over 500 iterations.
from ..ATSS.atss_R_50_FPN_1x import dataloader, lr_multiplier, optimizer, train  # noqa: F401
from ..common.models.vfnet import model

model.backbone.bottom_up.freeze_at = 2
lr_multiplier.warmup_method = "linear"
lr_multiplier.warmup_factor = 0.1
train.output_dir = "./output/vfnet_R_50_FPN_1x"
