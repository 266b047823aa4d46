"""
mmdetection (2.x / 3.x) checkpoints -> d2ext models, one table per method. A checkpoint is
``{"state_dict": {...}, "meta": {...}}`` with ``backbone.`` (torchvision-layout ResNet),
``neck.`` (FPN; Libra: ``neck.0.`` FPN, ``neck.1.`` BFP), ``bbox_head.`` or ``rpn_head.`` +
``roi_head.`` keys. Names only are changed, except that mmdetection's per-level ``Scale``
modules become d2ext's one (L,) ``scales`` parameter.

    mmdetection                              d2ext
    backbone.conv1 / bn1                     backbone.bottom_up.stem.conv1(.norm)
    backbone.layerN.B.convK / bnK            backbone.bottom_up.res(N+1).B.convK(.norm)
    backbone.layerN.B.downsample.0 / .1      backbone.bottom_up.res(N+1).B.shortcut(.norm)
    neck.lateral_convs.i.conv                backbone.fpn_lateral(s+i)     s = first FPN stage
    neck.fpn_convs.i.conv                    backbone.fpn_output(s+i); extra levels top_block.pJ
    bbox_head.{cls,reg}_convs.i.conv / .gn   head.{cls,bbox}_subnet.(3i) / .(3i+1)
    bbox_head.scales.l.scale                 head.scales[l]
    ATSS   atss_cls / atss_reg / atss_centerness          head.cls_score / bbox_pred / ctrness
    GFL    gfl_cls / gfl_reg (GFL v2: reg_conf.0 / .2)    head.cls_score / bbox_pred (dgqp.conv1 / 2)
    VFNet  vfnet_cls_dconv / vfnet_cls                    head.cls_dcn / cls_score
           vfnet_reg_conv.conv / .gn / vfnet_reg          head.reg_init_conv.0 / .1 / bbox_pred
           vfnet_reg_refine_dconv / vfnet_reg_refine      head.refine_dcn / refine_pred
           scales_refine.l.scale                          head.refine_scales[l]
    dcn_on_last_conv: {cls,reg}_convs.i.conv (DCNv2)  head.{cls,bbox}_subnet.(3i).conv
                      ….conv.conv_offset              head.{cls,bbox}_subnet.(3i).conv_offset
    deformable backbone stages (dcn): layerN.B.conv2.conv_offset   res(N+1).B.conv2_offset;
    conv2 (DCN / DCNv2 weight, ResNeXt: grouped) as any conv2

RetinaNet (Libra RetinaNet; registered in d2ext/modeling/meta_arch/libra_retinanet.py):
    bbox_head.{cls,reg}_convs.i.conv         head.{cls,bbox}_subnet.(2i)  (conv + ReLU, no norm)
    bbox_head.retina_cls / retina_reg        head.cls_score / bbox_pred   (MMDetAnchorGenerator order)
    neck.0. (FPN; P6 = conv(C5), P7 = conv(P6)) and neck.1. (BFP) as Libra Faster R-CNN's below

Libra Faster R-CNN (neck = [FPN, BFP]; FPN P2-P6 with P6 = max-pool, no conv to map):
    neck.0.lateral_convs.i / fpn_convs.i     backbone.fpn.fpn_lateral(2+i) / fpn_output(2+i)
    neck.1.refine.{g,theta,phi,conv_out}.conv   backbone.refine.{g,theta,phi,conv_out}
    rpn_head.rpn_conv / rpn_cls / rpn_reg    proposal_generator.rpn_head.conv / objectness_logits
                                             / anchor_deltas (same (H, W, A) anchor order)
    roi_head.bbox_head.shared_fcs.0 / .1     roi_heads.box_head.fc1 / fc2
    roi_head.bbox_head.fc_cls                roi_heads.box_predictor.cls_score (81: 80 classes,
                                             background last, as Detectron2)
    roi_head.bbox_head.fc_reg                roi_heads.box_predictor.bbox_pred (80 x 4, class-major
                                             (dx, dy, dw, dh), as Detectron2)
"""

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from .conversion import ConversionError, Rule, Table, convert, find_prefix
from .torchvision import RESNET_RULES, resnet_prefix

# Top-level prefixes of an mmdetection detector's state dict.
MMDET_PREFIXES = ("backbone.", "neck.", "bbox_head.", "rpn_head.", "roi_head.")


def is_mmdet_checkpoint(loaded) -> bool:
    state = loaded.get("state_dict") if isinstance(loaded, dict) else None
    return isinstance(state, dict) and any(k.startswith(MMDET_PREFIXES) for k in state)


