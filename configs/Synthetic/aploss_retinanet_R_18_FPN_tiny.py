# Lazy twin of aploss_retinanet_R_18_FPN_tiny.yaml: AP-loss RetinaNet on the bundled synthetic
# dataset with the tiny ATSS recipe and a GroupNorm head (the yaml's comments give the evidence).
from detectron2.model_zoo import get_config

from ..common.data.synthetic import dataloader  # noqa: F401  (exported)
from ..common.models.aploss_retinanet import model
from ..common.tiny import shrink_to_tiny, tiny_schedule

shrink_to_tiny(model)
model.backbone.top_block.in_channels = 256  # P6 from res5 of the half-width R18
model.anchor_generator.offset = 0.0  # the setting of the README's tiny numbers
model.ranking_images = 0  # the per-process minibatch (8 images on one process) is the ranking
# GroupNorm after each head conv (MODEL.RETINANET.NORM "GN"): the norm-free head collapsed or
# diverged at this learning rate on real photos and drifts, then runs away at 4x it, on
# d2ext_photos (the yaml's comments).
model.head.norm = "GN"

# The yaml's SGD: Detectron2's defaults (no bias LR factor), lr 0.02.
optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02
lr_multiplier, train = tiny_schedule("./output/aploss_retinanet_R_18_FPN_tiny_lazy")
