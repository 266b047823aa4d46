# Lazy twin of retinanet_R_18_FPN_tiny.yaml: Detectron2's RetinaNet (focal loss) with the backbone
# and schedule of the tiny AP-loss config.
# compare_methods: not by default (Detectron2's untuned defaults: retinanet_fair_R_18_FPN_tiny
# is the RetinaNet baseline of tools/compare_methods.py)
from detectron2.model_zoo import get_config

from ..common.data.synthetic import dataloader  # noqa: F401  (exported)
from ..common.tiny import shrink_to_tiny, tiny_schedule

model = get_config("common/models/retinanet.py").model
shrink_to_tiny(model)
model.backbone.top_block.in_channels = 256  # P6 from res5 of the half-width R18
model.smooth_l1_beta = 0.1  # the yaml default MODEL.RETINANET.SMOOTH_L1_LOSS_BETA

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02
lr_multiplier, train = tiny_schedule("./output/retinanet_R_18_FPN_tiny_lazy")
