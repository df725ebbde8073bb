"""Meta-World v3 benchmark: expert demos as the trainer reads them, the cameras, seeded starts, and a
tiny trained policy evaluated end to end through the benchmark's evaluator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT, require_metaworld

require_metaworld()

from mail_policy_node.benchmarks import metaworld as mw  # noqa: E402
from mail_policy_node.benchmarks.metaworld_env import MetaWorldTask  # noqa: E402


def test_mujoco_is_metaworlds_own_and_the_project_imports():
    import mujoco
    import torch  # noqa: F401  (from the main venv)

    assert mujoco.__version__ == "3.3.0"


def test_expert_demo_reads_as_an_episode_of_the_trainer(push_demos):
    from mail_policy_node.data.topics import TopicMap
    from mail_policy_node.training.episodes import EpisodeSettings, find_bags, load_bag_episodes

    summary = json.loads((push_demos / "summary.json").read_text())
    assert summary["tasks"]["push"]["kept"] == 2 and summary["tasks"]["push"]["tried"] == 2
    assert summary["images"] == "png" and 1.0 < summary["tasks"]["push"]["mean_bag_mb"] < 4.0  # 80 steps
    bags = find_bags([push_demos])
    assert [b.name for b in bags] == ["ep0000_seed0", "ep0001_seed1"]
    settings = EpisodeSettings(mw.CAMERAS, mw.IMAGE_SIZE, 0.0125, state_names=mw.BAG_STATE_NAMES,
                               topics=TopicMap(cameras=mw.camera_topics()))
    (e,), _ = load_bag_episodes(bags[0], settings, None)
    assert len(e) == 80 and e.actions.shape == (80, 4) and e.state.shape == (80, len(mw.BAG_STATE_NAMES))
    assert {c: v.shape for c, v in e.images.items()} == {c: (80, 128, 128, 3) for c in mw.CAMERAS}
    assert e.action_names == mw.ACTION_NAMES
    assert e.info["task"] == "push-v3" and e.info["seed"] == 0 and e.info["success"] is True
    assert e.info["success_steps"] >= mw.MIN_SUCCESS_STEPS
    assert e.info["native_image_size"] == {c: [128, 128] for c in mw.CAMERAS}
    assert np.abs(e.actions[:, :3]).max() > 0.1 and np.all(np.abs(e.actions) <= 1.0 + 1e-6)
    state = dict(zip(mw.BAG_STATE_NAMES, e.state[0]))
    assert 0.0 < state["claw_distance"] < 0.12  # [m], open at the start
    assert 0.5 < state["hand_y"] < 0.8 and 0.0 < state["hand_z"] < 0.4  # [m] above the table, in front of the arm
    assert np.abs(np.diff(e.state[:, 8:11], axis=0)).max() > 1e-3  # the hand moves


def test_corner2_is_the_right_way_up():
    # DP3's corner2 looks down at the table from the front, above it: past the far clipping plane (and with
    # the skybox off) the top of the picture is black, the table fills the bottom. MuJoCo renders this
    # camera upside down; unflipped, the black band would be at the bottom.
    env = MetaWorldTask("push")
    try:
        img = env.reset(1000)["images"]["corner2"]
    finally:
        env.close()
    dark = img.max(axis=2) < 10  # (128, 128)
    assert img.shape == (128, 128, 3)
    assert dark[:20].mean() > 0.8, dark[:20].mean()
    assert dark[-40:].mean() < 0.01, dark[-40:].mean()
    table = img[-40:].astype(float).mean(axis=(0, 1))  # wood: red > green > blue
    assert table[0] > table[1] > table[2], table


def test_a_seeded_start_is_reproducible_and_seeds_differ():
    a, b = MetaWorldTask("pick-place", render=False), MetaWorldTask("pick-place", render=False)
    try:
        first = a.reset(1000)
        s1000, state = a.object_state(), first["state"]
        s1001 = a.reset(1001) and a.object_state()
        again = a.reset(1000) and a.object_state()
        other = b.reset(1000) and b.object_state()  # another process's env, same seed
    finally:
        a.close()
        b.close()
    np.testing.assert_array_equal(s1000, again)
    np.testing.assert_array_equal(s1000, other)
    assert np.linalg.norm(s1000[:3] - s1001[:3]) > 0.01  # the object moved
    assert np.linalg.norm(s1000[-3:] - s1001[-3:]) > 0.01  # and the goal
    assert state.shape == (len(mw.BAG_STATE_NAMES),) and np.all(np.isfinite(state))


def test_tiny_policy_trains_on_the_demos_and_evaluates_end_to_end(push_demos, tmp_path):
    from mail_policy_node.commands import train as train_cmd
    from mail_policy_node.model.checkpoint import load_checkpoint
    from mail_policy_node.spec import ACTION_SPACE_EE_DELTA_POSITION

    # the GPU recipe (its hand state names and cameras), made tiny for a CPU
    assert train_cmd.main([str(ROOT / "mail_bringup/config/train/metaworld_dma_ddpm_gpu.yaml"),
                           f"data.bags=[{push_demos}]", "data.image_size=[32, 32]", "data.val_fraction=0.5",
                           f"data.cache_dir={tmp_path / 'cache'}", "policy.size=tiny", "policy.obs_horizon=2",
                           "policy.action_horizon=3", "policy.diffusion={steps: 4}", "train.device=cpu",
                           "train.steps=2", "train.batch_size=8", "train.val_every=1", "train.ckpt_every=1",
                           "train.log_every=1", "train.threads=1", f"out={tmp_path / 'run'}", "--no-progress"]) == 0
    # a checkpoint being written (the trainer's step_<n>.tmp, renamed when whole) is not one of the run's
    shutil.copytree(tmp_path / "run" / "checkpoints" / "step_0000002", tmp_path / "run" / "checkpoints" /
                    "step_0000003.tmp")
    assert [p.name for p in mw.run_checkpoints(tmp_path / "run")] == ["step_0000001", "step_0000002"]
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_0000003.tmp")
    spec = load_checkpoint(tmp_path / "run" / "final", "cpu").cfg.spec
    assert spec.action_space == ACTION_SPACE_EE_DELTA_POSITION and spec.action_names == mw.ACTION_NAMES
    assert spec.use_joint_state and spec.state_names == mw.HAND_STATE_NAMES == mw.STATE_NAMES
    out = tmp_path / "eval"
    # the command as a user runs it, with two worker processes (spawned: each imports the entry script again)
    cmd = [str(Path(sys.executable).parent / "mail-il"), "metaworld", "eval", "--run", str(tmp_path / "run"),
           "--task", "push", "--episodes", "2", "--max-steps", "12", "--workers", "2", "--out", str(out),
           "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "metaworld_eval.json").read_text())
    assert report["seeds"] == [mw.EVAL_SEED, mw.EVAL_SEED + 1] and report["tasks"] == ["push"]
    assert len(report["evaluations"]) == 2  # both kept checkpoints
    push = report["per_task"]["push"]
    assert push["evaluations"] == 2 and 0.0 <= push["last"] <= push["best5"] <= 1.0
    for ev in report["evaluations"]:
        assert ev["episodes"] == 2 and 0 <= ev["wilson95"][0] <= ev["success_rate"] <= ev["wilson95"][1] <= 1
        for ep in ev["episodes_detail"]:
            # 12 steps unless it succeeded earlier; every step's action went to the env and moved the hand
            assert ep["actions_sent"] == ep["steps"] and (ep["success"] or ep["steps"] == 12)
            assert max(ep["mean_abs_action"][:3]) > 0 and ep["hand_moved_m"] > 1e-4
    assert (out / "metaworld_eval.md").read_text().startswith("| checkpoint | task |")


def test_without_metaworld_the_command_names_the_venv_to_use():
    main_python = ROOT / ".venv" / "bin" / "python"
    if not main_python.exists():
        pytest.skip("no main venv (.venv) here")
    r = subprocess.run([str(main_python), "-c", "import sys; from mail_policy_node.benchmarks import metaworld as m; "
                        "sys.exit(m.main(['check', '--task', 'push']))"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "make metaworld-env" in r.stderr, (r.returncode, r.stderr[-500:])
