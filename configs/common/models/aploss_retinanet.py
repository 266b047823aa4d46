# AP-loss RetinaNet (METHODS.md §6) as a lazy graph, derived from Detectron2's RetinaNet graph.
from detectron2.model_zoo import get_config

from d2ext.modeling.meta_arch import APLossRetinaNet

model = get_config("common/models/retinanet.py").model
model._target_ = APLossRetinaNet
del model.focal_loss_alpha
del model.focal_loss_gamma

# P6 from C5 (Detectron2's RetinaNet graph already does it); 6 anchors per location: base
# 4 x stride, scales 2^0 and 2^0.5, ratios 0.5/1/2.
model.anchor_generator.sizes = [[x, x * 2**0.5] for x in [32, 64, 128, 256, 512]]
model.anchor_generator.aspect_ratios = [0.5, 1.0, 2.0]
# Centres at (x + 0.5) * s: the released code's x * s + (s - 1) / 2 up to 0.5 px (Detectron2's
# offset cannot express (s - 1) / 2); aLRPLoss's mmdet port (the 35.5 AP) uses x * s (offset 0).
model.anchor_generator.offset = 0.5
model.head.num_anchors = 6
model.head.norm = ""
model.anchor_matcher.thresholds = [0.4, 0.5]
model.anchor_matcher.allow_low_quality_matches = True
model.box2box_transform.weights = [10.0, 10.0, 5.0, 5.0]

model.delta = 1.0
model.interpolated = True
# One ranking = 8 images, as the released code (2 GPUs x 8), whatever the number of processes
# (MODEL.AP_LOSS.RANKING_IMAGES; 0 = each process' minibatch).
model.ranking_images = 8
model.smooth_l1_beta = 1.0
model.test_score_thresh = 0.01
model.test_topk_candidates = 1000
model.test_nms_thresh = 0.5
model.max_detections_per_image = 100
