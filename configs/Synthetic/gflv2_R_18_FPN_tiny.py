# Lazy twin of gflv2_R_18_FPN_tiny.yaml.
from .gfl_R_18_FPN_tiny import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.head.dgqp = True
model.quality_iou_plus_one = False  # the GFL v2 repo
train.output_dir = "./output/gflv2_R_18_FPN_tiny_lazy"
