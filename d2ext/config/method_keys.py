"""Which config keys hold the test score threshold and the class count of the
meta-architecture a config builds (each d2ext method reads its own MODEL.<METHOD> node)."""

# META_ARCHITECTURE -> (class-count key, test score-threshold key).
_KEYS = {
    "ATSS": ("MODEL.ATSS.NUM_CLASSES", "MODEL.ATSS.SCORE_THRESH_TEST"),
    "DynamicATSS": ("MODEL.DYNAMIC_ATSS.NUM_CLASSES", "MODEL.DYNAMIC_ATSS.SCORE_THRESH_TEST"),
    "GFL": ("MODEL.GFL.NUM_CLASSES", "MODEL.GFL.SCORE_THRESH_TEST"),
    "VFNet": ("MODEL.VFNET.NUM_CLASSES", "MODEL.VFNET.SCORE_THRESH_TEST"),
    "MuSu": ("MODEL.MUSU.NUM_CLASSES", "MODEL.MUSU.SCORE_THRESH_TEST"),
    "APLossRetinaNet": ("MODEL.RETINANET.NUM_CLASSES", "MODEL.RETINANET.SCORE_THRESH_TEST"),
    "RetinaNet": ("MODEL.RETINANET.NUM_CLASSES", "MODEL.RETINANET.SCORE_THRESH_TEST"),
    "FCOS": ("MODEL.FCOS.NUM_CLASSES", "MODEL.FCOS.SCORE_THRESH_TEST"),
    "GeneralizedRCNN": ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
}


def _keys(cfg):
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in _KEYS:
        raise ValueError(f"MODEL.META_ARCHITECTURE={arch!r} has no known threshold / class-count keys; known: {sorted(_KEYS)}")
    return _KEYS[arch]


def num_classes_key(cfg) -> str:
    """The full key of the class count, e.g. "MODEL.ATSS.NUM_CLASSES"."""
    return _keys(cfg)[0]


def score_thresh_key(cfg) -> str:
    """The full key of the test score threshold, e.g. "MODEL.GFL.SCORE_THRESH_TEST"."""
    return _keys(cfg)[1]
