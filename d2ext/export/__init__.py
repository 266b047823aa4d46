"""Export of d2ext (and Detectron2) detectors to TorchScript and ONNX, in the shape of
Detectron2's ``tools/deploy/export_model.py``: tracing through Detectron2's ``TracingAdapter``
(post-processing included) or scripting through ``scripting_with_instances``."""

from .scripting import export_scripting, postprocess_scripted, script_model
from .tracing import (
    ONNX_OPSET,
    export_onnx,
    export_torchscript_tracing,
    output_names,
    tracing_adapter,
)

__all__ = [
    "ONNX_OPSET",
    "export_onnx",
    "export_scripting",
    "export_torchscript_tracing",
    "output_names",
    "postprocess_scripted",
    "script_model",
    "tracing_adapter",
]
