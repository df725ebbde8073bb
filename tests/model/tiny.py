"""Tiny configurations shared by the model tests."""

from __future__ import annotations

import torch

from mail_policy_node.model.backbones import BackboneConfig, build_backbone
from mail_policy_node.model.policy import MailPolicy, PolicyConfig
from mail_policy_node.spec import CameraSpec, FeatureSpec

D = 32
K, J, P = 3, 4, 2  # obs steps, chunk, tokens per step (images + joint state)
VARIANT_LAYOUTS = [(v, "paper") for v in ("d_ma", "ed_ma", "d_tr", "ed_tr")] + [("d_ma", "streaming"),
                                                                                   ("ed_ma", "streaming")]


def tiny_backbone(variant: str, layout: str, head: str, goal: bool = True, **kw) -> BackboneConfig:
    ed = variant.startswith("ed")
    base = dict(variant=variant, layout=layout, head=head, d_model=D, obs_steps=K, action_horizon=J,
                obs_tokens_per_step=P, goal_token=goal, n_layers=2, n_enc_layers=2 if ed else 0, d_state=8,
                dec_d_conv=2 if ed else 0, dropout=0.1)
    base.update(kw)
    return BackboneConfig(**base)


def backbone_inputs(cfg: BackboneConfig, batch: int = 2, n_obs: int | None = None):
    n_obs = cfg.n_obs_tokens if n_obs is None else n_obs
    obs = torch.randn(batch, n_obs, cfg.d_model)
    if cfg.head == "bc":
        return obs, None, None
    return obs, torch.randn(batch, cfg.action_horizon, cfg.d_model), torch.randn(batch, cfg.d_model)


def build(cfg: BackboneConfig):
    return build_backbone(cfg).eval()


def tiny_spec(joint: bool = True, goal: int = 6, k: int = 2, j: int = 3, size: int = 32) -> FeatureSpec:
    return FeatureSpec(cameras=(CameraSpec("agentview", size, size), CameraSpec("wrist", size, size)),
                       use_joint_state=joint, obs_horizon=k, action_horizon=j, goal_embedding_dim=goal)


def tiny_policy(preset: str, history: str = "window", spec: FeatureSpec | None = None, **backbone) -> MailPolicy:
    spec = spec or tiny_spec()
    ed = preset.startswith("ed")
    kw = dict(n_layers=2, n_enc_layers=2 if ed else 0, d_state=8)
    kw.update(backbone)
    cfg = PolicyConfig.make(spec, preset, history=history,
                            encoder=dict(base_width=16, camera_features=16, d_model=D, keypoints=4), **kw)
    policy = MailPolicy(cfg, metadata={"test": True})
    a, s = spec.action_dim, spec.state_dim
    policy.set_normalization(torch.linspace(-1, 1, a), torch.full((a,), 0.5), torch.full((a,), -3.0),
                             torch.full((a,), 3.0), torch.zeros(s), torch.ones(s))
    return policy


def policy_batch(policy: MailPolicy, batch: int = 2, steps: int | None = None, episode: bool = False):
    spec = policy.cfg.spec
    t = steps or spec.obs_horizon
    h, w = spec.cameras[0].height, spec.cameras[0].width
    out = dict(images={c: torch.rand(batch, t, 3, h, w) for c in spec.camera_names})
    if spec.use_joint_state:
        out["state"] = torch.randn(batch, t, spec.state_dim)
    if spec.goal_embedding_dim:
        out["goal"] = torch.randn(batch, spec.goal_embedding_dim)
    shape = ((batch, t, spec.action_horizon, spec.action_dim) if episode else
             (batch, spec.action_horizon, spec.action_dim))
    out["actions"] = torch.randn(shape) * 0.5
    return out
