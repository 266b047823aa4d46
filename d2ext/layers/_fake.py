"""Fake (meta) kernels of d2ext's ops, so that torch.compile and FakeTensor tracing see their
output shapes without running them. The C++ schemas name this module (set_python_module)."""
import torch


@torch.library.register_fake("d2ext::pairwise_iou")
def _pairwise_iou_fake(boxes1, boxes2, mode=0):
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 4, lambda: "boxes1 must be (N, 4)")
    torch._check(boxes2.dim() == 2 and boxes2.shape[1] == 4, lambda: "boxes2 must be (M, 4)")
    torch._check(boxes1.dtype == boxes2.dtype, lambda: "boxes1 and boxes2 must share a dtype")
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))