def fpn_rules(target: Dict[str, torch.Tensor], fpn_prefix: str) -> List[Rule]:
    """mmdetection's FPN (start_level = the first stage d2ext's FPN has a lateral conv for;
    extra convs are the top block's P6/P7)."""
    stages = sorted(
        int(k[len(fpn_prefix) + len("fpn_lateral") :].split(".")[0])
        for k in target
        if k.startswith(fpn_prefix + "fpn_lateral") and k.endswith(".weight")
    )
    if not stages:
        raise ConversionError(f"the model has no FPN lateral convs under {fpn_prefix!r}")
    first, num_ins = stages[0], len(stages)

    def output(m):
        i = int(m[1])
        name = f"fpn_output{first + i}" if i < num_ins else f"top_block.p{first + i}"
        return f"{name}.{m[2]}"

    return [
        Rule(
            r"lateral_convs\.(\d+)\.conv\.(weight|bias)",
            lambda m: f"fpn_lateral{first + int(m[1])}.{m[2]}",
        ),
        Rule(r"fpn_convs\.(\d+)\.conv\.(weight|bias)", output),
    ]


# Towers of conv + GN + ReLU: Detectron2's RetinaNetHead puts the three modules of tower conv i
# at indices 3i, 3i + 1, 3i + 2.
TOWER_RULES = [
    Rule(r"cls_convs\.(\d+)\.conv\.(weight|bias)", lambda m: f"cls_subnet.{3 * int(m[1])}.{m[2]}"),
    Rule(
        r"cls_convs\.(\d+)\.gn\.(weight|bias)", lambda m: f"cls_subnet.{3 * int(m[1]) + 1}.{m[2]}"
    ),
    Rule(r"reg_convs\.(\d+)\.conv\.(weight|bias)", lambda m: f"bbox_subnet.{3 * int(m[1])}.{m[2]}"),
    Rule(
        r"reg_convs\.(\d+)\.gn\.(weight|bias)", lambda m: f"bbox_subnet.{3 * int(m[1]) + 1}.{m[2]}"
    ),
    Rule(r"scales\.(\d+)\.scale", r"scales.\1"),
    # A DCN / DCNv2 tower conv (dcn_on_last_conv) in a model whose tower conv is plain: the
    # offset conv has nowhere to go (an error, convert_mmdet_checkpoint).
    Rule(
        r"(cls|reg)_convs\.(\d+)\.conv\.conv_offset\.(weight|bias)",
        lambda m: f"{'cls' if m[1] == 'cls' else 'bbox'}_subnet.{3 * int(m[2])}.conv_offset.{m[3]}",
    ),
]


def deformable_tower_rules(target: Dict[str, torch.Tensor], head: str) -> List[Rule]:
    """Rules for the deformable tower convs of the model (mmdetection's ``dcn_on_last_conv``:
    mmcv's DCNv2 pack ``{cls,reg}_convs.i.conv`` with its ``conv_offset``; d2ext's
    DeformConvPack at tower index 3i, its deformable weight under ``.conv``), tried before
    TOWER_RULES."""
    rules = []
    for key in sorted(target):
        found = re.fullmatch(
            re.escape(head) + r"(cls|bbox)_subnet\.(\d+)\.conv_offset\.weight", key
        )
        if found is None:
            continue
        tower, index = found[1], int(found[2])
        source = "cls" if tower == "cls" else "reg"
        rules += [
            Rule(
                rf"{source}_convs\.{index // 3}\.conv\.conv_offset\.(weight|bias)",
                rf"{tower}_subnet.{index}.conv_offset.\1",
            ),
            Rule(
                rf"{source}_convs\.{index // 3}\.conv\.(weight|bias)",
                rf"{tower}_subnet.{index}.conv.\1",
            ),
        ]
    return rules


GFL_RULES = TOWER_RULES + [
    Rule(r"gfl_cls\.(weight|bias)", r"cls_score.\1"),
    Rule(r"gfl_reg\.(weight|bias)", r"bbox_pred.\1"),
    # GFL v2's DGQP (GFocalV2's GFocalHead): Sequential(conv 1x1, ReLU, conv 1x1, Sigmoid).
    Rule(r"reg_conf\.0\.(weight|bias)", r"dgqp.conv1.\1"),
    Rule(r"reg_conf\.2\.(weight|bias)", r"dgqp.conv2.\1"),
    Rule(r"integral\.project", None, "the constant bins 0..reg_max of the integral"),
    Rule(r"distribution_project\.project", None, "the constant bins 0..reg_max of the integral"),
]


