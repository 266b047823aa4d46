# Lazy twin of retinanet_fair_R_18_FPN_tiny.yaml: Detectron2's RetinaNet with the tiny ATSS
# recipe (GN head, P6/P7 from P5, bias LR x2 without bias decay); the yaml says what "fair" fixed.
from d2ext.modeling.backbone import LastLevelP6P7

from ..common.optim import SGD as optimizer  # noqa: F401  (exported; the ATSS tiny optimizer)
from .retinanet_R_18_FPN_tiny import dataloader, lr_multiplier, model, train  # noqa: F401

model.backbone.top_block._target_ = LastLevelP6P7
model.backbone.top_block.in_feature = "p5"
model.backbone.top_block.in_channels = "${..out_channels}"
model.backbone.top_block.relu_before_p6 = False
model.backbone.top_block.relu_before_p7 = True
model.head.norm = "GN"

optimizer.lr = 0.02
train.output_dir = "./output/retinanet_fair_R_18_FPN_tiny_lazy"
