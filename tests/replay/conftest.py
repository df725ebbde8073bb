"""Replay tests: tiny real checkpoints, bags from the simulator recorder and written directly."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering for the simulator's recorder

import pytest
import torch

from mail_policy_node.model.checkpoint import save_checkpoint
from mail_policy_node.spec import EE_DELTA_NAMES, GRIPPER_NAME, CameraSpec, FeatureSpec
from tests.model.tiny import tiny_policy
from tests.policy.ckpts import make_checkpoint


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """One torch thread: much faster for these tiny models on a loaded 2-core machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay_ckpts")
    out = {"a": make_checkpoint(root / "a", seed=0), "b": make_checkpoint(root / "b", seed=1)}
    torch.manual_seed(2)
    spec = FeatureSpec(cameras=(CameraSpec("agentview", 32, 32), CameraSpec("wrist", 32, 32)), use_joint_state=True,
                       action_space="ee_delta_pose", action_names=EE_DELTA_NAMES + (GRIPPER_NAME,), obs_horizon=2,
                       action_horizon=3)
    save_checkpoint(tiny_policy("d_ma_bc", spec=spec, layout="streaming"), root / "ee_delta")
    out["ee_delta"] = str(root / "ee_delta")
    return out