@dataclass
class MMDetHead:
    """How to recognise and convert one method's mmdetection dense head (``bbox_head.``)."""

    name: str
    signature: Tuple[str, str]  # (the file key that tells the method, the key the model must have)
    rules: List[Rule]


# Dense heads by method, tried in order: the first whose file key is in a checkpoint converts it.
# A method outside this module adds its own with register_mmdet_head.
MMDET_HEADS: List[MMDetHead] = []


def register_mmdet_head(
    name: str, signature: Tuple[str, str], rules: List[Rule], before: Optional[str] = None
):
    """Registers an mmdetection dense head ``name``: checkpoints holding ``signature[0]`` convert
    by ``rules`` (under ``bbox_head.`` -> ``head.``) into models holding ``signature[1]``.
    ``before``: a registered head to try after this one (a head whose keys include another's)."""
    head = MMDetHead(name, signature, rules)
    at = next((i for i, h in enumerate(MMDET_HEADS) if h.name == before), len(MMDET_HEADS))
    MMDET_HEADS.insert(at, head)
    return head


register_mmdet_head(
    "ATSS",
    ("bbox_head.atss_centerness.weight", "head.ctrness.weight"),
    TOWER_RULES
    + [
        Rule(r"atss_cls\.(weight|bias)", r"cls_score.\1"),
        Rule(r"atss_reg\.(weight|bias)", r"bbox_pred.\1"),
        Rule(r"atss_centerness\.(weight|bias)", r"ctrness.\1"),
    ],
)
register_mmdet_head("GFL", ("bbox_head.gfl_reg.weight", "head.bbox_pred.weight"), GFL_RULES)
# A GFocalV2 checkpoint has GFL's keys too, and needs MODEL.GFL.DGQP: tried first.
register_mmdet_head(
    "GFL v2", ("bbox_head.reg_conf.0.weight", "head.dgqp.conv1.weight"), GFL_RULES, before="GFL"
)
register_mmdet_head(
    "VFNet",
    ("bbox_head.vfnet_cls.weight", "head.refine_pred.weight"),
    TOWER_RULES
    + [
        Rule(r"vfnet_reg_conv\.conv\.(weight|bias)", r"reg_init_conv.0.\1"),
        Rule(r"vfnet_reg_conv\.gn\.(weight|bias)", r"reg_init_conv.1.\1"),
        Rule(r"vfnet_reg\.(weight|bias)", r"bbox_pred.\1"),
        Rule(r"vfnet_reg_refine_dconv\.weight", r"refine_dcn.weight"),
        Rule(r"vfnet_reg_refine\.(weight|bias)", r"refine_pred.\1"),
        Rule(r"scales_refine\.(\d+)\.scale", r"refine_scales.\1"),
        Rule(r"vfnet_cls_dconv\.weight", r"cls_dcn.weight"),
        Rule(r"vfnet_cls\.(weight|bias)", r"cls_score.\1"),
    ],
)

# Two-stage detectors: module prefix -> (source prefix, d2ext prefix, rules).
LIBRA_NECK_RULES = [
    # mmcv's NonLocal2d: ConvModules (conv with bias, no norm) named g / theta / phi / conv_out.
    Rule(r"refine\.(g|theta|phi|conv_out)\.conv\.(weight|bias)", r"refine.\1.\2"),
]
RPN_HEAD_RULES = [
    Rule(r"rpn_conv\.(weight|bias)", r"conv.\1"),
    Rule(r"rpn_cls\.(weight|bias)", r"objectness_logits.\1"),
    Rule(r"rpn_reg\.(weight|bias)", r"anchor_deltas.\1"),
]
SHARED_2FC_BBOX_HEAD_RULES = [
    Rule(r"shared_fcs\.(\d+)\.(weight|bias)", lambda m: f"box_head.fc{int(m[1]) + 1}.{m[2]}"),
    Rule(r"fc_cls\.(weight|bias)", r"box_predictor.cls_score.\1"),
    Rule(r"fc_reg\.(weight|bias)", r"box_predictor.bbox_pred.\1"),
]

# Libra R-CNN's two-stage layout (rpn_head. + roi_head. + BFP neck) has its own table below.
LIBRA_SIGNATURE = ("neck.1.refine.conv_out.conv.weight", "backbone.refine.conv_out.weight")


