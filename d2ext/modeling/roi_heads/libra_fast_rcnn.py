from detectron2.config import configurable
from detectron2.layers import nonzero_tuple
from detectron2.modeling.roi_heads import FastRCNNOutputLayers

from d2ext.layers.precision import float32_region

from ..input_checks import check_range
from ..losses import balanced_l1_loss

# Detectron2's own regression losses (handled by FastRCNNOutputLayers) plus balanced L1.
BOX_REG_LOSS_TYPES = ("smooth_l1", "giou", "diou", "ciou", "balanced_l1")


class LibraFastRCNNOutputLayers(FastRCNNOutputLayers):
    """
    Detectron2's box predictor whose regression loss may also be Libra R-CNN's balanced L1
    (box_reg_loss_type "balanced_l1", METHODS.md §7.4) on the normalised deltas of the
    foreground proposals, normalised by the number of sampled proposals as Detectron2's (and
    mmdet's) R-CNN losses are. Other loss types are Detectron2's, unchanged.
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        balanced_l1_alpha: float = 0.5,
        balanced_l1_gamma: float = 1.5,
        balanced_l1_beta: float = 1.0,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        if self.box_reg_loss_type not in BOX_REG_LOSS_TYPES:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE={self.box_reg_loss_type!r} is not one of "
                f"{BOX_REG_LOSS_TYPES}"
            )
        if (
            self.box_reg_loss_type == "balanced_l1"
        ):  # else unused; balanced_l1_loss raises only at the first step
            for key, value in (
                ("ALPHA", balanced_l1_alpha),
                ("GAMMA", balanced_l1_gamma),
                ("BETA", balanced_l1_beta),
            ):
                check_range(
                    f"MODEL.LIBRA.BALANCED_L1_{key} (model.roi_heads.box_predictor.balanced_l1_{key.lower()})",
                    value,
                    0,
                    low_open=True,
                )
        self.balanced_l1_alpha = balanced_l1_alpha
        self.balanced_l1_gamma = balanced_l1_gamma
        self.balanced_l1_beta = balanced_l1_beta

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["balanced_l1_alpha"] = cfg.MODEL.LIBRA.BALANCED_L1_ALPHA
        ret["balanced_l1_gamma"] = cfg.MODEL.LIBRA.BALANCED_L1_GAMMA
        ret["balanced_l1_beta"] = cfg.MODEL.LIBRA.BALANCED_L1_BETA
        return ret

    # Under AMP the R-CNN losses run in float32 on float32 scores and deltas.
    @float32_region("predictions")
    def losses(self, predictions, proposals):
        return super().losses(predictions, proposals)

    def box_reg_loss(self, proposal_boxes, gt_boxes, pred_deltas, gt_classes):
        if self.box_reg_loss_type != "balanced_l1":
            return super().box_reg_loss(proposal_boxes, gt_boxes, pred_deltas, gt_classes)
        box_dim = proposal_boxes.shape[1]
        fg_inds = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))[0]
        if pred_deltas.shape[1] == box_dim:  # class-agnostic regression
            fg_pred_deltas = pred_deltas[fg_inds]
        else:
            fg_pred_deltas = pred_deltas.view(-1, self.num_classes, box_dim)[
                fg_inds, gt_classes[fg_inds]
            ]
        gt_deltas = self.box2box_transform.get_deltas(proposal_boxes[fg_inds], gt_boxes[fg_inds])
        loss = balanced_l1_loss(
            fg_pred_deltas,
            gt_deltas,
            alpha=self.balanced_l1_alpha,
            gamma=self.balanced_l1_gamma,
            beta=self.balanced_l1_beta,
            reduction="sum",
        )
        return loss / max(gt_classes.numel(), 1.0)
