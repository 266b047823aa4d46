import math

import torch


def balanced_l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.5,
    gamma: float = 1.5,
    beta: float = 1.0,
    reduction: str = "none",
) -> torch.Tensor:
    """
    Balanced L1 loss (Libra R-CNN, Pang et al., CVPR 2019, eq. 7-9; METHODS.md §7.4), elementwise
    on x = |input - target|, with b = e^(gamma/alpha) - 1 so that alpha * ln(b + 1) = gamma:

        L(x) = alpha/b * (b*x + 1) * ln(b*x/beta + 1) - alpha*x     x < beta
        L(x) = gamma*x + gamma/b - alpha*beta                       otherwise

    Continuous at x = beta for any beta; its gradient alpha*ln(b*x + 1) (beta = 1) lifts the
    small errors of inliers above smooth L1's, and is gamma for outliers.

    Args:
        reduction: "none" | "sum" | "mean".
    """
    if beta <= 0:
        raise ValueError(f"balanced L1 needs beta > 0, got {beta}")
    if alpha <= 0 or gamma <= 0:
        raise ValueError(f"balanced L1 needs alpha, gamma > 0, got alpha={alpha}, gamma={gamma}")
    x = torch.abs(input - target)
    b = math.exp(gamma / alpha) - 1
    inlier = alpha / b * (b * x + 1) * torch.log1p(b * x / beta) - alpha * x
    outlier = gamma * x + gamma / b - alpha * beta
    loss = torch.where(x < beta, inlier, outlier)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction != "none":
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    return loss
