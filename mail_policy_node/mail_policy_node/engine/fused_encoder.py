"""The camera encoders' forward on CUDA with fewer launches (the engine's observe step).

Same computation as `ObsEncoder.encode_frame` (model/encoder.py), with the same weights:
- every GroupNorm and what follows it in the ResNet block is one Triton launch (`_gn_kernel.py`):
  GN + ReLU, GN + residual add + ReLU, or GN alone (the downsample branch), instead of PyTorch's
  moments / parameters / apply kernels plus a ReLU and an add;
- optionally the trunk in channels-last memory (weights converted once when the engine is built; the
  frames arrive as (B, H, W, 3), so the input already is): cuDNN's convolutions then need no NCHW <-> NHWC
  conversion kernels, and the GroupNorm kernel reads either layout (PyTorch's own CUDA GroupNorm would copy
  channels-last input back to NCHW).
Used by the engine on CUDA when EngineConfig.fused_encoder is set (the default); the module's own forward
stays the reference. Graph-capturable. Checked against the modules in Triton's CPU interpreter
(tests/engine/test_fused.py) and on the H200 (scripts/gpu/engine_parity.py: the whole engine with and
without it, 60-step episodes; docs/results/engine_parity_h200.json).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.encoder import ObsEncoder, ResNet18GN


def available() -> bool:
    """Triton is installed (the kernel is imported on first use)."""
    return importlib.util.find_spec("triton") is not None


def _kernel():
    from . import _gn_kernel

    return _gn_kernel.group_norm_act_kernel


def _pixels_ok(t: Tensor) -> bool:
    """(B, C, H, W) whose H, W axes flatten to one pixel axis with one stride (NCHW or channels-last)."""
    return t.stride(2) == t.shape[3] * t.stride(3)


def group_norm_act(x: Tensor, norm: torch.nn.GroupNorm, res: Tensor | None = None, relu: bool = True) -> Tensor:
    """relu?(GroupNorm(x) [+ res]) in one launch; x, res (B, C, H, W) in NCHW or channels-last memory; the
    output has x's layout."""
    if not _pixels_ok(x):
        x = x.contiguous()
    if res is not None and not _pixels_ok(res):
        res = res.contiguous()
    bsz, c, h, w = x.shape
    ng = norm.num_groups
    cg = c // ng
    out = torch.empty_like(x)
    hw = h * w
    bp = max(1, min(triton_pow2(hw), 4096 // max(cg, 1)))
    r = res if res is not None else x
    _kernel()[(bsz * ng,)](
        x, norm.weight, norm.bias, r, out, float(norm.eps),
        x.stride(0), x.stride(1), x.stride(3), r.stride(0), r.stride(1), r.stride(3),
        out.stride(0), out.stride(1), out.stride(3),
        HW=hw, NG=ng, CG=cg, BP=bp, HAS_RES=res is not None, RELU=relu)
    return out


def triton_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def supports(encoder: ObsEncoder) -> bool:
    """Every GroupNorm has affine weights and a power-of-two group size (the kernel's channel tile)."""
    for m in encoder.modules():
        if isinstance(m, torch.nn.GroupNorm):
            cg = m.num_channels // m.num_groups
            if m.weight is None or m.bias is None or cg != triton_pow2(cg):
                return False
    return True


def trunk_forward(trunk: ResNet18GN, x: Tensor) -> Tensor:
    """ResNet18GN.forward with the GroupNorm epilogues fused."""
    x = F.max_pool2d(group_norm_act(trunk.conv1(x), trunk.norm1), 3, 2, 1)
    for stage in trunk.stages:
        for blk in stage:
            y = group_norm_act(blk.conv1(x), blk.norm1)
            sc = x if blk.down is None else group_norm_act(blk.down[0](x), blk.down[1], relu=False)
            x = group_norm_act(blk.conv2(y), blk.norm2, res=sc)
    return x


def encode_frame(encoder: ObsEncoder, camera: str, image: Tensor) -> Tensor:
    """ObsEncoder.encode_frame through `trunk_forward`: image (B, 3, H, W) uint8 or float -> (B, F)."""
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    x = (x - encoder.mean) / encoder.std
    cam = encoder.cameras[camera]
    return cam.proj(cam.pool(trunk_forward(cam.trunk, x.to(encoder.fuse.weight.dtype))))
