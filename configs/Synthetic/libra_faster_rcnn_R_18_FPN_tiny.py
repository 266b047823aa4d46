# Lazy twin of libra_faster_rcnn_R_18_FPN_tiny.yaml: the tiny Faster R-CNN plus the Libra pieces.
from ..common.models.libra_faster_rcnn import to_libra
from .faster_rcnn_R_18_FPN_tiny import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model = to_libra(model)
train.output_dir = "./output/libra_faster_rcnn_R_18_FPN_tiny_lazy"
