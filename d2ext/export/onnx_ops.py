"""ONNX symbolics the TorchScript-based exporter lacks: torchvision's deform_conv2d (VFNet's
star convolutions) as ONNX's DeformConv (opset 19), which onnxruntime runs on the CPU."""

from torch.onnx import register_custom_op_symbolic
from torch.onnx import symbolic_helper as sh

DEFORM_CONV_OPSET = 19
_registered = False


def _deform_conv2d(
    g,
    input,
    weight,
    offset,
    mask,
    bias,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    n_weight_grps,
    n_offset_grps,
    use_mask,
):
    ints = [sh._get_const(v, "i", "") for v in (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)]
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w = ints
    inputs = [input, weight, offset, bias]
    # torchvision passes a zero mask and use_mask=False for DCNv1; DeformConv's mask is optional.
    if sh._get_const(use_mask, "b", "use_mask"):
        inputs.append(mask)
    return g.op(
        "DeformConv",
        *inputs,
        strides_i=[stride_h, stride_w],
        pads_i=[pad_h, pad_w, pad_h, pad_w],
        dilations_i=[dil_h, dil_w],
        group_i=sh._get_const(n_weight_grps, "i", "groups"),
        offset_group_i=sh._get_const(n_offset_grps, "i", "offset_groups"),
    )


def register_onnx_ops(opset: int) -> None:
    """Registers the symbolics above for ``opset`` (DeformConv needs 19 or later)."""
    global _registered
    if _registered or opset < DEFORM_CONV_OPSET:
        return
    register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d, DEFORM_CONV_OPSET)
    _registered = True
