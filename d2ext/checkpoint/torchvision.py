"""torchvision's ResNet names -> Detectron2's ResNet names (the table mmdetection's ResNet and
ResNeXt share: its backbone is torchvision's layout; deformable stages add an offset conv). Loads
torchvision's ImageNet ``.pth`` (and open-mmlab's ImageNet ResNeXt files, same layout) for
training the configs/MMDet/ models, as mmdetection's ``torchvision://resnet50`` /
``open-mmlab://resnext101_32x4d``."""

from typing import Dict

import torch

from .conversion import Rule, Table, convert, find_prefix

_BN = r"(weight|bias|running_mean|running_var)"

RESNET_RULES = [
    Rule(r".*num_batches_tracked", None, "BN update counter, unused with frozen statistics"),
    Rule(r"conv1\.weight", "stem.conv1.weight"),
    Rule(rf"bn1\.{_BN}", r"stem.conv1.norm.\1"),
    # layerN (N = 1..4) is Detectron2's res(N+1); bnK normalises convK.
    #
    # Deformable 3x3 convs (mmcv's DCN / DCNv2 packs, mmdetection's `dcn` stages): the
    # offset (+ mask) conv; mmdetection 1.x named it convK_offset, as Detectron2 does.
    Rule(
        r"layer(\d)\.(\d+)\.conv2\.conv_offset\.(weight|bias)",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv2_offset.{m[3]}",
    ),
    Rule(
        r"layer(\d)\.(\d+)\.conv2_offset\.(weight|bias)",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv2_offset.{m[3]}",
    ),
    # ResNeXt (mmdetection's ResNeXt, open-mmlab's ImageNet files) has the same names, with
    # grouped 3x3 convs: only the shapes differ.
    Rule(
        r"layer(\d)\.(\d+)\.conv(\d)\.weight",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight",
    ),
    Rule(
        rf"layer(\d)\.(\d+)\.bn(\d)\.{_BN}",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
    ),
    Rule(
        r"layer(\d)\.(\d+)\.downsample\.0\.weight",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight",
    ),
    Rule(
        rf"layer(\d)\.(\d+)\.downsample\.1\.{_BN}",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
]


def resnet_prefix(target: Dict[str, torch.Tensor]) -> str:
    prefix = find_prefix(target, "stem.conv1.weight")
    if prefix is None:
        raise KeyError("the model has no Detectron2 ResNet (no key ending in 'stem.conv1.weight')")
    return prefix


def _unwrap(state: Dict) -> Dict:
    """The state dict of a file that is one (torchvision) or holds one under "state_dict"
    (mmengine-saved ImageNet files)."""
    inner = state.get("state_dict")
    return inner if isinstance(inner, dict) and "conv1.weight" not in state else state


def is_torchvision_resnet(state: Dict) -> bool:
    state = _unwrap(state)
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state


def convert_torchvision_resnet(
    state: Dict[str, torch.Tensor],
    target: Dict[str, torch.Tensor],
    source_name: str = "torchvision ResNet",
) -> Dict[str, torch.Tensor]:
    """The model's ResNet keys from a torchvision ImageNet ResNet state dict; every ResNet key of
    the model must be filled (other modules keep their initialisation)."""
    state = _unwrap(state)
    prefix = resnet_prefix(target)
    table = Table(
        name="torchvision ResNet",
        rules=[
            ("", prefix, RESNET_RULES + [Rule(r"fc\.(weight|bias)", None, "ImageNet classifier")])
        ],
        converted=[prefix],
    )
    return convert(table, state, target, source_name)
