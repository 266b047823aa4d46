"""torchvision's DeformConv2d (same parameters, so the same checkpoints) with two changes:

- On the CPU it computes the same convolution with d2ext's compiled op (:func:`deform_conv2d`,
  ``torch.ops.d2ext.deform_conv2d``: sampled columns built chunk by chunk, channels last, times the
  weight by ATen's matmul; weight and offset groups, DCN v1 and v2). Forward + backward on 2
  cores, against a dense convolution of the same shape: ~1.4x for a 256-channel backbone stage
  (2x256x50x84, v2), ~2x for a 64-channel VFNet head level (8x64x36x60), where the grid_sample +
  matmul path (:func:`sampled_deform_conv2d`, one weight and offset group) takes ~3x the op's
  time and torchvision's CPU kernel (its loops on one thread) 13-27x (tools/benchmark_ops.py
  --only deform_conv2d). Without the compiled ops it warns once and takes that grid_sample path
  (torchvision's op for groups).
  Traced, scripted and exported models (torch.jit, ONNX, torch.export) keep torchvision's op
  (ONNX DeformConv, d2ext.export.onnx_ops), as do CUDA tensors (the op's CUDA kernels compile
  but have not run on a GPU yet).
- Inside torch.autocast it runs in float32: torchvision's CPU kernel has no bfloat16 version (and
  registers no CPU autocast rule), and the sampling offsets lose too much in half precision.
Scriptable: TorchScript compiles the plain call and skips the other branches."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import DeformConv2d as _TVDeformConv2d
from torchvision.ops import deform_conv2d as deform_conv2d_torchvision

from ._extension import has_ops, warn_fallback_once
from .precision import autocast_enabled, autocast_off


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _whole_pixels_right(p: Tensor, size: int) -> Tensor:
    """Positions within 4 eps * size of a whole pixel moved just right of it (4 eps * size:
    float32, 1e-4 px at 200 px), with gradient 1. grid_sample's round trip to pixel coordinates
    rounds a whole pixel to 1 ulp below it about as often as not, which puts it in the cell to
    its left: the same value but the other one-sided offset gradient. torchvision floors (the
    cell to the right); it matters for zero-initialised offsets, where every point is whole.
    Applied only when the offsets need a gradient, so inference samples exactly where asked."""
    tol = 4 * torch.finfo(p.dtype).eps * size
    off_whole = p - torch.round(p)
    shift = torch.where(off_whole.abs() < tol, tol - off_whole, torch.zeros_like(p))
    return p + shift.detach()


def sampled_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """``torchvision.ops.deform_conv2d`` for one weight group and one offset group, computed as
    im2col by ``F.grid_sample`` (bilinear, zero outside the image: torchvision's interpolation)
    followed by one matmul; autograd gives the input, offset, mask and weight gradients.

    Offsets use torchvision's layout: channel 2k is the y and 2k+1 the x displacement of kernel
    point k = i * kw + j. Memory: autograd keeps the sampled columns, (N, C * kh * kw, H_out *
    W_out) values (twice with a mask), until the backward pass, where torchvision's kernel builds
    them per chunk and again in its backward: ~0.3 GB per call at 2 x 256 x 100 x 167 in float32.
    Speed: grid_sample's CPU kernel parallelises over the batch, matmul over everything, so a
    batch of one samples on one thread."""
    n, c, h, w = input.shape
    c_out, c_in, kh, kw = weight.shape
    if c_in != c or offset.shape[1] != 2 * kh * kw:
        raise ValueError(
            f"sampled_deform_conv2d supports one weight and one offset group: input {tuple(input.shape)}, "
            f"weight {tuple(weight.shape)}, offset {tuple(offset.shape)}"
        )
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if tuple(offset.shape) != (n, 2 * kh * kw, h_out, w_out):
        raise ValueError(
            f"offset shape {tuple(offset.shape)}: expected {(n, 2 * kh * kw, h_out, w_out)} "
            f"for input {tuple(input.shape)} and weight {tuple(weight.shape)}"
        )
    k = kh * kw
    # Sampling positions in input pixels: the regular grid of the convolution plus the offsets.
    kernel_y = (torch.arange(kh, device=input.device, dtype=offset.dtype) * dh).repeat_interleave(
        kw
    )
    kernel_x = (torch.arange(kw, device=input.device, dtype=offset.dtype) * dw).repeat(kh)
    out_y = torch.arange(h_out, device=input.device, dtype=offset.dtype) * sh - ph
    out_x = torch.arange(w_out, device=input.device, dtype=offset.dtype) * sw - pw
    offset = offset.view(n, k, 2, h_out, w_out)
    y = offset[:, :, 0] + (kernel_y.view(k, 1, 1) + out_y.view(1, h_out, 1))
    x = offset[:, :, 1] + (kernel_x.view(k, 1, 1) + out_x.view(1, 1, w_out))
    if offset.requires_grad and torch.is_grad_enabled():  # only the offset gradient needs it
        x, y = _whole_pixels_right(x, w), _whole_pixels_right(y, h)
    # grid_sample's coordinates for align_corners=False: pixel p maps to (2p + 1) / size - 1.
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    grid = grid.view(n, k * h_out, w_out, 2)
    columns = F.grid_sample(
        input, grid.to(input.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    columns = columns.view(n, c, k, h_out * w_out)
    if mask is not None:
        if tuple(mask.shape) != (n, k, h_out, w_out):
            raise ValueError(f"mask shape {tuple(mask.shape)}: expected {(n, k, h_out, w_out)}")
        columns = columns * mask.reshape(n, 1, k, h_out * w_out)
    out = torch.matmul(weight.reshape(c_out, c * k), columns.view(n, c * k, h_out * w_out))
    out = out.view(n, c_out, h_out, w_out)
    return out if bias is None else out + bias.view(1, c_out, 1, 1)


def _half_to_float(t: Optional[Tensor]) -> Optional[Tensor]:
    if t is not None and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """``torchvision.ops.deform_conv2d`` (same arguments, layout, values and gradients: bilinear
    sampling, zero outside the image; DCN v1, or v2 with ``mask``; weight groups from
    ``weight.shape[1]``, offset groups from ``offset.shape[1]``) by d2ext's compiled op,
    ``torch.ops.d2ext.deform_conv2d``, on the CPU or CUDA (CUDA: compiled, not yet run on a GPU).
    It never keeps the sampled columns: the forward builds them chunk by chunk (a bounded buffer)
    and the backward rebuilds them for the weight gradient. float32 / float64; half and bfloat16
    are computed and returned in float32, as under torch.autocast. Without the compiled ops:
    torchvision's op, after one warning."""
    if not has_ops():
        warn_fallback_once("deform_conv2d")
        return deform_conv2d_torchvision(
            input,
            offset,
            weight,
            bias,
            stride=stride,
            padding=padding,
            dilation=dilation,
            mask=mask,
        )
    input, offset, weight, bias, mask = (
        _half_to_float(t) for t in (input, offset, weight, bias, mask)
    )
    return torch.ops.d2ext.deform_conv2d(
        input, offset, weight, bias, _pair(stride), _pair(padding), _pair(dilation), mask
    )


def _cpu_eager(input: Tensor) -> bool:
    """CPU tensors in eager (and torch.compile'd) code: not traced, ONNX-exported or torch.export'ed,
    which keep torchvision's op."""
    if input.device.type != "cpu" or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return not torch.compiler.is_exporting()  # torch.export: a graph with torchvision's op


def _one_group(input: Tensor, offset: Tensor, weight: Tensor) -> bool:
    """What sampled_deform_conv2d computes: one weight and one offset group."""
    return (
        weight.shape[1] == input.shape[1]
        and offset.shape[1] == 2 * weight.shape[2] * weight.shape[3]
    )


class DeformConv2d(_TVDeformConv2d):
    def forward(self, input: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        # A branch TorchScript skips (no `and` in the condition: it would compile that).
        if not torch.jit.is_scripting():
            if autocast_enabled():
                with autocast_off():
                    return self._eager(
                        input.float(), offset.float(), None if mask is None else mask.float()
                    )
            return self._eager(input, offset, mask)
        return self._deform_conv(input, offset, mask)

    @torch.jit.unused
    def _eager(self, input: Tensor, offset: Tensor, mask: Optional[Tensor]) -> Tensor:
        if _cpu_eager(input):
            if has_ops():
                return deform_conv2d(
                    input,
                    offset,
                    self.weight,
                    self.bias,
                    self.stride,
                    self.padding,
                    self.dilation,
                    mask,
                )
            warn_fallback_once("DeformConv2d")
            if _one_group(input, offset, self.weight):
                return sampled_deform_conv2d(
                    input,
                    offset,
                    self.weight,
                    self.bias,
                    self.stride,
                    self.padding,
                    self.dilation,
                    mask,
                )
        return self._deform_conv(input, offset, mask)

    def _deform_conv(self, input: Tensor, offset: Tensor, mask: Optional[Tensor]) -> Tensor:
        # torchvision's DeformConv2d.forward (TorchScript has no super() call).
        return deform_conv2d_torchvision(
            input,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )
