# GFL (METHODS.md §3) as a lazy graph: ATSS's backbone, anchors and assignment; a GFLHead whose
# box sides are distributions; ltrb pixel distances as the box coding. model.head.dgqp = True
# gives GFL v2.
from detectron2.config import LazyCall as L
from detectron2.modeling.box_regression import Box2BoxTransformLinear

from d2ext.modeling.meta_arch import GFL, GFLHead

from .atss import model

model._target_ = GFL
model.box2box_transform = L(Box2BoxTransformLinear)(normalize_by_size=False)
model.head._target_ = GFLHead
model.head.reg_max = 16
model.head.dgqp = False
model.head.dgqp_topk = 4
model.head.dgqp_add_mean = True
model.head.dgqp_channels = 64
model.qfl_beta = 2.0
model.loss_cls_weight = 1.0
model.loss_dfl_weight = 0.25
model.loss_box_weight = 2.0
model.dfl_target_eps = 0.1
# RetinaNet/ATSS-only arguments.
del model.reg_loss_weight, model.focal_loss_alpha, model.focal_loss_gamma
