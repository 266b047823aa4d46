from .coco_evaluation import COCOEvaluator, add_missing_info

__all__ = ["COCOEvaluator", "add_missing_info"]
