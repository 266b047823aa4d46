# Lazy twin of faster_rcnn_R_18_FPN_tiny.yaml: Detectron2's Faster R-CNN at the demo's size.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from d2ext.modeling.backbone import build_basic_resnet

from ..common.data.synthetic import dataloader  # noqa: F401  (exported)
from ..common.models.faster_rcnn import model
from ..common.tiny import tiny_schedule

model.backbone.bottom_up = L(build_basic_resnet)(
    depth=18, width=32, stem_width=32, norm="GN", out_features=["res2", "res3", "res4", "res5"]
)
model.backbone.out_channels = 64
model.backbone.norm = "GN"
model.pixel_std = [57.375, 57.120, 58.395]

rpn = model.proposal_generator
rpn.head.in_channels = 64
rpn.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
rpn.batch_size_per_image = 128
rpn.pre_nms_topk = (500, 500)
rpn.post_nms_topk = (300, 300)

model.roi_heads.num_classes = 5
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_pooler.sampling_ratio = 2
model.roi_heads.box_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)

# Detectron2's SGD (no bias LR factor), as the yaml's defaults.
optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02
lr_multiplier, train = tiny_schedule("./output/faster_rcnn_R_18_FPN_tiny_lazy")
