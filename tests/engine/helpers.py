"""Tiny policies and synthetic episodes for the engine tests."""

from __future__ import annotations

import numpy as np
import torch

from mail_policy_node.engine import EngineConfig, InferenceEngine, Observation
from mail_policy_node.engine.inputs import check_observation
from mail_policy_node.engine.reference import EpisodeLog
from mail_policy_node.model.diffusion import DiffusionConfig
from mail_policy_node.model.policy import MailPolicy, PolicyConfig
from mail_policy_node.spec import CameraSpec, FeatureSpec

SIZE = 32  # model image size (the encoder's minimum)
# 3 steps, and betas clipped at 0.9 instead of 0.999: the first ancestral step divides the predicted noise
# by sqrt(alpha_bar_T); with the paper's clip that multiplies fp32 rounding (1e-7) by 60-300 in both paths
# alike, which would hide cache errors behind sampler amplification. With 0.9 it is about 6.
DIFFUSION = DiffusionConfig(steps=3, ddim_steps=2, time_dim=8, max_beta=0.9)


def tiny_spec(k: int = 3, j: int = 4, joint: bool = True, goal: int = 6, cameras: int = 2) -> FeatureSpec:
    names = ("agentview", "wrist")[:cameras]
    return FeatureSpec(cameras=tuple(CameraSpec(n, SIZE, SIZE) for n in names), use_joint_state=joint,
                       obs_horizon=k, action_horizon=j, goal_embedding_dim=goal, dt=0.1)


def tiny_policy(variant: str = "d_ma", head: str = "ddpm", layout: str = "streaming", spec: FeatureSpec | None = None,
                history: str = "window", seed: int = 0) -> MailPolicy:
    """A random tiny policy whose every parameter matters (zero-initialised embeddings perturbed)."""
    torch.manual_seed(seed)
    spec = spec or tiny_spec()
    preset = f"{variant}_{head}" + ("_stream" if layout == "streaming" else "")
    ed, mamba = variant.startswith("ed"), "_ma" in variant
    depth = dict(n_layers=1 if ed else 2, n_enc_layers=1 if ed else 0)
    if mamba:
        depth.update(d_state=4, init="mamba")
    cfg = PolicyConfig.make(spec, preset, history=history,
                            diffusion=DIFFUSION,
                            encoder=dict(base_width=16, camera_features=8, d_model=16, keypoints=4), **depth)
    policy = MailPolicy(cfg)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if not (name.endswith(("A_log", ".D"))):
                p.add_(torch.randn_like(p) * 0.05)
    a, s = spec.action_dim, spec.state_dim
    policy.set_normalization(torch.linspace(-1, 1, a), torch.full((a,), 0.5), torch.full((a,), -2.0),
                             torch.full((a,), 2.0), torch.linspace(-0.5, 0.5, s), torch.full((s,), 0.8))
    return policy.eval()


class Episode:
    """Random observations for B rows: frames of assorted sizes, joint state, one goal per row."""

    def __init__(self, spec: FeatureSpec, batch: int = 2, seed: int = 0, frame: tuple[int, int] = (SIZE, SIZE)):
        self.spec, self.batch, self.frame = spec, batch, frame
        self.rng = np.random.default_rng(seed)
        goal_rng = np.random.default_rng(1000)  # one goal per row, the same for every seed
        self.goal = goal_rng.normal(size=(batch, spec.goal_embedding_dim)) if spec.goal_embedding_dim else None

    def observation(self, i: int, with_goal: bool = True) -> Observation:
        h, w = self.frame
        images = {c: self.rng.integers(0, 256, (self.batch, h, w, 3), dtype=np.uint8) for c in self.spec.camera_names}
        state = self.rng.normal(size=(self.batch, self.spec.state_dim)) if self.spec.use_joint_state else None
        return Observation(stamp=0.1 * i + 0.01, images=images, state=state, goal=self.goal if with_goal else None)


def run_episode(policy: MailPolicy, history: str, steps: int, batch: int = 2, path: str = "auto",
                sampler: str | None = None, seed: int = 0):
    """Run an engine for ``steps`` control steps with explicit noise. -> (actions (T, B, J, A), noise
    (T, *noise_shape) or None, log)."""
    engine = InferenceEngine(policy, EngineConfig(history=history, batch=batch, path=path, sampler=sampler))
    episode = Episode(policy.cfg.spec, batch, seed)
    gen = torch.Generator().manual_seed(seed)
    log, actions, noises = EpisodeLog(), [], []
    for i in range(steps):
        obs = episode.observation(i)
        log.add(check_observation(obs, policy.cfg.spec, batch))
        noise = torch.randn(engine.noise_shape, generator=gen) if engine.noise_shape else None
        actions.append(torch.from_numpy(engine.step(obs, noise).actions))
        noises.append(noise)
    return torch.stack(actions), (torch.stack(noises) if noises[0] is not None else None), log
