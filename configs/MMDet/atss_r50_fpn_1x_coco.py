# Lazy twin of atss_r50_fpn_1x_coco.yaml: mmdetection 3.3's atss_r50_fpn_1x_coco (box AP 39.4
# published), loading its checkpoint converted on load and training with its recipe.

from ..common.mmdet_schedule import SGD as optimizer  # noqa: F401  (exported)
from ..common.mmdet_schedule import coco_1x
from ..common.mmdet_schedule import lr_multiplier_1x as lr_multiplier  # noqa: F401  (exported)
from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from ..common.models.atss import model
from ..common.models.mmdet_backbone import mmdet_r50_fpn

# ATSS/GFL: P7 = conv(P6), no ReLU (relu_before_extra_convs=False, METHODS.md Errata 3).
mmdet_r50_fpn(model, relu_before_p6=False, relu_before_p7=False)
# test_cfg: 1000 (location, class) pairs per level ranked by sigmoid(cls) > 0.05, score =
# cls * centerness, clipped, NMS 0.6, 100 per image.
model.test_topk_by = "pair"
model.test_score = "product_ranked_by_cls"

dataloader, train = coco_1x("./output/mmdet/atss_r50_fpn_1x_coco")
