# ATSS (METHODS.md §1) as a lazy graph, derived from Detectron2's RetinaNet graph the way
# Detectron2's own common/models/fcos.py is.
from detectron2.model_zoo import get_config

from d2ext.modeling.backbone import LastLevelP6P7
from d2ext.modeling.meta_arch import ATSS, ATSSHead

model = get_config("common/models/retinanet.py").model
model._target_ = ATSS
del model.anchor_matcher

# P6/P7 from P5, as every ATSS-family reference config; P7 = conv(relu(P6)) as official ATSS
# (METHODS.md Errata 3).
model.backbone.top_block._target_ = LastLevelP6P7
model.backbone.top_block.in_feature = "p5"
model.backbone.top_block.in_channels = "${..out_channels}"
model.backbone.top_block.relu_before_p6 = False
model.backbone.top_block.relu_before_p7 = True

# One square anchor of side 8 x stride per location, centred at x * stride + stride / 2 as
# official ATSS and DynamicATSS (Errata 4).
model.anchor_generator.sizes = [[64], [128], [256], [512], [1024]]
model.anchor_generator.aspect_ratios = [1.0]
model.anchor_generator.offset = 0.5
model.box2box_transform.weights = [10.0, 10.0, 5.0, 5.0]

model.head._target_ = ATSSHead
model.head.num_anchors = 1
model.head.norm = "GN"

model.topk = 9
model.reg_loss_weight = 2.0
model.loss_normalizer = "num_pos"
model.test_score_thresh = 0.05
model.test_topk_candidates = 1000
model.test_nms_thresh = 0.6
model.test_topk_by = "pair"  # official ATSS (boxes clipped before NMS)
model.max_detections_per_image = 100
