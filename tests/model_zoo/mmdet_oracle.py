"""
mmdetection 3.3 as a test oracle (never imported by d2ext): builds mmdetection's own detector
classes from its shipped configs with random weights and saves them in its checkpoint format.

Two environment stand-ins, needed because mmcv-lite ships no compiled ops:

- mmdet 3.3 asserts ``mmcv < 2.2.0`` at import; mmcv-lite 2.2.0 is the only pure-Python mmcv
  for this torch. ``import_mmdet`` reports mmcv as 2.1.0 for the duration of that one import
  and restores the real version string; nothing else is patched in mmdet.
- ``mmcv.ops`` imports its C extension ``mmcv._ext``; a stub module is registered whose ops
  raise, and the ops the tested models run are replaced by torchvision's: ``nms`` (and
  through it mmcv's ``batched_nms``) by ``torchvision.ops.nms``, ``DeformConv2d`` /
  ``deform_conv2d`` and ``modulated_deform_conv2d`` (which mmcv's ``DCN`` / ``DCNv2`` packs call:
  mmdetection's deformable ResNet / ResNeXt stages, ``dcn_on_last_conv``) by
  ``torchvision.ops.deform_conv2d`` (weight groups, offset groups and the mask included),
  ``RoIAlign`` / ``roi_align`` by ``torchvision.ops.roi_align`` (aligned=True, mmcv's
  default). These are the same ops d2ext runs, so they cannot hide a difference in the models
  themselves.
"""

import importlib.util
import os
import sys
import types

import pytest
import torch

_READY = False


def _stub_ext():
    ext = types.ModuleType("mmcv._ext")

    def missing(name):
        def op(*args, **kwargs):
            raise NotImplementedError(f"mmcv op {name} has no stand-in in this test")

        return op

    def module_getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(name)

    ext.__getattr__ = module_getattr
    sys.modules["mmcv._ext"] = ext


def _torchvision_ops():
    import mmcv.ops
    import torchvision

    # The submodules (mmcv.ops re-exports functions under the same names).
    mmcv_deform = sys.modules["mmcv.ops.deform_conv"]
    mmcv_nms = sys.modules["mmcv.ops.nms"]
    mmcv_roi_align = sys.modules["mmcv.ops.roi_align"]

    def nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
        # mmcv's nms: (dets (K, 5) sorted by score, kept indices).
        assert offset == 0 and score_threshold == 0 and max_num == -1
        keep = torchvision.ops.nms(boxes.float(), scores.float(), float(iou_threshold))
        return torch.cat([boxes[keep], scores[keep, None]], dim=1), keep

    mmcv_nms.nms = nms
    mmcv.ops.nms = nms

    class DeformConv2d(torch.nn.Module):
        """mmcv's DeformConv2d parameters (weight only, no bias) on torchvision's op."""

        def __init__(
            self,
            in_channels,
            out_channels,
            kernel_size,
            stride=1,
            padding=0,
            dilation=1,
            groups=1,
            deform_groups=1,
            bias=False,
            im2col_step=32,
        ):
            super().__init__()
            assert not bias and groups == 1
            k = torch.nn.modules.utils._pair(kernel_size)
            self.stride, self.padding = (
                torch.nn.modules.utils._pair(stride),
                torch.nn.modules.utils._pair(padding),
            )
            self.dilation = torch.nn.modules.utils._pair(dilation)
            self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
            self.weight = torch.nn.Parameter(torch.empty(out_channels, in_channels, *k))
            torch.nn.init.kaiming_uniform_(self.weight, a=5**0.5)

        def forward(self, x, offset):
            return torchvision.ops.deform_conv2d(
                x,
                offset,
                self.weight,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
            )

    mmcv_deform.DeformConv2d = DeformConv2d
    mmcv.ops.DeformConv2d = DeformConv2d

    # The functions mmcv's DeformConv2dPack ("DCN") and ModulatedDeformConv2dPack ("DCNv2") call
    # (mmdetection's ResNet / ResNeXt `dcn` stages, heads' dcn_on_last_conv): torchvision's op,
    # whose weight groups (ResNeXt) and offset groups follow from the tensor shapes.
    mmcv_modulated = sys.modules["mmcv.ops.modulated_deform_conv"]

    def _check_groups(input, offset, weight, groups, deform_groups):
        kh, kw = weight.shape[2:]
        assert input.shape[1] == weight.shape[1] * groups, (input.shape, weight.shape, groups)
        assert offset.shape[1] == 2 * kh * kw * deform_groups, (offset.shape, deform_groups)

    def deform_conv2d(
        input,
        offset,
        weight,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deform_groups=1,
        bias=False,
        im2col_step=32,
    ):
        assert not bias
        _check_groups(input, offset, weight, groups, deform_groups)
        return torchvision.ops.deform_conv2d(
            input, offset, weight, stride=stride, padding=padding, dilation=dilation
        )

    def modulated_deform_conv2d(
        input,
        offset,
        mask,
        weight,
        bias,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deform_groups=1,
    ):
        _check_groups(input, offset, weight, groups, deform_groups)
        return torchvision.ops.deform_conv2d(
            input,
            offset,
            weight,
            bias,
            stride=stride,
            padding=padding,
            dilation=dilation,
            mask=mask,
        )

    mmcv_deform.deform_conv2d = deform_conv2d
    mmcv_modulated.modulated_deform_conv2d = modulated_deform_conv2d
    mmcv.ops.deform_conv2d = deform_conv2d
    mmcv.ops.modulated_deform_conv2d = modulated_deform_conv2d

    class RoIAlign(torch.nn.Module):
        def __init__(
            self,
            output_size,
            spatial_scale=1.0,
            sampling_ratio=0,
            pool_mode="avg",
            aligned=True,
            use_torchvision=False,
        ):
            super().__init__()
            assert pool_mode == "avg"
            self.output_size = torch.nn.modules.utils._pair(output_size)
            self.spatial_scale, self.sampling_ratio, self.aligned = (
                spatial_scale,
                sampling_ratio,
                aligned,
            )

        def forward(self, x, rois):
            return torchvision.ops.roi_align(
                x, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
            )

    mmcv_roi_align.RoIAlign = RoIAlign
    mmcv.ops.RoIAlign = RoIAlign


def import_mmdet():
    """Imports mmdet 3.3 (skipping the test when it is not installed) with the stand-ins above."""
    global _READY
    # Not pytest.importorskip: it would import mmdet before the version stand-in.
    if importlib.util.find_spec("mmdet") is None or importlib.util.find_spec("mmcv") is None:
        pytest.skip("mmdetection is a test-only dependency (requirements-test.txt)")
    if _READY:
        return
    import mmcv

    _stub_ext()
    real_version = mmcv.__version__
    mmcv.__version__ = "2.1.0"  # only for mmdet/__init__'s version assert
    try:
        import mmdet  # noqa: F401
    finally:
        mmcv.__version__ = real_version
    _torchvision_ops()
    from mmdet.utils import register_all_modules

    register_all_modules()
    _READY = True


def mmdet_config(relative_path: str):
    """A config shipped inside the mmdet package (mmdet/.mim/configs/<relative_path>)."""
    import mmdet
    from mmengine.config import Config

    return Config.fromfile(
        os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", relative_path)
    )


def build_random_mmdet_model(
    relative_path: str, seed: int = 0, cls_bias: float = -2.0, init_weights: bool = True
):
    """
    mmdetection's detector of that config, with every parameter and BN statistic random
    (reproducibly), in eval mode. Random BN statistics, GN affines and scales make a mapping
    or normalisation mistake visible; head weights are large enough (cls bias ``cls_bias``)
    that thousands of (location, class) pairs pass the score threshold. ``init_weights=False``
    skips mmengine's ``init_weights`` (seconds for an R-101, with a log line per parameter): the
    convs keep PyTorch's default initialisation, everything above is randomised all the same.
    """
    import_mmdet()
    from mmdet.registry import MODELS

    cfg = mmdet_config(relative_path)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    if init_weights:
        model.init_weights()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.3 + 0.5 * torch.rand(c, generator=g))
                module.bias.copy_(0.1 * torch.randn(c, generator=g))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                module.running_var.copy_(0.5 + torch.rand(c, generator=g))
            elif isinstance(module, torch.nn.GroupNorm):
                c = module.num_channels
                module.weight.copy_(0.5 + torch.rand(c, generator=g))
                module.bias.copy_(0.1 * torch.randn(c, generator=g))
        head = getattr(model, "bbox_head", None)
        if head is not None:
            for name, p in head.named_parameters():
                if "convs" in name or "norm" in name or ".gn." in name:
                    continue
                if name.endswith("scale"):
                    p.copy_(0.7 + 0.6 * torch.rand(p.shape, generator=g))
                elif p.dim() == 4:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            for name, p in head.named_parameters():
                if name.split(".")[0] in (
                    "atss_cls",
                    "gfl_cls",
                    "vfnet_cls",
                    "retina_cls",
                ) and name.endswith("bias"):
                    p.add_(cls_bias)
        _randomise_two_stage(model, g)
        _randomise_offset_convs(model, g)
    model.eval()
    return model, cfg


def _randomise_offset_convs(model, g):
    """mmcv's DCN / DCNv2 packs start with a zero offset conv (a plain conv at first): random
    weights give offsets of about half a pixel and masks spread around 0.5, so the offset conv's
    mapping, the offset layout and the mask split are all visible in the outputs."""
    for name, module in model.named_modules():
        if name.endswith("conv_offset") and isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * (0.5 / fan_in**0.5))
            module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=g))


def _randomise_two_stage(model, g):
    """Two-stage detectors (Libra R-CNN): mmdetection initialises the BFP's non-local output conv
    to zero (the block starts as the identity) and the RPN / R-CNN heads with std 0.01; random
    values make every weight of the neck and heads visible in the outputs, and the R-CNN
    classifier peaked enough that hundreds of (box, class) pairs pass score_thr 0.05."""
    scales = {
        "neck.1.refine.": (0.01, 0.1),  # NonLocal2d 1x1 convs, 256 -> 256
        "rpn_head.rpn_conv.": (0.02, 0.1),
        "rpn_head.rpn_cls.": (0.05, 0.5),
        "rpn_head.rpn_reg.": (0.02, 0.1),
        "roi_head.bbox_head.shared_fcs.": (0.01, 0.1),
        "roi_head.bbox_head.fc_cls.": (0.1, 0.5),
        "roi_head.bbox_head.fc_reg.": (0.02, 0.1),
    }
    for name, p in model.named_parameters():
        for prefix, (w_std, b_std) in scales.items():
            if name.startswith(prefix):
                std = w_std if name.endswith("weight") else b_std
                p.copy_(std * torch.randn(p.shape, generator=g))


def save_mmdet_checkpoint(model, path):
    """mmdetection's checkpoint format: {"state_dict": ..., "meta": ...}."""
    torch.save({"state_dict": model.state_dict(), "meta": {"mmdet_version": "3.3.0"}}, path)
