"""DDPM pieces: cosine schedule, epsilon-prediction training target, ancestral and DDIM samplers, the
time-token MLP and an EMA helper.

Samplers take a ``denoise(x (B, J, A), t (B,) long) -> eps (B, J, A)`` callable, so the same sampler
runs a full recompute or a cached-prefix backbone. Randomness comes only from an explicit ``noise``
tensor (steps + 1 draws, see `noise_shape`) or ``generator``: two paths given the same noise are
comparable draw for draw.

Both samplers take an optional `CommittedActions`: actions of the chunk being sampled that are already
committed to the robot (real-time chunking, Black et al. 2025, in its inpainting form): every step's x0
estimate is pulled towards them by their weight, so the sampled chunk starts where the running one goes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAMPLERS = ("ddpm", "ddim")


@dataclass(frozen=True)
class DiffusionConfig:
    steps: int = 16  # diffusion steps (training and full ancestral sampling)
    cosine_s: float = 0.008  # offset of the cosine schedule
    max_beta: float = 0.999  # betas are clipped here
    sampler: str = "ddpm"  # default sampler at inference: "ddpm" (ancestral) or "ddim"
    ddim_steps: int = 4  # steps of the DDIM sampler (deterministic, eta 0)
    time_dim: int = 128  # sinusoidal embedding size (the MLP goes time_dim -> 2 time_dim -> d_model)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"DiffusionConfig.steps must be >= 1, got {self.steps}")
        if not 1 <= self.ddim_steps <= self.steps:
            raise ValueError(f"DiffusionConfig.ddim_steps must be in 1..{self.steps}, got {self.ddim_steps}")
        if not 0 < self.max_beta < 1 or self.cosine_s <= 0:
            raise ValueError(f"bad schedule: max_beta {self.max_beta} (0..1), cosine_s {self.cosine_s} (> 0)")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"DiffusionConfig.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f"DiffusionConfig.time_dim must be even and >= 2, got {self.time_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's cosine schedule, in float64."""
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def sinusoidal(t: Tensor, dim: int) -> Tensor:
    """t (B,) -> (B, dim)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(1, half - 1))
    arg = t.float()[:, None] * freq[None]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


class CommittedActions(NamedTuple):
    """Actions a sampled chunk must keep, in the sampler's normalised units: ``actions`` (B, J, A) and
    ``weight`` (B, J, 1) in [0, 1] (1: the sample equals the action; 0: free). Static tensors on CUDA (a
    captured graph reads them); a zero weight leaves the sampler's numbers exactly as without."""

    actions: Tensor
    weight: Tensor

    def pull(self, x0: Tensor) -> Tensor:
        return torch.lerp(x0, self.actions, self.weight)


class TimeEmbedding(nn.Module):
    """Sinusoidal step embedding -> Linear(time_dim, 2 time_dim) -> Mish -> Linear(2 time_dim, d_model)."""

    def __init__(self, time_dim: int, d_model: int):
        super().__init__()
        self.time_dim = time_dim
        self.mlp = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.Mish(), nn.Linear(2 * time_dim, d_model))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal(t, self.time_dim).to(self.mlp[0].weight.dtype))


