# Detectron2's Faster R-CNN R-50-FPN as a lazy graph: its common/models/mask_rcnn_fpn.py without
# the mask branch.
from detectron2.model_zoo import get_config

model = get_config("common/models/mask_rcnn_fpn.py").model
model.roi_heads.mask_in_features = None
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
