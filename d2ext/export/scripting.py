"""Scripting export, as Detectron2's ``export_model.py --export-method scripting``: the model
compiled by ``torch.jit.script`` with Detectron2's static ``Instances`` fields, returning one
dict of fields per image (boxes in the padded input's pixels, no final rescale)."""

from typing import Dict, List, Tuple

import torch
from detectron2.export import scripting_with_instances
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Boxes
from torch import Tensor, nn

# Every Instances field a d2ext or Detectron2 detector creates during inference.
FIELDS = {
    "proposal_boxes": Boxes,
    "objectness_logits": Tensor,
    "pred_boxes": Boxes,
    "scores": Tensor,
    "pred_classes": Tensor,
}


class _ScriptableDense(nn.Module):
    # Returns dicts, not Instances (pytorch/pytorch#46944: a scripted module returning a
    # scripted class cannot be loaded elsewhere), as Detectron2's ScriptableAdapter.
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, inputs: Tuple[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        return [i.get_fields() for i in self.model(inputs)]


class _ScriptableRCNN(_ScriptableDense):
    def forward(self, inputs: Tuple[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        return [i.get_fields() for i in self.model.inference(inputs, do_postprocess=False)]


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of an eval-mode model; raises what the compiler raises."""
    if model.training:
        raise ValueError("Export needs an eval-mode model: call model.eval() first")
    adapter = (_ScriptableRCNN if isinstance(model, GeneralizedRCNN) else _ScriptableDense)(
        model
    ).eval()
    return scripting_with_instances(adapter, FIELDS)


def export_scripting(model: nn.Module, path: str) -> torch.jit.ScriptModule:
    """Scripts the model and saves it to ``path`` (TorchScript only: Detectron2 exports scripted
    models to no other format)."""
    scripted = script_model(model)
    torch.jit.save(scripted, path)
    return scripted


def postprocess_scripted(fields: Dict[str, Tensor], height: int, width: int):
    """The post-processing the scripted graph leaves out (as Detectron2's): the fields of one
    image run at its original size (height, width) as Instances, boxes clipped to the image and
    empty boxes dropped (``detector_postprocess``; no rescale at the original size)."""
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import Instances

    fields = dict(fields)
    if isinstance(fields.get("pred_boxes"), Tensor):  # the scripted Instances return Boxes' tensor
        fields["pred_boxes"] = Boxes(fields["pred_boxes"])
    instances = Instances((height, width), **fields)
    return detector_postprocess(instances, height, width)
