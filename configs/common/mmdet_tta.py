# Test-time augmentation as mmdetection 3.3 sets it (configs/retinanet/retinanet_tta.py, the one
# dense-detector TTA config it ships; none for ATSS, GFL, VFNet or Libra R-CNN): views resized to
# (1333, 800), (666, 400) and (2000, 1200) with keep_ratio, each also flipped, merged by DetTTAModel
# with class-wise NMS at IoU 0.5, 100 detections per image. Off; turn it on at evaluation with
# test_aug.enabled=True (yaml twins: TEST.AUG.ENABLED True). Detectron2 resizes every view to one
# MAX_SIZE: 2000, the largest view's long side (mmdetection's smaller views also cap theirs at
# 666 and 1333: the same for images up to 5:3, the only ones whose long side reaches those caps).
from d2ext.config import lazy_tta_defaults

test_aug = {
    **lazy_tta_defaults(),
    "min_sizes": [400, 800, 1200],
    "max_size": 2000,
    "flip": True,
    "merge": "nms",
    "nms_thresh": 0.5,
    "detections_per_image": 100,
}
