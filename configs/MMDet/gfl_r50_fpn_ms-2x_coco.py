# Lazy twin of gfl_r50_fpn_ms-2x_coco.yaml: mmdetection 3.3's gfl_r50_fpn_ms-2x_coco (box AP 42.9
# published): gfl_r50_fpn_1x_coco trained 24 epochs with the short side drawn from 480..800.
from ..common.mmdet_schedule import coco_ms_2x
from ..common.mmdet_schedule import lr_multiplier_2x as lr_multiplier  # noqa: F401  (exported)
from ..common.mmdet_tta import test_aug  # noqa: F401  (exported; off)
from .gfl_r50_fpn_1x_coco import model, optimizer  # noqa: F401

dataloader, train = coco_ms_2x("./output/mmdet/gfl_r50_fpn_ms-2x_coco", short_edge_range=(480, 800))
