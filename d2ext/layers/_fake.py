"""Fake (meta) kernels of d2ext's ops, so that torch.compile and FakeTensor tracing see their
output shapes without running them. The C++ schemas name this module (set_python_module)."""

import torch


@torch.library.register_fake("d2ext::pairwise_iou")
def _pairwise_iou_fake(boxes1, boxes2, mode=0):
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 4, lambda: "boxes1 must be (N, 4)")
    torch._check(boxes2.dim() == 2 and boxes2.shape[1] == 4, lambda: "boxes2 must be (M, 4)")
    torch._check(boxes1.dtype == boxes2.dtype, lambda: "boxes1 and boxes2 must share a dtype")
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


@torch.library.register_fake("d2ext::combined_iou")
def _combined_iou_fake(anchors, pred_boxes, gt_boxes, anchor_weight=1.0, pred_weight=1.0):
    torch._check(
        anchors.shape == pred_boxes.shape, lambda: "pred_boxes must have the shape of anchors"
    )
    return anchors.new_empty((anchors.shape[0], gt_boxes.shape[0]))


@torch.library.register_fake("d2ext::aligned_iou")
def _aligned_iou_fake(boxes1, boxes2, mode=0):
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 4, lambda: "boxes1 must be (N, 4)")
    torch._check(boxes1.shape == boxes2.shape, lambda: "boxes2 must have the shape of boxes1")
    return boxes1.new_empty((boxes1.shape[0],))


@torch.library.register_fake("d2ext::giou_loss")
def _giou_loss_fake(pred, target, weight, reduction):
    return _loss_output(pred, reduction, pred.shape[:1])


@torch.library.register_fake("d2ext::atss_assign")
def _atss_assign_fake(
    anchors,
    num_anchors_per_level,
    gt_boxes,
    topk,
    pred_boxes=None,
    anchor_weight=1.0,
    pred_weight=1.0,
):
    torch._check(anchors.dim() == 2 and anchors.shape[1] == 4, lambda: "anchors must be (R, 4)")
    torch._check(gt_boxes.dim() == 2 and gt_boxes.shape[1] == 4, lambda: "gt_boxes must be (M, 4)")
    num_anchors = anchors.shape[0]
    return (
        anchors.new_empty((num_anchors,), dtype=torch.int64),
        anchors.new_empty((num_anchors,)),
        anchors.new_empty((gt_boxes.shape[0],)),
    )


def _loss_output(logits, reduction, none_shape):
    torch._check(logits.dim() == 2, lambda: "logits must be 2-D")
    torch._check(0 <= reduction <= 2, lambda: "reduction must be 0, 1 or 2")
    return logits.new_empty(none_shape if reduction == 0 else ())


@torch.library.register_fake("d2ext::sigmoid_focal_loss")
def _sigmoid_focal_loss_fake(logits, labels, weight, alpha, gamma, reduction):
    return _loss_output(logits, reduction, logits.shape)


@torch.library.register_fake("d2ext::quality_focal_loss")
def _quality_focal_loss_fake(logits, labels, scores, weight, beta, reduction):
    return _loss_output(logits, reduction, logits.shape)


@torch.library.register_fake("d2ext::varifocal_loss")
def _varifocal_loss_fake(logits, labels, scores, weight, alpha, gamma, iou_weighted, reduction):
    return _loss_output(logits, reduction, logits.shape)


@torch.library.register_fake("d2ext::distribution_focal_loss")
def _distribution_focal_loss_fake(logits, target, weight, reduction):
    return _loss_output(logits, reduction, logits.shape[:1]), torch.empty_like(logits)


def _grad_like_first_input(grad, first, *args):
    return torch.empty_like(first)


LOSSES = ("sigmoid_focal_loss", "quality_focal_loss", "varifocal_loss", "giou_loss")

for _name in LOSSES:
    torch.library.register_fake(f"d2ext::_{_name}_backward")(_grad_like_first_input)


# Autograd: each loss's backward op returns the gradient of its first input (logits, predicted
# boxes); every other input (labels, scores, weights, target boxes: targets) gets none.
def _save_all_inputs(ctx, inputs, output):
    ctx.inputs = inputs


def _register_first_input_autograd(name):
    backward_op = getattr(torch.ops.d2ext, f"_{name}_backward")

    def backward(ctx, grad):
        return (backward_op(grad, *ctx.inputs),) + (None,) * (len(ctx.inputs) - 1)

    torch.library.register_autograd(f"d2ext::{name}", backward, setup_context=_save_all_inputs)


for _name in LOSSES:
    _register_first_input_autograd(_name)


@torch.library.register_fake("d2ext::ap_loss")
def _ap_loss_fake(logits, labels, delta=1.0, interpolated=True):
    torch._check(logits.dim() == 2, lambda: "logits must be (N, K)")
    return logits.new_empty(()), torch.empty_like(logits)


def _ap_loss_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _ap_loss_backward(ctx, grad_loss, grad_update):
    # The error-driven update computed in the forward is the logits' gradient (METHODS.md §6.3).
    (update,) = ctx.saved_tensors
    return grad_loss * update, None, None, None


