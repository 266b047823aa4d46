# GFL (METHODS.md §3) as a lazy graph: ATSS's backbone, anchors and assignment; a GFLHead whose
# box sides are distributions; ltrb pixel distances as the box coding. model.head.dgqp = True
# gives GFL v2.
from detectron2.config import LazyCall as L
from detectron2.modeling.box_regression import Box2BoxTransformLinear

from d2ext.modeling.meta_arch import GFL, GFLHead

from .atss import model

model._target_ = GFL
# Where the references differ (METHODS.md Errata 3-6): no ReLU before P7 (GFocal repos and
# mmdetection); anchor centres at x * stride (GFL v2 repo, mmdetection; the v1 repo's
# (stride - 1) / 2 is half a pixel away); top-k over locations (GFocal repos).
model.backbone.top_block.relu_before_p7 = False
model.anchor_generator.offset = 0.0
model.test_topk_by = "location"
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
model.loc_weight_sum_min = 0.0  # GFocal repos: W not clamped at 1 (mmdetection: 1.0)
model.quality_iou_plus_one = False  # True: the GFL v1 repo's legacy +1 IoU target
# RetinaNet/ATSS-only arguments.
del model.reg_loss_weight, model.focal_loss_alpha, model.focal_loss_gamma
