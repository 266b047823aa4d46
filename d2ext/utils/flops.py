"""FLOP counting for d2ext's models: Detectron2's / fvcore's FlopCountAnalysis (a torch.jit trace
of the model) with handles for the ops it does not know, so that d2ext's detectors are counted
rather than skipped with a warning.

fvcore's convention throughout: one multiply-add is one flop; additions, comparisons, selections
and bias terms are not counted (Detectron2 ignores its elementwise ops the same way). The ops the
tiny configs (configs/Synthetic/*_tiny) meet in inference, beyond what fvcore counts itself:

- torchvision::deform_conv2d (VFNet; d2ext.layers.DeformConv2d traces torchvision's op, also on
  the CPU): :func:`deform_conv2d_flop`.
- torchvision::roi_align (Faster / Libra R-CNN): :func:`roi_align_flop`.
- aten::matmul with a vector operand (GFL's integral of the box distribution, ``softmax @ bins``),
  which fvcore's own matmul handle rejects: :func:`matmul_flop`.
- aten::mean (GFL v2's quality branch): one per input element, as fvcore counts
  adaptive_avg_pool2d.
- prim::CallFunction, a call to a function TorchScript compiled while tracing (Detectron2's
  ``move_device_like`` and ROIPooler helpers, torchvision's ``batched_nms``): no multiply-adds;
  any other callee is counted as 0 and reported by :func:`skipped_ops`.
- Ops without multiply-adds, not counted: :data:`NO_FLOP_OPS`.

d2ext's own ops (torch.ops.d2ext.*) are losses and label assignment, met in training only, except
the IoU ops, which a post-processing step may call: :func:`iou_flop`, :func:`combined_iou_flop`.
"""

import math
from collections import Counter
from typing import Any, List

from fvcore.nn.jit_handles import elementwise_flop_counter, generic_activation_jit, get_shape

# Index, copy, selection and comparison ops met in the traced models: nothing to multiply.
NO_FLOP_OPS = (
    "aten::pad",  # ImageList's padding of the batch
    "aten::unflatten",
    "aten::where",
    "aten::topk",
    "aten::index_select",
    "aten::minimum",
    "aten::maximum",
)
# Substrings of the scripted functions (prim::CallFunction) known to do no multiply-adds.
NO_FLOP_FUNCTIONS = (
    "move_device_like",  # Detectron2: a tensor to another's device
    "batched_nms",  # torchvision: NMS, which Detectron2 does not count either (torchvision::nms)
    "_convert_boxes_to_pooler_format",  # Detectron2's ROIPooler: boxes and their image index
    "_create_zeros",  # Detectron2's ROIPooler: its empty output
)

BILINEAR = 4  # multiply-adds per bilinearly interpolated value (fvcore's upsample_bilinear2d: 4)
ADAPTIVE_ROI_SAMPLES = 2  # roi_align's samples per bin side when sampling_ratio <= 0 (see below)


def deform_conv2d_flop(inputs: List[Any], outputs: List[Any]) -> Counter:
    """
    torchvision::deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h,
    pad_w, dilation_h, dilation_w, groups, offset_groups, use_mask):

        the dense convolution:  N * Cout * Hout * Wout * (Cin / groups) * kh * kw
      + the bilinear sampling:  N * Cin * kh * kw * Hout * Wout * 4
      + the modulation (mask):  N * Cin * kh * kw * Hout * Wout   (only with a mask)

    The first term is what fvcore counts for an ordinary convolution of the same shape; the
    sampled values (one per input channel, kernel point and output position) are each a
    bilinear interpolation of 4 pixels. The offsets' own convolution is an ordinary conv,
    counted by fvcore.
    """
    x, weight, mask = get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[3])
    out = get_shape(outputs[0])
    n, c_in = x[0], x[1]
    kh, kw = weight[2], weight[3]
    h_out, w_out = out[2], out[3]
    dense = math.prod(out) * math.prod(weight[1:])
    samples = n * c_in * kh * kw * h_out * w_out
    # torchvision passes a (N, 1)-shaped placeholder when there is no mask (use_mask=False).
    modulated = mask is not None and len(mask) == 4
    return Counter({"deform_conv": dense + samples * BILINEAR + (samples if modulated else 0)})


