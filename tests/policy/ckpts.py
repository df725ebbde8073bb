"""Tiny real checkpoints (safetensors + config) for policy runtime and node tests."""

from __future__ import annotations

import torch

from mail_policy_node.model.checkpoint import save_checkpoint
from mail_policy_node.spec import CameraSpec, FeatureSpec
from tests.model.tiny import tiny_policy

SIZE = 32


def spec(cameras=("agentview", "wrist"), joint=True, k=2, j=3) -> FeatureSpec:
    return FeatureSpec(cameras=tuple(CameraSpec(c, SIZE, SIZE) for c in cameras), use_joint_state=joint,
                       obs_horizon=k, action_horizon=j, goal_embedding_dim=0)


def make_checkpoint(folder, preset="d_ma_bc", seed=0, history="window", layout="streaming", **spec_kw) -> str:
    torch.manual_seed(seed)
    policy = tiny_policy(preset, history=history, spec=spec(**spec_kw), layout=layout)
    save_checkpoint(policy, folder, metadata={"test_seed": seed})
    return str(folder)


def make_nan_checkpoint(folder, seed=3, **spec_kw) -> str:
    """A checkpoint that loads and warms up (on blank inputs: a zero joint state) but whose every chunk on
    a real joint state is NaN or inf: its state normalisation divides by 1e-38, so any non-zero joint
    overflows float32 inside the network. Real weights and files; the fault is in the saved statistics, as a
    bad training run's would be."""
    torch.manual_seed(seed)
    policy = tiny_policy("d_ma_bc", spec=spec(**spec_kw))
    with torch.no_grad():
        policy.state_std.fill_(1e-38)
    save_checkpoint(policy, folder, metadata={"test_seed": seed, "fault": "state_std 1e-38"})
    return str(folder)
