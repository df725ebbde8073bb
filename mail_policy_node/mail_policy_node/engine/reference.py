"""Chunks computed without any cache: the yardstick for the engine.

This is what MaIL's own code does every control step: re-encode every frame it uses, and run the full
token sequence through the backbone once per denoising step. The engine's exactness tests, the GPU
parity script and the benchmark's "reference" row all use it. Nothing here keeps state between calls.

- window: the last K steps (the first one repeated while fewer than K exist, as the engine does),
  frames re-encoded, [goal, K steps] through ``backbone.forward`` of the policy's own layout.
- stream: every step since the episode start, frames re-encoded, [goal, all steps] through
  ``backbone.forward`` (streaming layouts have no positions, so this is the whole episode recomputed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..model.policy import MailPolicy
from .inputs import CheckedObservation


@dataclass
class EpisodeLog:
    """The validated inputs of one episode (all rows), step by step."""

    steps: list[CheckedObservation] = field(default_factory=list)
    goal: np.ndarray | None = None  # (B, G)

    def add(self, obs: CheckedObservation) -> None:
        if obs.goal is not None and self.goal is None:
            self.goal = obs.goal
        self.steps.append(obs)


def step_tokens(policy: MailPolicy, steps: list[CheckedObservation], device) -> Tensor:
    """Re-encode the raw frames of ``steps`` -> observation tokens (B, T, P, D), T = len(steps)."""
    spec = policy.cfg.spec
    images = {c: torch.from_numpy(np.stack([s.images[c] for s in steps], 1)).to(device).permute(0, 1, 4, 2, 3)
              for c in spec.camera_names}  # (B, T, 3, H, W) uint8
    state = None
    if spec.use_joint_state:
        state = torch.from_numpy(np.stack([s.state for s in steps], 1)).to(device)  # (B, T, S)
    tokens = policy.obs_tokens(policy.encoder.encode_frames(images), state)  # (B, T * P, D)
    return tokens.unflatten(1, (len(steps), -1))


def _with_goal(policy: MailPolicy, tokens: Tensor, goal: np.ndarray | None) -> Tensor:
    """tokens (B, N, D) -> [goal, tokens] when the policy has a goal token."""
    if not policy.cfg.spec.goal_embedding_dim:
        return tokens
    if goal is None:
        raise ValueError("this policy needs a goal embedding")
    g = policy.goal_token(torch.as_tensor(goal, dtype=torch.float32, device=tokens.device)).to(tokens.dtype)
    return torch.cat([g, tokens], 1)


def recompute(policy: MailPolicy, tokens: Tensor, noise: Tensor | None = None, sampler: str | None = None) -> Tensor:
    """A chunk from observation tokens (B, N, D) by a full forward per denoising step. -> (B, J, A)."""
    if noise is not None:
        noise = torch.as_tensor(noise, dtype=torch.float32, device=tokens.device)
    return policy.sample_with(lambda x, t: policy.backbone(tokens, x, t), tokens.shape[0], noise, None, sampler)


def _window_index(n_steps: int, k: int) -> np.ndarray:
    """(T, K) step indices of every step's window, the first step repeated while fewer than K exist."""
    t = np.arange(n_steps)[:, None] + np.arange(-k + 1, 1)[None]
    return np.maximum(t, 0)


@torch.no_grad()
def reference_chunk(policy: MailPolicy, log: EpisodeLog, history: str, noise: Tensor | None = None,
                    sampler: str | None = None) -> Tensor:
    """(B, J, A) chunk in robot units after the last logged step, recomputed from the raw inputs."""
    if not log.steps:
        raise ValueError("no observation logged")
    device = policy.action_mean.device
    k = policy.cfg.spec.obs_horizon
    if history == "window":
        steps = [log.steps[i] for i in _window_index(len(log.steps), k)[-1]]
    elif history == "stream":
        steps = log.steps
    else:
        raise ValueError(f"history must be 'window' or 'stream', got {history!r}")
    tokens = step_tokens(policy, steps, device).flatten(1, 2)
    return recompute(policy, _with_goal(policy, tokens, log.goal), noise, sampler)


@torch.no_grad()
def reference_window_chunks(policy: MailPolicy, log: EpisodeLog, noise: Tensor | None = None,
                            sampler: str | None = None) -> Tensor:
    """History "window": the chunk after every logged step at once (windows stacked on the batch axis;
    each frame re-encoded from its pixels). noise (T, *noise_shape) or None. -> (T, B, J, A)."""
    device = policy.action_mean.device
    tokens = step_tokens(policy, log.steps, device)  # (B, T, P, D)
    b, t = tokens.shape[:2]
    idx = torch.as_tensor(_window_index(t, policy.cfg.spec.obs_horizon), device=device)  # (T, K)
    windows = tokens[:, idx].transpose(0, 1).flatten(2, 3).flatten(0, 1)  # (T * B, K * P, D)
    if policy.cfg.spec.goal_embedding_dim:
        g = policy.goal_token(torch.as_tensor(log.goal, dtype=torch.float32, device=device)).to(windows.dtype)
        windows = torch.cat([g.repeat(t, 1, 1), windows], 1)
    if noise is not None:
        noise = torch.as_tensor(noise, dtype=torch.float32, device=device)  # (T, n, B, J, A)
        noise = noise.transpose(0, 1).flatten(1, 2)  # (n, T * B, J, A)
    return recompute(policy, windows, noise, sampler).unflatten(0, (t, b))


@torch.no_grad()
def reference_stream_chunks(policy: MailPolicy, log: EpisodeLog, at, noise: Tensor | None = None,
                            sampler: str | None = None) -> Tensor:
    """History "stream": the chunk after each step index in ``at`` (0-based), with [goal, steps 0..at]
    recomputed from the episode start (each frame re-encoded from its pixels once).
    noise (len(at), *noise_shape) or None. -> (len(at), B, J, A)."""
    device = policy.action_mean.device
    tokens = step_tokens(policy, log.steps, device)  # (B, T, P, D)
    out = []
    for i, t in enumerate(at):
        seq = _with_goal(policy, tokens[:, : t + 1].flatten(1, 2), log.goal)
        out.append(recompute(policy, seq, None if noise is None else noise[i], sampler))
    return torch.stack(out)
