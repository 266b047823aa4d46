# Lazy twin of musu_R_50_FPN_1x.yaml: MuSu (reconstruction) R-50-FPN, COCO 1x; linear warmup
# from 1/3 over 500 iterations.
from ..ATSS.atss_R_50_FPN_1x import dataloader, lr_multiplier, optimizer, train  # noqa: F401
from ..common.models.musu import model

model.backbone.bottom_up.freeze_at = 2
lr_multiplier.warmup_method = "linear"
train.output_dir = "./output/musu_R_50_FPN_1x"
