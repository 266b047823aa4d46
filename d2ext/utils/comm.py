from typing import List

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


def all_gather_rows(value: torch.Tensor) -> List[torch.Tensor]:
    """
    Every worker's `value`, in rank order, without gradient. The number of rows may differ
    between workers (images of different sizes give different anchor counts); the other
    dimensions and the dtype must agree.
    """
    world_size = comm.get_world_size()
    if world_size == 1:
        return [value]
    num_rows = torch.tensor([len(value)], device=value.device)
    sizes = [torch.zeros_like(num_rows) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, num_rows)
    sizes = [int(s.item()) for s in sizes]
    padded = value.new_zeros((max(sizes), *value.shape[1:]))
    padded[: len(value)] = value.detach()
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, padded)
    return [g[:n] for g, n in zip(gathered, sizes)]
