# Lazy twin of vfnet_r50_fpn_1x_coco.yaml: mmdetection 3.3's vfnet_r50_fpn_1x_coco (box AP 41.6
# published), loading its checkpoint converted on load and training with its recipe.
from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.mmdet_backbone import mmdet_r50_fpn
from ..common.models.vfnet import model
from .atss_r50_fpn_1x_coco import dataloader, lr_multiplier, optimizer, train  # noqa: F401

# relu_before_extra_convs=True: P6 = conv(P5), P7 = conv(relu(P6)) (METHODS.md Errata 3).
mmdet_r50_fpn(model, relu_before_p6=False, relu_before_p7=True)
# mmdetection 3: top-k over (location, class) pairs.
model.test_topk_by = "pair"

# Bias LR x2 without bias weight decay (Detectron2 applies both to norm biases too, mmengine
# not); warmup from 0.1.
optimizer.params.base_lr = "${..lr}"
optimizer.params.bias_lr_factor = 2.0
optimizer.params.weight_decay_bias = 0.0
lr_multiplier.warmup_factor = 0.1
train.output_dir = "./output/mmdet/vfnet_r50_fpn_1x_coco"
