"""DP-UNet: the CNN-based Diffusion Policy of Chi et al. (RSS 2023) as a backbone family: a 1-D temporal
UNet over the action chunk, FiLM-conditioned on the observation tokens and the diffusion step.

The J embedded noisy actions (B, J, D) are the UNet's input sequence (D channels, length J) and its
output the same shape, read out by the policy's action head like every backbone's. The condition is the
window's observation tokens flattened, [goal, obs_1 .. obs_{K*P}] (B, N * D), with the time embedding
(B, D) appended: Chi et al.'s global conditioning (their K steps' observation features flattened, and the
diffusion step embedding). N is fixed per config (BackboneConfig.n_obs_tokens), so is the condition.
DDPM head only (a diffusion policy: no BC queries); no streaming layout (it is not a recurrent model:
the engine runs it on its generic window path, full recompute per denoising step).

BackboneConfig fields, reused (it has no field of its own):
- d_model: the input and output channels (the token width D);
- n_layers: the UNet's levels L (Chi et al.'s len(down_dims)); level i has width expand * d_model * 2**i;
- expand: the first level's width over d_model.
Kernel size 5 and GroupNorm with 8 groups are fixed, as in Chi et al.'s configurations (fewer groups only
where a width is not a multiple of 8). d_state, d_conv, n_heads, dropout and init are not used: their UNet
has no dropout and keeps PyTorch's default initialisation, and so does this one.

Structure, widths w_0 .. w_{L-1}:

    down level i:  Block(c_in -> w_i), Block(w_i -> w_i), keep s_i, stride-2 conv (not at the last level)
    mid:           Block(w_{L-1}), Block(w_{L-1})
    up level i = L-1 .. 1:  concat s_i, Block(2 w_i -> w_{i-1}), Block(w_{i-1}), transposed conv (x2 length)
    out:           Conv1d(5) + GroupNorm + Mish (w_0), Conv1d 1x1 (w_0 -> D)

Block: Conv1d(5) + GroupNorm + Mish, FiLM (per-channel scale and bias, a Linear of Mish(condition)),
Conv1d(5) + GroupNorm + Mish, plus the input (through a 1x1 conv where the widths differ).
As in Chi et al.'s code the up path has one level fewer than the down path, so s_0 (full resolution) is
not used: everything reaches the output through the stride-2 and transposed convs. Kept, for a faithful
baseline (and their parameter counts); on a tiny overfit it trains more slowly than one level without
resampling does (tests/model/test_unet.py).

Chunk lengths: the stride-2 conv maps a length n to ceil(n / 2) and the transposed conv doubles it; the
up path crops to the length its level had on the way down, so any J works (J = 5, 3 levels: 5 -> 3 -> 2,
then 2 -> 4, cropped to 3, -> 6, cropped to 5). No padding steps ever enter a GroupNorm's statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import BackboneConfig

KERNEL_SIZE = 5  # temporal convolutions (checkpoint_limits.unet1d_params counts with the same)
GROUPS = 8  # GroupNorm groups (gcd with the width: a width that is no multiple of 8 gets fewer)


def unet_widths(cfg: BackboneConfig) -> list[int]:
    """Channels of the L levels: expand * d_model, doubled per level (paper: 256, 512, 1024)."""
    return [cfg.expand * cfg.d_model * 2 ** i for i in range(cfg.n_layers)]


def condition_dim(cfg: BackboneConfig) -> int:
    """Features of the global condition: N observation tokens and the time embedding, D each."""
    return (cfg.n_obs_tokens + 1) * cfg.d_model


class ConvNormMish(nn.Sequential):
    """Conv1d (kernel 5, length kept) -> GroupNorm -> Mish. (B, C_in, L) -> (B, C_out, L)"""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv1d(c_in, c_out, KERNEL_SIZE, padding=KERNEL_SIZE // 2),
                         nn.GroupNorm(math.gcd(GROUPS, c_out), c_out), nn.Mish())


class FiLMBlock(nn.Module):
    """Residual block of two ConvNormMish, the condition's per-channel scale and bias between them."""

    def __init__(self, c_in: int, c_out: int, c_cond: int):
        super().__init__()
        self.conv1 = ConvNormMish(c_in, c_out)
        self.film = nn.Linear(c_cond, 2 * c_out)
        self.conv2 = ConvNormMish(c_out, c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x (B, C_in, L), cond (B, C_cond) already through Mish -> (B, C_out, L)."""
        scale, bias = self.film(cond)[..., None].chunk(2, dim=1)  # (B, C_out, 1) each
        h = self.conv1(x) * scale + bias
        return self.conv2(h) + self.skip(x)


class Level(nn.Module):
    """Two FiLM blocks at one resolution, then an optional resampling conv (down: stride 2, up: x2)."""

    def __init__(self, c_in: int, c_out: int, c_cond: int, resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList([FiLMBlock(c_in, c_out, c_cond), FiLMBlock(c_out, c_out, c_cond)])
        self.resample = resample if resample is not None else nn.Identity()

    def run_blocks(self, x: Tensor, cond: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return x


class DPUNet(nn.Module):
    """Chi et al.'s conditional 1-D UNet on the project's backbone call (see the module docstring)."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        if cfg.head != "ddpm" or cfg.layout != "paper":
            raise ValueError(f"DP-UNet has the DDPM head and the paper layout only, got head {cfg.head!r}, "
                             f"layout {cfg.layout!r}")
        self.cfg = cfg
        d, c = cfg.d_model, condition_dim(cfg)
        widths = unet_widths(cfg)
        last = len(widths) - 1
        self.down = nn.ModuleList(
            Level(widths[i - 1] if i else d, w, c, nn.Conv1d(w, w, 3, stride=2, padding=1) if i < last else None)
            for i, w in enumerate(widths))
        self.mid = nn.ModuleList([FiLMBlock(widths[-1], widths[-1], c), FiLMBlock(widths[-1], widths[-1], c)])
        self.up = nn.ModuleList(
            Level(2 * widths[i], widths[i - 1], c, nn.ConvTranspose1d(widths[i - 1], widths[i - 1], 4, 2, 1))
            for i in range(last, 0, -1))
        self.out = nn.Sequential(ConvNormMish(widths[0], widths[0]), nn.Conv1d(widths[0], d, 1))

    def condition(self, obs: Tensor, time: Tensor) -> Tensor:
        """obs (B, N, D), time (B, D) -> Mish([obs flattened, time]) (B, (N + 1) * D), shared by every FiLM."""
        if obs.shape[1] != self.cfg.n_obs_tokens:
            raise ValueError(f"DP-UNet expects {self.cfg.n_obs_tokens} observation tokens (goal + K*P), "
                             f"got {obs.shape[1]}")
        return F.mish(torch.cat([obs.flatten(1), time.to(obs.dtype)], dim=1))

    def forward(self, obs: Tensor, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        """obs (B, N, D), embedded noisy actions (B, J, D), time embedding (B, D) -> (B, J, D)."""
        if actions is None or time is None:
            raise ValueError("DP-UNet is a diffusion policy: it needs the embedded noisy actions and the time "
                             "embedding (there is no BC head)")
        cond = self.condition(obs, time)
        x = actions.transpose(1, 2)  # (B, D, J): channels first, time along the chunk
        skips, lengths = [], []  # s_i and J_i of every level (s_0 unused, see the module docstring)
        for level in self.down:
            x = level.run_blocks(x, cond)  # (B, w_i, J_i)
            skips.append(x)
            lengths.append(x.shape[-1])
            x = level.resample(x)  # J_{i+1} = ceil(J_i / 2)
        for block in self.mid:
            x = block(x, cond)
        for level, skip, length in zip(self.up, skips[:0:-1], lengths[-2::-1]):
            x = level.run_blocks(torch.cat([x, skip], dim=1), cond)  # (B, w_{i-1}, J_i)
            x = level.resample(x)[..., :length]  # doubled, cropped to J_{i-1}
        return self.out(x).transpose(1, 2)  # (B, J, D)