torch.library.register_autograd("d2ext::ap_loss", _ap_loss_backward, setup_context=_ap_loss_setup)


def _dfl_setup(ctx, inputs, output):
    ctx.reduction = inputs[3]
    ctx.save_for_backward(output[1])


def _dfl_backward(ctx, grad_loss, grad_of_grad_output):
    # The forward's gradient is that of the summed weighted row losses: scale it by the incoming
    # gradient (per row for "none", divided by N for "mean").
    (grad,) = ctx.saved_tensors
    if ctx.reduction == 0:
        scale = grad_loss.unsqueeze(1)
    elif ctx.reduction == 2:
        scale = grad_loss / max(grad.shape[0], 1)
    else:
        scale = grad_loss
    return grad * scale, None, None, None


torch.library.register_autograd(
    "d2ext::distribution_focal_loss", _dfl_backward, setup_context=_dfl_setup
)


def _deform_conv2d_out_hw(input, weight, stride, padding, dilation):
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    kh, kw = weight.shape[2], weight.shape[3]
    h_out = (input.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (input.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return h_out, w_out


@torch.library.register_fake("d2ext::deform_conv2d")
def _deform_conv2d_fake(
    input,
    offset,
    weight,
    bias=None,
    stride=(1, 1),
    padding=(0, 0),
    dilation=(1, 1),
    mask=None,
    chunk_columns=0,
):
    torch._check(
        input.dim() == 4 and weight.dim() == 4 and offset.dim() == 4,
        lambda: "input, offset and weight must be 4-D",
    )
    torch._check(
        input.dtype in (torch.float32, torch.float64), lambda: "input must be float32 or float64"
    )
    torch._check(
        offset.dtype == input.dtype and weight.dtype == input.dtype,
        lambda: "offset and weight must have the input's dtype",
    )
    torch._check(
        input.shape[1] % weight.shape[1] == 0,
        lambda: "input channels must be a multiple of weight.size(1)",
    )
    h_out, w_out = _deform_conv2d_out_hw(input, weight, stride, padding, dilation)
    taps = weight.shape[2] * weight.shape[3]
    torch._check(
        offset.shape[0] == input.shape[0]
        and offset.shape[1] % (2 * taps) == 0
        and offset.shape[2] == h_out
        and offset.shape[3] == w_out,
        lambda: f"offset must be (N, 2 * offset_groups * {taps}, {h_out}, {w_out})",
    )
    if mask is not None:
        torch._check(
            mask.shape[0] == input.shape[0]
            and 2 * mask.shape[1] == offset.shape[1]
            and mask.shape[2] == h_out
            and mask.shape[3] == w_out,
            lambda: "mask must be (N, offset_groups * kh * kw, H_out, W_out)",
        )
    if bias is not None:
        torch._check(
            bias.dim() == 1 and bias.shape[0] == weight.shape[0], lambda: "bias must be (C_out,)"
        )
    return input.new_empty((input.shape[0], weight.shape[0], h_out, w_out))


@torch.library.register_fake("d2ext::_deform_conv2d_backward")
def _deform_conv2d_backward_fake(
    grad, input, offset, weight, stride, padding, dilation, mask, chunk_columns, output_mask
):
    coords = output_mask[1] or (output_mask[3] and mask is not None)
    return (
        input.new_empty(input.shape if output_mask[0] else (0,)),
        input.new_empty(offset.shape if coords else (0,)),
        input.new_empty(weight.shape if output_mask[2] else (0,)),
        input.new_empty(mask.shape if coords and mask is not None else (0,)),
    )


def _deform_conv2d_setup(ctx, inputs, output):
    input, offset, weight, bias, stride, padding, dilation, mask, chunk_columns = inputs
    ctx.save_for_backward(input, offset, weight, mask)
    ctx.conv = (stride, padding, dilation)
    ctx.chunk_columns = chunk_columns
    ctx.has_bias = bias is not None


def _deform_conv2d_backward(ctx, grad):
    # Input, offset, weight and mask from the backward op (the columns rebuilt there, chunk by
    # chunk), the bias as the output gradient's sum.
    input, offset, weight, mask = ctx.saved_tensors
    need = ctx.needs_input_grad
    output_mask = [need[0], need[1], need[2], mask is not None and need[7]]
    grads = (None, None, None, None)
    if any(output_mask):
        grads = torch.ops.d2ext._deform_conv2d_backward(
            grad, input, offset, weight, *ctx.conv, mask, ctx.chunk_columns, output_mask
        )
    grad_input, grad_offset, grad_weight, grad_mask = (
        g if want else None for g, want in zip(grads, output_mask)
    )
    grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias and need[3] else None
    return grad_input, grad_offset, grad_weight, grad_bias, None, None, None, grad_mask, None


torch.library.register_autograd(
    "d2ext::deform_conv2d", _deform_conv2d_backward, setup_context=_deform_conv2d_setup
)
