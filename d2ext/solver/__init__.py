"""Optimizer helpers for lazy configs."""

import torch
from detectron2.solver.build import _generate_optimizer_class_with_gradient_clipping

__all__ = ["clip_gradients", "optimizer_with_norm_clipping"]


def optimizer_with_norm_clipping(*, optimizer_class, clip_value, norm_type=2.0, **kwargs):
    """
    `optimizer_class(**kwargs)` whose step first clips each parameter's gradient norm to
    `clip_value`: what yaml's SOLVER.CLIP_GRADIENTS (CLIP_TYPE "norm") does, for lazy configs.
    """

    def clip(p):
        torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)

    cls = _generate_optimizer_class_with_gradient_clipping(optimizer_class, per_param_clipper=clip)
    return cls(**kwargs)


def clip_gradients(optimizer, clip_value, norm_type=2.0):
    """
    Makes a lazy optimizer node (`L(torch.optim.SGD)(params=..., lr=...)`) clip gradients as
    SOLVER.CLIP_GRADIENTS (CLIP_TYPE "norm") does; its other fields (`lr`, `params`) stay put.
    """
    optimizer.optimizer_class = optimizer._target_
    optimizer._target_ = optimizer_with_norm_clipping
    optimizer.clip_value = clip_value
    optimizer.norm_type = norm_type
    return optimizer