class DDPM(nn.Module):
    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        betas = cosine_betas(cfg.steps, cfg.cosine_s, cfg.max_beta)
        alphas = 1 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        for name, value in dict(
            betas=betas, alpha_bar=ab, alpha_bar_prev=ab_prev,
            post_var=betas * (1 - ab_prev) / (1 - ab),
            post_c0=betas * ab_prev.sqrt() / (1 - ab),  # coefficient of x0 in the posterior mean
            post_ct=(1 - ab_prev) * alphas.sqrt() / (1 - ab),  # coefficient of x_t
        ).items():
            self.register_buffer(name, value.float(), persistent=False)
        self.register_buffer("_one", torch.ones(()), persistent=False)  # alpha_bar after the last DDIM step

    def noise_shape(self, shape: tuple[int, ...], sampler: str = "ddpm") -> tuple[int, ...]:
        """Shape of the explicit noise a sampler consumes: initial draw + one per step (DDIM: 1)."""
        return ((self.cfg.steps + 1) if sampler == "ddpm" else 1,) + tuple(shape)

    def add_noise(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        ab = self.alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def loss(self, denoise: Callable[[Tensor, Tensor], Tensor], x0: Tensor, generator=None) -> Tensor:
        """Epsilon-prediction L2 loss at a uniformly drawn step per sample. x0 (B, ..., A)."""
        t = torch.randint(0, self.cfg.steps, (x0.shape[0],), device=x0.device, generator=generator)
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        return F.mse_loss(denoise(self.add_noise(x0, t, eps), t), eps)

    def _x0(self, x: Tensor, eps: Tensor, t: int, low: Tensor, high: Tensor) -> Tensor:
        ab = self.alpha_bar[t]
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        return torch.maximum(torch.minimum(x0, high), low)

    def _draws(self, shape, noise, generator, device, n):
        if noise is not None:
            if tuple(noise.shape) != (n,) + tuple(shape):
                raise ValueError(f"noise must have shape {(n,) + tuple(shape)}, got {tuple(noise.shape)}")
            return noise.to(device)
        return torch.randn((n,) + tuple(shape), device=device, generator=generator)

    @torch.no_grad()
    def sample(self, denoise, shape: tuple[int, ...], low: Tensor, high: Tensor, noise: Tensor | None = None,
               generator: torch.Generator | None = None, device=None,
               committed: CommittedActions | None = None) -> Tensor:
        """Full ancestral sampling over all steps; x0 predictions clamped to [low, high] (per action dim), then
        pulled to ``committed`` (the last step's posterior is x0 itself: a weight of 1 is kept exactly)."""
        draws = self._draws(shape, noise, generator, device, self.cfg.steps + 1)
        x = draws[0]
        for i, t in enumerate(reversed(range(self.cfg.steps))):
            eps = denoise(x, torch.full((shape[0],), t, device=x.device, dtype=torch.long)).float()
            x0 = self._x0(x, eps, t, low, high)
            if committed is not None:
                x0 = committed.pull(x0)
            x = self.post_c0[t] * x0 + self.post_ct[t] * x
            if t > 0:
                x = x + self.post_var[t].sqrt() * draws[i + 1]
        return x

    @torch.no_grad()
    def sample_ddim(self, denoise, shape: tuple[int, ...], low: Tensor, high: Tensor, steps: int | None = None,
                    noise: Tensor | None = None, generator: torch.Generator | None = None, device=None,
                    committed: CommittedActions | None = None) -> Tensor:
        """Deterministic DDIM (eta 0) on an evenly spaced subset of the training steps; ``committed`` as in
        `sample` (the last step returns the pulled x0)."""
        steps = steps or self.cfg.ddim_steps
        x = self._draws(shape, noise, generator, device, 1)[0]
        ts = torch.linspace(self.cfg.steps - 1, 0, steps).round().long().tolist()
        for k, t in enumerate(ts):
            eps = denoise(x, torch.full((shape[0],), t, device=x.device, dtype=torch.long)).float()
            x0 = self._x0(x, eps, t, low, high)
            if committed is not None:
                x0 = committed.pull(x0)
            ab_next = self.alpha_bar[ts[k + 1]] if k + 1 < len(ts) else self._one  # no host copy: graph-capturable
            eps = (x - self.alpha_bar[t].sqrt() * x0) / (1 - self.alpha_bar[t]).sqrt()  # consistent with clamp
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return x


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers, with warm-up:
    decay_n = min(max_decay, (1 + n) / (10 + n)) at the n-th update."""

    def __init__(self, model: nn.Module, max_decay: float = 0.995):
        if not 0 < max_decay < 1:
            raise ValueError(f"EMA max_decay must be in (0, 1), got {max_decay}")
        self.max_decay, self.updates = max_decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay(self) -> float:
        return min(self.max_decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=False)
