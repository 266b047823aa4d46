import torch
from detectron2.utils import comm


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all workers (itself when not distributed)."""
    world_size = comm.get_world_size()
    if world_size == 1:
        return value
    value = value.clone()
    torch.distributed.all_reduce(value)
    return value / world_size
