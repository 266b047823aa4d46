from detectron2.config import configurable
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator import RPN

from ..sampling import libra_subsample_labels


@PROPOSAL_GENERATOR_REGISTRY.register()
class LibraRPN(RPN):
    """
    Detectron2's RPN whose anchor sampling caps the negatives at `neg_pos_ub` per sampled
    positive (at least one), as Libra R-CNN's RPN sampler does (neg_pos_ub = 5, METHODS.md §7.5;
    Detectron2 has no such bound). neg_pos_ub = -1 is Detectron2's RPN exactly.
    """

    @configurable
    def __init__(self, *, neg_pos_ub: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.neg_pos_ub = neg_pos_ub

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["neg_pos_ub"] = cfg.MODEL.LIBRA.RPN_NEG_POS_UB
        return ret

    def _subsample_labels(self, label):
        pos_idx, neg_idx = libra_subsample_labels(
            label, self.batch_size_per_image, self.positive_fraction, 0,
            iou_balanced_neg=False, instance_balanced_pos=False, neg_pos_ub=self.neg_pos_ub,
        )
        label.fill_(-1)
        label.scatter_(0, pos_idx, 1)
        label.scatter_(0, neg_idx, 0)
        return label
