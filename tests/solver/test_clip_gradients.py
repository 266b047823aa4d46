"""d2ext.solver.clip_gradients: SOLVER.CLIP_GRADIENTS (type "norm") for lazy optimizer nodes."""

import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate

from d2ext.solver import clip_gradients


def test_each_parameter_gradient_norm_is_clipped_before_the_step():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    node = clip_gradients(L(torch.optim.SGD)(params=[a, b], lr=0.5), clip_value=1.0)
    assert node.lr == 0.5  # the node's fields stay where lazy configs expect them
    optimizer = instantiate(node)
    assert isinstance(optimizer, torch.optim.SGD)
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.5])
    optimizer.step()
    # a's gradient (norm 5) is scaled to norm 1; b's (norm 0.5) is left alone.
    torch.testing.assert_close(a.detach(), -0.5 * torch.tensor([0.6, 0.8]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.detach(), torch.tensor([-0.25]))
