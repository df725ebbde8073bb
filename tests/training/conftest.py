"""Synthetic demonstration bags whose contents encode the step index, so alignment can be checked
exactly: frame k of camera c is filled with value (10 * k + c) % 256, joint 1 of step k is k / 100 and
action k is [k, k + 0.1, ..., ] (first value = step index)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from mail_policy_node.data.bags import DemoBagWriter
from mail_policy_node.spec import FR3_JOINT_NAMES, GRIPPER_NAME

CAMERAS = ("agentview", "wrist")
ACTION_NAMES = FR3_JOINT_NAMES + (GRIPPER_NAME,)
DT = 0.1


def frame(step: int, cam_index: int, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), (10 * step + cam_index) % 256, np.uint8)


def action(step: int, dim: int = 8) -> np.ndarray:
    return step + 0.1 * np.arange(dim)


def write_bag(path: Path, lengths=(12,), storage: str = "mcap", action_names=ACTION_NAMES, cameras=CAMERAS,
              success=True, size: int = 32, gap_s: float = 5.0, events: bool = True, actions: bool = True,
              still: int = 0) -> Path:
    """One bag holding ``len(lengths)`` episodes; episode e starts gap_s after the previous one ends.
    ``actions`` False: no /mail/action_command messages, as in a hand-guided demonstration. ``still``: the
    arm holds still for that many steps first (joint 1 is max(k - still, 0) / 100)."""
    with DemoBagWriter(path, {c: 45.0 for c in cameras}, storage=storage, action_names=action_names,
                       stamp_base_ns=1_000_000_000_000) as bag:
        t0 = 0.0
        for e, n in enumerate(lengths):
            if events:
                bag.episode_event("start", t0, episode=e, task="synthetic", seed=e)
            for k in range(n):
                t = t0 + k * DT
                for ci, c in enumerate(cameras):
                    bag.image(c, t, frame(k, ci, size))
                bag.joint_state(t, np.r_[max(k - still, 0) / 100.0, np.zeros(6), 0.04])
                if actions:
                    bag.action(t, action(k, len(action_names)))
            ok = success if not isinstance(success, (list, tuple)) else success[e]
            if events:
                bag.episode_event("end", t0 + n * DT, episode=e, success=ok)
            t0 += n * DT + gap_s
    return path


@pytest.fixture
def bag_dir(tmp_path) -> Path:
    """Five one-episode bags of lengths 8, 9, 10, 11, 12 in tmp/bags/ep0..ep4."""
    root = tmp_path / "bags"
    root.mkdir()
    for i, n in enumerate((8, 9, 10, 11, 12)):
        write_bag(root / f"ep{i}", lengths=(n,))
    return root


def tiny_config(bags, out, cache, **over) -> dict:
    d = dict(
        data=dict(bags=[str(b) for b in bags], image_size=[32, 32], use_joint_state=True, val_fraction=0.2,
                  cache_dir=str(cache)),
        policy=dict(backbone="D-Ma", layout="paper", head="BC", size="tiny", obs_horizon=2, action_horizon=3),
        train=dict(steps=3, batch_size=8, val_every=2, ckpt_every=2, log_every=1, seed=0, threads=1),
        out=str(out),
    )
    for key, value in over.items():
        section, name = key.split("__")
        d[section][name] = value
    return d
