"""The logit of a product of probabilities, so losses on a product (GFL v2's class score x
quality) can run in the fused logit-space kernels instead of on probabilities."""

import math

import torch
from torch import Tensor
from torch.nn import functional as F

# log(1 - p) is evaluated two ways around p = 1/2 (Maechler's log1mexp), each branch on inputs
# clamped to its own range so the unused branch never produces inf * 0 = NaN gradients.
_LOG_HALF = -math.log(2.0)
# Keeps p < 1: logit(p) <= ~16.1 (float32) instead of +inf when both logits saturate.
_MAX_LOG_P = -1e-7


def logit_of_product(x: Tensor, y: Tensor) -> Tensor:
    """
    logit(sigmoid(x) * sigmoid(y)), broadcasting x and y, computed from
    log p = logsigmoid(x) + logsigmoid(y) and logit(p) = log p - log(1 - p) without forming p.
    Exact up to rounding; finite for any finite logits.
    """
    log_p = (F.logsigmoid(x) + F.logsigmoid(y)).clamp(max=_MAX_LOG_P)
    near_one = torch.log(-torch.expm1(log_p.clamp(min=_LOG_HALF)))
    near_zero = torch.log1p(-torch.exp(log_p.clamp(max=_LOG_HALF)))
    return log_p - torch.where(log_p > _LOG_HALF, near_one, near_zero)