def roi_align_flop(inputs: List[Any], outputs: List[Any]) -> int:
    """
    torchvision::roi_align(input, rois, spatial_scale, pooled_height, pooled_width,
    sampling_ratio, aligned): R * C * ph * pw bins of s * s bilinear samples each,

        R * C * ph * pw * s^2 * 4.

    s = sampling_ratio; with sampling_ratio <= 0 (adaptive: ceil(box side / bins) per box, which
    the trace does not know) s is counted as 2.
    """
    ratio = inputs[5].toIValue() if inputs[5].node().kind() == "prim::Constant" else 0
    s = ratio if ratio > 0 else ADAPTIVE_ROI_SAMPLES
    return math.prod(get_shape(outputs[0])) * s * s * BILINEAR


def matmul_flop(inputs: List[Any], outputs: List[Any]) -> int:
    """aten::matmul with any operand ranks (vectors and broadcast batches included): every
    output element is a dot product over the shared dimension K, numel(out) * K."""
    return math.prod(get_shape(outputs[0])) * get_shape(inputs[0])[-1]


def iou_flop(inputs: List[Any], outputs: List[Any]) -> int:
    """
    d2ext::pairwise_iou (N, M) and d2ext::aligned_iou (N,): per IoU, 2 (the intersection's area
    and the division by the union), 4 for GIoU (mode 1: the enclosing box's area and its
    division too). Box areas (one product per box) are not counted.
    """
    mode = inputs[2]
    giou = mode.node().kind() == "prim::Constant" and mode.toIValue() == 1
    return math.prod(get_shape(outputs[0])) * (4 if giou else 2)


def combined_iou_flop(inputs: List[Any], outputs: List[Any]) -> int:
    """d2ext::combined_iou (R, M): each element is two IoUs and their two weights, 2 * 2 + 2."""
    return math.prod(get_shape(outputs[0])) * 6


class ScriptedCallHandle:
    """prim::CallFunction: 0 for the functions of :data:`NO_FLOP_FUNCTIONS`; any other callee
    is counted as 0 too, but kept in ``uncounted`` (name -> calls) to be reported."""

    def __init__(self):
        self.uncounted = Counter()

    def __call__(self, inputs: List[Any], outputs: List[Any]) -> Counter:
        name = str(inputs[0].type())  # e.g. __torch__.detectron2.layers.wrappers.move_device_like
        if not any(known in name for known in NO_FLOP_FUNCTIONS):
            self.uncounted[f"prim::CallFunction({name.rsplit('.', 1)[-1]})"] += 1
        return Counter()


FLOP_HANDLES = {
    "torchvision::deform_conv2d": deform_conv2d_flop,
    "torchvision::roi_align": roi_align_flop,
    "aten::matmul": matmul_flop,
    "aten::mean": elementwise_flop_counter(1, 0),
    "d2ext::pairwise_iou": iou_flop,
    "d2ext::aligned_iou": iou_flop,
    "d2ext::combined_iou": combined_iou_flop,
}
# fvcore's activation count (outputs of convolutions and products): deformable convs too.
ACTIVATION_HANDLES = {"torchvision::deform_conv2d": generic_activation_jit("deform_conv")}


def add_flop_handles(analysis):
    """fvcore FlopCountAnalysis ``analysis`` with d2ext's handles and ignored ops. Returns it."""
    analysis.set_op_handle(**FLOP_HANDLES, **{op: None for op in NO_FLOP_OPS})
    analysis.scripted_calls = ScriptedCallHandle()
    analysis.set_op_handle("prim::CallFunction", analysis.scripted_calls)
    return analysis


def add_activation_handles(analysis):
    analysis.set_op_handle(**ACTIVATION_HANDLES)
    return analysis


def flop_count_analysis(model, inputs):
    """Detectron2's FlopCountAnalysis (a detector taking list[dict] inputs) with d2ext's handles."""
    from detectron2.utils.analysis import FlopCountAnalysis

    return add_flop_handles(FlopCountAnalysis(model, inputs))


def activation_count_analysis(model, inputs):
    """fvcore's ActivationCountAnalysis of a detector taking list[dict] inputs (Detectron2's
    TracingAdapter), deformable convolutions included. It counts the outputs of convolutions and
    products only, so it does not warn about the other ops."""
    from detectron2.export import TracingAdapter
    from fvcore.nn import ActivationCountAnalysis

    wrapper = TracingAdapter(model, inputs, allow_non_tensor=True)
    analysis = ActivationCountAnalysis(wrapper, wrapper.flattened_inputs)
    return (
        add_activation_handles(analysis)
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
    )


def skipped_ops(analysis) -> Counter:
    """The ops ``analysis`` met and did not count (op -> occurrences): fvcore's unsupported ops
    and the scripted functions not known to be free. Runs the analysis if it has not run."""
    skipped = Counter(analysis.unsupported_ops())
    skipped.update(getattr(analysis, "scripted_calls", ScriptedCallHandle()).uncounted)
    return skipped
