"""Detectron2's COCOEvaluator for COCO jsons without an "info" block.

pycocotools 2.0.10's COCO.loadRes copies the ground truth's dataset["info"], so evaluating a
json that lacks one (many exported datasets do) fails with KeyError: 'info'. The loaded ground
truth gets an empty info block, whether it came from the registered json
(register_coco_instances) or from Detectron2's conversion of a dataset dict (whose json has one
already). The file on disk is not modified.
"""

from detectron2.evaluation import COCOEvaluator as _D2COCOEvaluator


def add_missing_info(evaluator):
    """Gives a (Detectron2) COCOEvaluator's loaded ground truth an "info" block if it has none;
    other evaluators are returned unchanged."""
    coco_api = getattr(evaluator, "_coco_api", None)
    if isinstance(evaluator, _D2COCOEvaluator) and coco_api is not None:
        coco_api.dataset.setdefault("info", {})
    return evaluator


class COCOEvaluator(_D2COCOEvaluator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        add_missing_info(self)
