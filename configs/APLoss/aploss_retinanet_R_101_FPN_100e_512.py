# Lazy twin of aploss_retinanet_R_101_FPN_100e_512.yaml: AP-loss RetinaNet R-101-FPN, the released
# code's default (512 SSD-style input, 100 COCO epochs at lr 0.001, test at 500; 37.4 AP test-dev
# as the DR Loss paper quotes the AP-loss paper, see the yaml).
from .aploss_retinanet_R_50_FPN_100e_512 import (  # noqa: F401  (exported)
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "./output/aploss_retinanet_R_101_FPN_100e_512"
