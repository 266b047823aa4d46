"""Where each meta-architecture reads its class count and test score threshold.

Every method reads its own node (MODEL.ATSS.NUM_CLASSES is ignored by GFL, which reads
MODEL.GFL.NUM_CLASSES), so scripts and docs should go through these helpers rather than
hard-code one method's key. They accept a yaml config (CfgNode) or a lazy config (whose `model`
node is a LazyCall of the detector).
"""

from typing import Tuple

from detectron2.modeling import META_ARCH_REGISTRY

# The few meta-architectures whose keys are not MODEL.<config_node>.NUM_CLASSES /
# .SCORE_THRESH_TEST: Detectron2's own (no config_node) and AP-loss RetinaNet, which reads its
# architecture from MODEL.RETINANET and its test keys from MODEL.AP_LOSS.
# META_ARCHITECTURE -> (class-count key, test score-threshold key).
OVERRIDES = {
    "APLossRetinaNet": ("MODEL.RETINANET.NUM_CLASSES", "MODEL.AP_LOSS.SCORE_THRESH_TEST"),
    "RetinaNet": ("MODEL.RETINANET.NUM_CLASSES", "MODEL.RETINANET.SCORE_THRESH_TEST"),
    # Faster R-CNN and Libra R-CNN (LibraROIHeads reads the same keys).
    "GeneralizedRCNN": ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
}


def yaml_keys(arch: str) -> Tuple[str, str]:
    """(class-count key, score-threshold key) of a registered meta-architecture: an override
    above, or MODEL.<config_node>.NUM_CLASSES / .SCORE_THRESH_TEST of its class (every d2ext
    dense detector names its config node; a new method needs no entry here)."""
    if arch in OVERRIDES:
        return OVERRIDES[arch]
    try:
        node = getattr(META_ARCH_REGISTRY.get(arch), "config_node", None)
    except KeyError:
        node = None
    if node is None:
        raise KeyError(
            f"d2ext.config does not know the class-count key of MODEL.META_ARCHITECTURE={arch!r}: it "
            f"is neither one of {sorted(OVERRIDES)} nor a registered class with a config_node "
            "(Detectron2's FCOS has lazy configs only: model.num_classes)"
        )
    return f"MODEL.{node}.NUM_CLASSES", f"MODEL.{node}.SCORE_THRESH_TEST"


def _is_lazy(cfg) -> bool:
    return not hasattr(cfg, "MODEL") and "model" in cfg


def _keys(cfg) -> Tuple[str, str]:
    if _is_lazy(cfg):
        # Dense detectors (d2ext's, Detectron2's RetinaNet and FCOS) take num_classes and
        # test_score_thresh; R-CNNs keep them in roi_heads (its box predictor interpolates them).
        if "roi_heads" in cfg.model:
            return "model.roi_heads.num_classes", "model.roi_heads.box_predictor.test_score_thresh"
        if "num_classes" in cfg.model:
            return "model.num_classes", "model.test_score_thresh"
        raise KeyError(
            f"d2ext.config cannot tell where the lazy model {cfg.model.get('_target_')!r} keeps its "
            "class count: neither model.num_classes nor model.roi_heads.num_classes exists"
        )
    return yaml_keys(cfg.MODEL.META_ARCHITECTURE)


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg, key, value):
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def num_classes_key(cfg) -> str:
    """The config key the configured meta-architecture reads its class count from, e.g.
    "MODEL.GFL.NUM_CLASSES" (yaml) or "model.num_classes" (lazy)."""
    return _keys(cfg)[0]


def score_thresh_key(cfg) -> str:
    """The config key of the configured meta-architecture's test score threshold."""
    return _keys(cfg)[1]


def get_num_classes(cfg) -> int:
    return int(_get(cfg, num_classes_key(cfg)))


def get_score_thresh(cfg) -> float:
    return float(_get(cfg, score_thresh_key(cfg)))


def set_num_classes(cfg, num_classes: int):
    """Sets the class count of whatever method `cfg` builds (the config must not be frozen)."""
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"{num_classes_key(cfg)} must be an integer >= 1, got {num_classes!r}")
    _set(cfg, num_classes_key(cfg), int(num_classes))
    return cfg


def set_score_thresh(cfg, score_thresh: float):
    """Sets the test score threshold of whatever method `cfg` builds."""
    if not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"{score_thresh_key(cfg)} must be in [0, 1), got {score_thresh!r}")
    _set(cfg, score_thresh_key(cfg), float(score_thresh))
    return cfg
