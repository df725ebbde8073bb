"""The MaIL policy: observation encoder + backbone + BC or DDPM head + normalisation + FeatureSpec.

LeRobot-like API: ``forward(batch) -> loss``, ``predict_chunk(batch) -> actions (B, J, A)``, ``reset()``.

Batches (images float in [0, 1] or uint8; state and actions in robot units, normalised here):
- window (history "window"): {"images": {cam: (B, K, 3, H, W)}, "state": (B, K, S)?, "goal": (B, G)?,
  "actions": (B, J, A)} -- the J targets start at the last observation's step.
- episode (history "stream", training): {"images": {cam: (B, T, 3, H, W)}, "state": (B, T, S)?,
  "goal": (B, G)?, "actions": (B, T, J, A), "action_mask": (B, T, J) bool?}: after each of the T steps'
  observations, a branch predicts that step's chunk from the recurrent state (see mamba_backbones).
In history "stream", ``predict_chunk`` takes one new step (T = 1) and carries the state until reset().
The engine can instead call the primitives: encode_frame, obs_tokens, goal_token, init_state, observe,
act (all functional; act never changes the state it is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec import FeatureSpec
from .backbones import BackboneConfig, build_backbone
from .diffusion import DDPM, SAMPLERS, CommittedActions, DiffusionConfig, TimeEmbedding
from .encoder import ObsEncoder, ObsEncoderConfig
from .mamba_backbones import StreamState
from .presets import backbone_preset

HISTORIES = ("window", "stream")


@dataclass(frozen=True)
class PolicyConfig:
    spec: FeatureSpec  # cameras, K, J, action and state names: the contract with data and robot
    backbone: BackboneConfig  # variant, layout, head, depths
    encoder: ObsEncoderConfig  # per-camera trunks and tokens
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # used when head == "ddpm"
    history: str = "window"  # "window": K frames recomputed per step; "stream": state carried per episode

    def __post_init__(self):
        s, b, e = self.spec, self.backbone, self.encoder
        if self.history not in HISTORIES:
            raise ValueError(f"PolicyConfig.history must be one of {HISTORIES}, got {self.history!r}")
        if self.history == "stream" and b.layout != "streaming":
            raise ValueError(f"history 'stream' needs a streaming layout, backbone has {b.layout!r}")
        checks = [
            ("backbone.obs_steps", b.obs_steps, "spec.obs_horizon", s.obs_horizon),
            ("backbone.action_horizon", b.action_horizon, "spec.action_horizon", s.action_horizon),
            ("backbone.d_model", b.d_model, "encoder.d_model", e.d_model),
            ("backbone.obs_tokens_per_step", b.obs_tokens_per_step, "encoder tokens per step", e.tokens_per_step),
            ("backbone.goal_token", b.goal_token, "spec.goal_embedding_dim > 0", s.goal_embedding_dim > 0),
            ("encoder.cameras", tuple(e.cameras), "spec cameras", s.camera_names),
            ("encoder.state_dim", e.state_dim, "spec state_dim if use_joint_state",
             s.state_dim if s.use_joint_state else 0),
            ("encoder.goal_dim", e.goal_dim, "spec.goal_embedding_dim", s.goal_embedding_dim),
        ]
        for a_name, a, b_name, bv in checks:
            if a != bv:
                raise ValueError(f"PolicyConfig: {a_name} = {a!r} does not match {b_name} = {bv!r}")
        sizes = {(c.height, c.width) for c in s.cameras}
        if sizes != {tuple(e.image_size)}:
            raise ValueError(f"PolicyConfig: encoder.image_size {e.image_size} does not match spec {sorted(sizes)}")

    @classmethod
    def make(cls, spec: FeatureSpec, preset: str = "d_ma_ddpm", history: str = "window",
             diffusion: DiffusionConfig | None = None, encoder: dict | None = None, **backbone) -> PolicyConfig:
        """A config consistent with ``spec``: preset depths, spec's K/J/tokens, optional overrides."""
        enc = ObsEncoderConfig.from_spec(spec, **(encoder or {}))
        bb = backbone_preset(preset, obs_steps=spec.obs_horizon, action_horizon=spec.action_horizon,
                             obs_tokens_per_step=enc.tokens_per_step, goal_token=spec.goal_embedding_dim > 0,
                             d_model=enc.d_model, **backbone)
        return cls(spec, bb, enc, diffusion or DiffusionConfig(), history)

    def to_dict(self) -> dict:
        return dict(spec=self.spec.to_dict(), backbone=self.backbone.to_dict(), encoder=self.encoder.to_dict(),
                    diffusion=self.diffusion.to_dict(), history=self.history)

    @classmethod
    def from_dict(cls, d: dict) -> PolicyConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown PolicyConfig fields: {sorted(unknown)}")
        missing = {"spec", "backbone", "encoder"} - set(d)
        if missing:
            raise ValueError(f"PolicyConfig is missing {sorted(missing)}")
        diff = d.get("diffusion", {})
        unknown = set(diff) - set(DiffusionConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown DiffusionConfig fields: {sorted(unknown)}")
        return cls(FeatureSpec.from_dict(d["spec"]), BackboneConfig.from_dict(d["backbone"]),
                   ObsEncoderConfig.from_dict(d["encoder"]), DiffusionConfig(**diff), d.get("history", "window"))


NORM_KEYS = ("action_mean", "action_std", "action_low", "action_high", "state_mean", "state_std")


class MailPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig, metadata: dict | None = None):
        super().__init__()
        self.cfg = cfg
        self.metadata = dict(metadata or {})  # variant/layout/head are derived; training info goes here
        d, a = cfg.backbone.d_model, cfg.spec.action_dim
        self.encoder = ObsEncoder(cfg.encoder)
        self.backbone = build_backbone(cfg.backbone)
        self.action_out = nn.Linear(d, a)
        if self.is_ddpm:
            self.action_in = nn.Linear(a, d)
            self.time_emb = TimeEmbedding(cfg.diffusion.time_dim, d)
            self.ddpm = DDPM(cfg.diffusion)
        # normalisation statistics, NaN until set_normalization(); saved in the checkpoint
        nan = lambda n: torch.full((n,), float("nan"))  # noqa: E731
        for key, n in zip(NORM_KEYS, (a, a, a, a, cfg.spec.state_dim, cfg.spec.state_dim)):
            self.register_buffer(key, nan(n))
        self._stream: StreamState | None = None

    # ---- properties ----
    @property
    def is_ddpm(self) -> bool:
        return self.cfg.backbone.head == "ddpm"

    @property
    def streaming(self) -> bool:
        return self.cfg.backbone.layout == "streaming"

    def describe(self) -> dict:
        b = self.cfg.backbone
        return dict(variant=b.variant, layout=b.layout, head=b.head, history=self.cfg.history, **self.metadata)

    # ---- normalisation ----
    def set_normalization(self, action_mean, action_std, action_min, action_max, state_mean=None, state_std=None):
        """Per-dimension statistics in robot units; x0 is clamped to [min, max] in normalised units."""
        t = lambda v: torch.as_tensor(v, dtype=torch.float32).flatten()  # noqa: E731
        std = t(action_std).clamp(min=1e-6)
        vals = dict(action_mean=t(action_mean), action_std=std, action_low=(t(action_min) - t(action_mean)) / std,
                    action_high=(t(action_max) - t(action_mean)) / std)
        if self.cfg.spec.use_joint_state:
            if state_mean is None or state_std is None:
                raise ValueError("this policy uses the joint state: pass state_mean and state_std")
            vals.update(state_mean=t(state_mean), state_std=t(state_std).clamp(min=1e-6))
        else:
            vals.update(state_mean=torch.zeros(self.cfg.spec.state_dim), state_std=torch.ones(self.cfg.spec.state_dim))
        for k, v in vals.items():
            if v.shape != getattr(self, k).shape:
                raise ValueError(f"normalisation {k}: expected shape {tuple(getattr(self, k).shape)}, "
                                 f"got {tuple(v.shape)}")
            getattr(self, k).copy_(v)

    def normalization_problems(self) -> list[str]:
        return [f"{k} is not set or not finite" for k in NORM_KEYS if not torch.isfinite(getattr(self, k)).all()]

    def _check_norm(self) -> None:
        problems = self.normalization_problems()
        if problems:
            raise RuntimeError("normalisation missing: " + "; ".join(problems))

    def normalize_actions(self, a: Tensor) -> Tensor:
        return (a - self.action_mean) / self.action_std

    def unnormalize_actions(self, a: Tensor) -> Tensor:
        return a * self.action_std + self.action_mean

    # ---- observation tokens ----
    def encode_frame(self, camera: str, image: Tensor) -> Tensor:
        """One camera frame (B, 3, H, W) -> (B, camera_features); cacheable per frame."""
        return self.encoder.encode_frame(camera, image)

    def obs_tokens(self, camera_features: Tensor, state: Tensor | None = None) -> Tensor:
        """camera_features (B, T, n_cameras, F) (cameras in spec order), state (B, T, S) in robot units ->
        observation tokens (B, T * P, D)."""
        if state is not None and self.cfg.spec.use_joint_state:
            state = (state - self.state_mean) / self.state_std
        return self.encoder.tokens(camera_features, state if self.cfg.spec.use_joint_state else None)

    def goal_token(self, goal: Tensor) -> Tensor:
        return self.encoder.goal_token(goal)

    def _tokens(self, batch: dict, with_goal: bool = True) -> Tensor:
        tokens = self.obs_tokens(self.encoder.encode_frames(batch["images"]), batch.get("state"))
        if self.cfg.spec.goal_embedding_dim and with_goal:
            if batch.get("goal") is None:
                raise ValueError("this policy needs a goal embedding: batch['goal'] (B, G)")
            tokens = torch.cat([self.goal_token(batch["goal"]), tokens], 1)
        return tokens

    # ---- training ----
    def forward(self, batch: dict) -> Tensor:
        self._check_norm()
        actions = self.normalize_actions(batch["actions"].float())
        if actions.dim() == 4:
            return self._episode_loss(batch, actions)
        if self.cfg.history == "stream":
            raise ValueError("history 'stream' trains on episodes: actions must be (B, T, J, A)")
        obs = self._tokens(batch)
        if not self.is_ddpm:
            return F.mse_loss(self.action_out(self.backbone(obs)), actions)
        return self.ddpm.loss(lambda x, t: self.action_out(self.backbone(obs, self.action_in(x), self.time_emb(t))),
                              actions)

    def _episode_loss(self, batch: dict, actions: Tensor) -> Tensor:
        if not self.streaming:
            raise ValueError("episode batches (actions (B, T, J, A)) need a streaming layout")
        b, t = actions.shape[:2]
        obs = self._tokens(batch)
        p, g = self.cfg.encoder.tokens_per_step, int(self.cfg.spec.goal_embedding_dim > 0)
        at = torch.arange(t, device=obs.device) * p + (p - 1 + g)  # last token of each step
        mask = batch.get("action_mask")
        if not self.is_ddpm:
            pred = self.action_out(self.backbone.forward_episode(obs, at))
            target, err = actions, None
        else:
            steps = torch.randint(0, self.cfg.diffusion.steps, (b * t,), device=obs.device)
            target = torch.randn_like(actions)
            noisy = self.ddpm.add_noise(actions.flatten(0, 1), steps, target.flatten(0, 1)).view_as(actions)
            time = self.time_emb(steps).view(b, t, -1)
            pred = self.action_out(self.backbone.forward_episode(obs, at, self.action_in(noisy), time))
        err = (pred - target).pow(2).mean(-1)  # (B, T, J)
        if mask is None:
            return err.mean()
        mask = mask.to(err.dtype)
        return (err * mask).sum() / mask.sum().clamp(min=1)

    # ---- inference: streaming primitives ----
    def init_state(self, batch: int, device=None) -> StreamState:
        return self.backbone.init_state(batch, device)

    def observe(self, tokens: Tensor, state: StreamState) -> StreamState:
        """Advance the observation prefix by tokens (B, L, D); returns a new state."""
        return self.backbone.observe(tokens, state)

    @torch.no_grad()
    def act(self, state: StreamState, noise: Tensor | None = None, generator: torch.Generator | None = None,
            sampler: str | None = None) -> Tensor:
        """A chunk (B, J, A) in robot units from a prefix state; the state is not changed."""
        self._check_norm()
        batch = state.stacks[0][0].ssm.shape[0]
        return self.sample_with(lambda x, t: self.backbone.act(state, x, t), batch, noise, generator, sampler)

    def sample_with(self, run, batch: int, noise: Tensor | None = None, generator: torch.Generator | None = None,
                    sampler: str | None = None, committed: CommittedActions | None = None) -> Tensor:
        """A chunk (B, J, A) in robot units, where ``run(embedded actions or None, time embedding or None)
        -> backbone outputs (B, J, D)`` is any backbone call (full recompute, or act() on a prefix state).
        BC: one call. DDPM: the sampler's loop, noise from ``noise`` (see DDPM.noise_shape) or ``generator``,
        pulled to ``committed`` (normalised units; DDPM only: a BC head has no loop to pull)."""
        if not self.is_ddpm:
            if committed is not None:
                raise ValueError("committed actions (real-time chunking) need a DDPM head; this policy's is BC")
            return self.unnormalize_actions(self.action_out(run(None, None)).float())
        sampler = sampler or self.cfg.diffusion.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        shape = (batch, self.cfg.spec.action_horizon, self.cfg.spec.action_dim)
        dtype = self.action_out.weight.dtype

        def denoise(x, t):
            return self.action_out(run(self.action_in(x.to(dtype)), self.time_emb(t))).float()

        kw = dict(low=self.action_low, high=self.action_high, noise=noise, generator=generator,
                  device=self.action_mean.device, committed=committed)
        x = self.ddpm.sample(denoise, shape, **kw) if sampler == "ddpm" else self.ddpm.sample_ddim(denoise, shape, **kw)
        return self.unnormalize_actions(x)

    _sample = sample_with  # older name, kept for callers

    # ---- inference: LeRobot-like ----
    def reset(self) -> None:
        """Forget the episode state (history "stream")."""
        self._stream = None

    @torch.no_grad()
    def predict_chunk(self, batch: dict, noise: Tensor | None = None, generator: torch.Generator | None = None,
                      sampler: str | None = None, use_cache: bool = True) -> Tensor:
        """Window: batch holds the K latest steps; full recompute per denoising step, or (streaming layouts,
        ``use_cache``) the prefix computed once. Stream: batch holds the new step(s); state carried."""
        self._check_norm()
        if self.cfg.history == "stream":
            first = self._stream is None
            tokens = self._tokens(batch, with_goal=first)
            if first:
                self._stream = self.init_state(tokens.shape[0], tokens.device)
            self._stream = self.observe(tokens, self._stream)
            return self.act(self._stream, noise, generator, sampler)
        obs = self._tokens(batch)
        if self.streaming and use_cache:
            return self.act(self.observe(obs, self.init_state(obs.shape[0], obs.device)), noise, generator, sampler)
        return self.sample_with(lambda x, t: self.backbone(obs, x, t), obs.shape[0], noise, generator, sampler)


def with_overrides(cfg: PolicyConfig, **backbone) -> PolicyConfig:
    return replace(cfg, backbone=replace(cfg.backbone, **backbone))