def checkpoint_method(state: Dict[str, torch.Tensor]) -> Tuple[str, Tuple[str, str]]:
    """The method of an mmdetection state dict and its signature (file key, model key)."""
    for head in MMDET_HEADS:
        if head.signature[0] in state:
            return head.name, head.signature
    if LIBRA_SIGNATURE[0] in state:
        return "Libra R-CNN", LIBRA_SIGNATURE
    heads = sorted(
        {
            k.split(".")[0] + "." + k.split(".")[1]
            for k in state
            if k.startswith(("bbox_head.", "roi_head."))
        }
    )
    raise ConversionError(
        f"d2ext has no conversion table for this mmdetection head (modules {heads}); it converts "
        f"{[h.name for h in MMDET_HEADS] + ['Libra R-CNN']}"
    )


def mmdet_table(state: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]) -> Table:
    """The table converting this mmdetection state dict to the model whose state is ``target``."""
    method, (_, model_key) = checkpoint_method(state)
    if model_key not in target:
        raise ConversionError(
            f"the checkpoint is an mmdetection {method} model but the config builds a model "
            f"without {model_key!r}: use the matching configs/MMDet/ config"
        )
    backbone = resnet_prefix(target)
    fpn_prefixes = sorted({k.split("fpn_lateral")[0] for k in target if "fpn_lateral" in k})
    if len(fpn_prefixes) != 1:
        raise ConversionError(f"the model needs exactly one FPN, it has {fpn_prefixes or 'none'}")
    fpn = fpn_prefixes[0]
    if method == "Libra R-CNN":
        for key in ("roi_head.bbox_head.fc_cls.weight", "rpn_head.rpn_conv.weight"):
            if key not in state:
                raise ConversionError(f"the mmdetection Libra R-CNN checkpoint has no {key!r}")
        bfp = find_prefix(target, "refine.conv_out.weight")
        rpn = find_prefix(target, "objectness_logits.weight")
        roi = find_prefix(target, "box_predictor.cls_score.weight")
        return Table(
            name=f"mmdetection {method}",
            rules=[
                ("backbone.", backbone, RESNET_RULES),
                ("neck.0.", fpn, fpn_rules(target, fpn)),
                ("neck.1.", bfp, LIBRA_NECK_RULES),
                ("rpn_head.", rpn, RPN_HEAD_RULES),
                ("roi_head.bbox_head.", roi, SHARED_2FC_BBOX_HEAD_RULES),
            ],
            converted=["backbone.", rpn, roi],
        )
    head = "head."
    if LIBRA_SIGNATURE[0] in state:  # a dense detector with Libra's neck = [FPN, BFP]
        bfp = find_prefix(target, "refine.conv_out.weight")
        if bfp is None:
            raise ConversionError(
                f"the checkpoint is an mmdetection {method} with a balanced feature pyramid (neck.1) but "
                f"the config builds no BFP: use the matching configs/MMDet/ config"
            )
        necks = [("neck.0.", fpn, fpn_rules(target, fpn)), ("neck.1.", bfp, LIBRA_NECK_RULES)]
    else:
        necks = [("neck.", fpn, fpn_rules(target, fpn))]
    return Table(
        name=f"mmdetection {method}",
        rules=[
            ("backbone.", backbone, RESNET_RULES),
            *necks,
            (
                "bbox_head.",
                head,
                deformable_tower_rules(target, head)
                + next(h.rules for h in MMDET_HEADS if h.name == method),
            ),
        ],
        converted=["backbone.", head],
        stacked={head + "scales": head + "scales", head + "refine_scales": head + "refine_scales"},
    )


def convert_mmdet_checkpoint(
    loaded: Dict, target: Dict[str, torch.Tensor], source_name: str = "mmdetection checkpoint"
) -> Dict[str, torch.Tensor]:
    """d2ext state dict from an mmdetection checkpoint (``{"state_dict": ..., "meta": ...}``)."""
    state = loaded["state_dict"]
    out = convert(mmdet_table(state, target), state, target, source_name)
    # Deformable convs of the file that the model builds as plain convs: their weights would
    # load into the plain convs with the right shapes and compute something else.
    offsets = sorted(k for k in out if "offset" in k.rsplit(".", 2)[-2] and k not in target)
    if offsets:
        raise ConversionError(
            f"{source_name}: the mmdetection checkpoint has deformable convs (DCN / DCNv2) where the "
            f"config builds plain convs: {len(offsets)} offset conv key(s) with no place in the model, "
            f"e.g. {offsets[:4]}. Use the matching configs/MMDet/ config (MODEL.RESNETS."
            f"DEFORM_ON_PER_STAGE / DEFORM_MODULATED, MODEL.VFNET.DCN_ON_LAST_CONV)."
        )
    return out
