# VFNet (METHODS.md §4) as a lazy graph: ATSS's backbone, anchors and assignment; a VFNetHead
# (3-conv towers, initial box, star deformable refinement and IACS); ltrb pixel distances as the
# box coding.
from detectron2.config import LazyCall as L
from detectron2.modeling.box_regression import Box2BoxTransformLinear

from d2ext.modeling.meta_arch import VFNet, VFNetHead

from .atss import model

model._target_ = VFNet
# Official VFNet (METHODS.md Errata 3, 4, 6): P6 from P5 without ReLU, P7 = conv(relu(P6));
# points at x * stride; top-k over locations.
model.backbone.top_block.relu_before_p6 = False
model.backbone.top_block.relu_before_p7 = True
model.anchor_generator.offset = 0.0
model.test_topk_by = "location"
model.box2box_transform = L(Box2BoxTransformLinear)(normalize_by_size=False)
model.head._target_ = VFNetHead
model.head.conv_dims = [256, 256, 256]
model.head.strides = [8, 16, 32, 64, 128]
model.head.reg_denoms = [64.0, 128.0, 256.0, 512.0, 1024.0]
model.head.dcn_grad_mul = 0.1
model.vfl_alpha = 0.75
model.vfl_gamma = 2.0
model.vfl_iou_weighted = True
model.loss_box_init_weight = 1.5
model.loss_box_refine_weight = 2.0
model.use_atss = True  # False: FCOS's assignment (with anchor_generator.offset = 0.5)
model.fcos_size_bounds = [64.0, 128.0, 256.0, 512.0]
# RetinaNet/ATSS-only arguments.
del model.reg_loss_weight, model.focal_loss_alpha, model.focal_loss_gamma
