"""Tracing export: the model with its post-processing (top-k, box decoding, clipping, NMS) as
one graph from a (3, H, W) image to flat tensors, as Detectron2's ``export_model.py`` does.

The flat outputs of one image are ``pred_boxes`` (D, 4) xyxy in input-image pixels,
``pred_classes`` (D,), ``scores`` (D,) and ``image_size`` (2,): the fields of the model's
``Instances`` in the sorted order of Detectron2's ``flatten_to_tuple``.
"""

import warnings
from typing import List

import torch
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN
from torch import Tensor, nn

from .onnx_ops import register_onnx_ops

# Opset of the ONNX files: 19 is the first with DeformConv (VFNet's head) and is at least the
# 17 that GFL's Tensor.unflatten needs.
ONNX_OPSET = 19


def tracing_adapter(model: nn.Module, image: Tensor) -> TracingAdapter:
    """
    Detectron2's TracingAdapter around an eval-mode model, called with one image (3, H, W) in
    the model's input format. R-CNN models skip the final rescale (``do_postprocess=False``,
    as Detectron2's export): their boxes are in the input image's pixels like the dense
    models', whose rescale to the input's own size is the identity.
    """
    if model.training:
        raise ValueError("Export needs an eval-mode model: call model.eval() first")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(
            f"The sample image must be a (3, H, W) tensor, got shape {tuple(image.shape)}"
        )
    inference = None
    if isinstance(model, GeneralizedRCNN):

        def inference(model, inputs):
            return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]

    # A new module is in training mode: torch.onnx.export would restore that mode afterwards,
    # switching the wrapped model to training with it.
    return TracingAdapter(model, [{"image": image}], inference).eval()


def output_names(adapter: TracingAdapter, image: Tensor) -> List[str]:
    """The names of the flat outputs (e.g. pred_boxes, pred_classes, scores, image_size), read
    from the adapter's output schema after one call."""
    with torch.no_grad():
        adapter(image)
    instances_schema = adapter.outputs_schema.schemas[0].schemas[0]
    return list(instances_schema.keys) + ["image_size"]


def export_torchscript_tracing(model: nn.Module, image: Tensor) -> torch.jit.ScriptModule:
    """A traced TorchScript module: image (3, H, W) -> flat outputs (see the module docstring).
    Every image size works: the graph keeps sizes as tensors (Detectron2's tracing mode)."""
    adapter = tracing_adapter(model, image)
    with warnings.catch_warnings():
        # TracerWarnings about asserts and Python scalars; the tests check other sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(adapter, (image,), check_trace=False)


def export_onnx(model: nn.Module, image: Tensor, path: str, opset: int = ONNX_OPSET) -> List[str]:
    """
    Writes an ONNX file with a dynamic image height and width: input ``image`` (3, H, W)
    float32, outputs as the module docstring says. Returns the output names.

    Uses the TorchScript-based exporter (``dynamo=False``), the one that exports
    Detectron2's traced post-processing (data-dependent shapes after NMS).
    """
    if opset < 17:
        raise ValueError(
            f"ONNX opset {opset} is too old: GFL's head needs 17 (unflatten), VFNet's 19 (DeformConv)"
        )
    register_onnx_ops(opset)
    adapter = tracing_adapter(model, image)
    names = output_names(adapter, image)
    dynamic_axes = {"image": {1: "height", 2: "width"}}
    dynamic_axes.update({name: {0: "detections"} for name in names if name != "image_size"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            adapter,
            (image,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=names,
            dynamic_axes=dynamic_axes,
        )
    return names
