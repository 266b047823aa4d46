from detectron2.config import CfgNode as CN

from .atss import add_dense_head_keys


def add_musu_config(cfg):
    """
    Adds MODEL.MUSU (METHODS.md §5.3). MuSu in d2ext is a RECONSTRUCTION from the paper's
    description (no code, equations not retrievable): the gate, mixing, rank-weight and warm-start
    keys parameterise our design, not the paper's equations. Anchors per location come from
    MODEL.ANCHOR_GENERATOR (e.g. SIZES [[64, 90.51], ...] for two scales per location).
    """
    cfg.MODEL.MUSU = CN()
    _C = cfg.MODEL.MUSU
    add_dense_head_keys(_C)
    # TOPK (from add_dense_head_keys): a GT's candidates are the TOPK x anchors-per-location
    # anchors per level nearest its centre whose centres lie inside it.
    _C.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Gate into a GT's bag: s^GATE_SHAPE * u^(1 - GATE_SHAPE) >= GATE_THRESH, with s the
    # predicted probability of the GT's class and u the IoU of the predicted box (the best
    # candidate always enters).
    _C.GATE_THRESH = 0.05
    _C.GATE_SHAPE = 0.5
    # Ranking keys: regression s^(1 - L) * u^L, classification u^(1 - L) * s^L with L = MIX_LAMBDA;
    # 0 is the "direct" mutual form the paper reports as worse, the default the mixed form.
    _C.MIX_LAMBDA = 0.2
    # Rank -> weight: "linear" max(0, 1 - rank / RANK_TOPK) or "exp" exp(-rank / RANK_TAU).
    _C.RANK_WEIGHT = "linear"
    _C.RANK_TOPK = 9
    _C.RANK_TAU = 3.0
    # Classification loss on the soft targets w_cls * u: "QFL" or "VFL".
    _C.CLS_LOSS = "QFL"
    _C.QFL_BETA = 2.0
    _C.VFL_ALPHA = 0.75
    _C.VFL_GAMMA = 2.0
    # Weight of the rank-weighted GIoU loss.
    _C.REG_LOSS_WEIGHT = 2.0
    # Warm start: for the first WARMUP_ITERS iterations gate and rankings use the anchor's own
    # IoU for both s and u (early scores are uninformative); soft targets keep the predicted IoU.
    _C.WARMUP_ITERS = 1000
