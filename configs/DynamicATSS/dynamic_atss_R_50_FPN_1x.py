# Lazy twin of dynamic_atss_R_50_FPN_1x.yaml: DynamicATSS R-50-FPN, COCO 1x (ATSS's recipe).
from ..ATSS.atss_R_50_FPN_1x import dataloader, lr_multiplier, optimizer, train  # noqa: F401
from ..common.models.dynamic_atss import model

model.backbone.bottom_up.freeze_at = 2
train.output_dir = "./output/dynamic_atss_R_50_FPN_1x"
