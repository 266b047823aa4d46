from detectron2.config import get_cfg as _detectron2_cfg
from omegaconf import OmegaConf

from d2ext.errors import ConfigError


def add_tta_config(cfg):
    """
    Adds the merge keys of d2ext's test-time augmentation (d2ext.modeling.DetectorWithTTA) to
    Detectron2's TEST.AUG node, whose own keys choose the views: ENABLED, MIN_SIZES (one view
    per short-edge size, resized with INPUT.RESIZE_BACKEND), MAX_SIZE, FLIP (each size also
    horizontally flipped).
    """
    # How the detections of all views, mapped back to the input image, are merged:
    # "nms": class-wise NMS at NMS_THRESH over their union (mmdetection 3's DetTTAModel).
    # "vote": class-wise box voting at VOTE_THRESH (official ATSS's merge,
    # atss_core/engine/bbox_aug_vote.py): greedy NMS whose kept box becomes the score-weighted
    # mean of the boxes it suppresses, with their highest score.
    # "soft-vote": "vote" that also keeps each suppressed box, its score x (1 - IoU), when that
    # reaches SOFT_VOTE_SCORE_THRESH (official ATSS's MERGE_TYPE "soft-vote").
    cfg.TEST.AUG.MERGE = "nms"
    cfg.TEST.AUG.NMS_THRESH = 0.6
    cfg.TEST.AUG.VOTE_THRESH = 0.66
    cfg.TEST.AUG.SOFT_VOTE_SCORE_THRESH = 0.05
    # Optional, one [min, max] per MIN_SIZES entry: a view keeps only the boxes whose
    # sqrt(area), measured in that view's resized image, is in (min, max) (official ATSS's
    # TEST.BBOX_AUG.SCALE_RANGES). Empty: every box is kept.
    cfg.TEST.AUG.SCALE_RANGES = []
    # Detections kept after the merge; 0: TEST.DETECTIONS_PER_IMAGE (each view is capped at
    # TEST.DETECTIONS_PER_IMAGE by the model itself, and again by the wrapper).
    cfg.TEST.AUG.DETECTIONS_PER_IMAGE = 0


def lazy_tta_defaults() -> dict:
    """The ``test_aug`` node d2ext's loader gives a lazy config that has none: TEST.AUG's keys in
    lower case with the yaml defaults (off), so that one override turns TTA on and a misspelt
    key is refused::

        d2ext-train --config-file configs/Synthetic/fcos_R_18_FPN_tiny.py --eval-only \\
            test_aug.enabled=True "test_aug.min_sizes=[224,288,352]" train.init_checkpoint=...
    """
    yaml = _detectron2_cfg()
    add_tta_config(yaml)
    return {k.lower(): (list(v) if isinstance(v, tuple) else v) for k, v in yaml.TEST.AUG.items()}


def lazy_tta_settings(cfg):
    """The view and merge keyword arguments of :class:`d2ext.modeling.DetectorWithTTA` from a
    lazy config's ``test_aug`` node (:func:`lazy_tta_defaults`), or None when it is off.
    ``detections_per_image`` 0 becomes ``max_detections`` None: the model's own cap."""
    node = OmegaConf.select(cfg, "test_aug", default=None)
    if node is None or not node.get("enabled", False):
        return None
    given = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    defaults = lazy_tta_defaults()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"test_aug: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}"
        )
    settings = {**defaults, **given}
    del settings["enabled"]
    settings["max_detections"] = settings.pop("detections_per_image") or None
    return settings
