# Lazy twin of libra-faster-rcnn_r50_fpn_1x_coco.yaml: mmdetection 3.3's
# libra-faster-rcnn_r50_fpn_1x_coco (box AP 38.3 published), loading its checkpoint converted on
# load and training with its recipe.
from detectron2.config import LazyCall as L

from d2ext.modeling.backbone import FPN, train_frozen_bn_affine

from ..common.mmdet_schedule import SGD as optimizer
from ..common.mmdet_schedule import coco_1x
from ..common.mmdet_schedule import lr_multiplier_1x as lr_multiplier  # noqa: F401  (exported)
from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.libra_faster_rcnn import model

# torchvision-style R-50 (stride on the 3x3 conv), BN in eval mode with trainable scale/bias,
# stem + res2 frozen; FPN P2-P6 (P6 = max-pool(P5)) with images padded to 32; BFP (refine level
# 2, non_local) as common/models/libra_faster_rcnn.py.
fpn = model.backbone.fpn
resnet = fpn.bottom_up
resnet.stem.norm = "FrozenBN"
resnet.stages.depth = 50
resnet.stages.stride_in_1x1 = False
resnet.stages.norm = "FrozenBN"
resnet.freeze_at = 2
# (in_features was an interpolation into bottom_up, which is now the wrapper.)
fpn.in_features = ["res2", "res3", "res4", "res5"]
fpn.bottom_up = L(train_frozen_bn_affine)(resnet=resnet, freeze_at=2)
fpn._target_ = FPN
fpn.size_divisibility = 32
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"

# RPN: anchor centres at x * stride (base), test nms_pre 1000 per level / NMS 0.7 / 1000 kept,
# train nms_pre 2000 per level / 1000 kept, anchors beyond each image's own 32-padding ignored.
rpn = model.proposal_generator
rpn.pre_nms_topk = (2000, 1000)
rpn.post_nms_topk = (1000, 1000)
rpn.nms_thresh = 0.7
rpn.valid_anchors_pad_divisor = 32

# R-CNN test_cfg: score 0.05, NMS 0.5, 100 per image (Detectron2's defaults, stated).
model.roi_heads.box_predictor.test_score_thresh = 0.05
model.roi_heads.box_predictor.test_nms_thresh = 0.5
model.roi_heads.box_predictor.test_topk_per_image = 100

# schedule_1x with lr 0.02, no gradient clipping, warmup from 0.001.
optimizer.lr = 0.02

dataloader, train = coco_1x("./output/mmdet/libra-faster-rcnn_r50_fpn_1x_coco")
