"""The closed-loop task env: seeded resets, the joint_position action space, rendering."""

import numpy as np
import pytest

from mail_policy_node.sim import TASKS, make_task
from mail_policy_node.sim.tasks import CUE_OFF_TIME


def _snapshot(env):
    d = env.data
    return np.concatenate([d.qpos, d.qvel, d.mocap_pos.reshape(-1)])


@pytest.fixture(scope="module")
def envs():
    made = {name: make_task(name, render=False) for name in TASKS}
    yield made
    for env in made.values():
        env.close()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_reset_is_deterministic_from_seed(envs, name):
    env = envs[name]
    other = make_task(name, render=False)
    a, b = env.reset(seed=7), other.reset(seed=7)
    np.testing.assert_array_equal(a["joint_state"], b["joint_state"])
    np.testing.assert_array_equal(_snapshot(env), _snapshot(other))
    assert env.params == other.params
    rng = np.random.default_rng(0)
    for _ in range(5):  # same actions -> same trajectory, bit for bit
        action = env.state()["command"] + np.r_[rng.normal(0, 0.02, 7), 0.0]
        env.step(action)
        other.step(action)
    np.testing.assert_array_equal(_snapshot(env), _snapshot(other))
    env.reset(seed=8)
    other.reset(seed=7)
    assert not np.array_equal(_snapshot(env), _snapshot(other)), "a different seed must change the scene"


def test_step_follows_joint_targets_and_reports(envs):
    env = envs["reach"]
    obs = env.reset(seed=0)
    assert obs["time"] == 0.0 and obs["joint_state"].shape == (8,) and obs["images"] == {}
    target = obs["joint_state"].copy()
    target[0] += 0.15
    target[7] = 0.06  # open (above the Hand's close threshold): the fingers stay at the full width
    for _ in range(10):
        obs, done, info = env.step(target)
    assert obs["time"] == pytest.approx(1.0)
    assert not done and info["success"] is False and info["steps"] == 10
    np.testing.assert_allclose(obs["joint_state"][:7], target[:7], atol=5e-3)
    assert obs["joint_state"][7] == pytest.approx(0.08, abs=3e-3)
    np.testing.assert_array_equal(info["command"], target)  # the action as commanded, the width included


def test_feature_spec_matches_the_env(envs):
    spec = envs["push"].feature_spec(obs_horizon=2)
    assert spec.camera_names == ("agentview", "wrist") and spec.cameras[0].height == 128
    assert spec.action_space == "joint_position" and spec.action_dim == 8 and spec.dt == 0.1
    assert spec.obs_horizon == 2


def test_step_rejects_bad_actions(envs):
    env = make_task("reach", render=False)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(8))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="8 values"):
        env.step(np.zeros(7))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(8, np.nan))
    with pytest.raises(ValueError, match="unknown task"):
        make_task("juggle")


def test_episode_ends_at_max_steps(envs):
    env = envs["reach"]
    obs = env.reset(seed=1)
    hold = obs["joint_state"].copy()
    done, steps = False, 0
    while not done:
        _, done, info = env.step(hold)
        steps += 1
    assert steps == env.max_steps and info["truncated"] and not info["success"]


def test_rendering_gives_two_distinct_non_constant_views():
    env = make_task("pick_place", render=True)
    obs = env.reset(seed=0)
    images = obs["images"]
    assert set(images) == {"agentview", "wrist"}
    for img in images.values():
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        assert img.std() > 10, "a rendered view should not be flat"
    assert not np.array_equal(images["agentview"], images["wrist"])
    again = env.reset(seed=0)["images"]
    np.testing.assert_array_equal(again["agentview"], images["agentview"])
    env.close()


def test_memory_cue_is_gone_after_the_first_second():
    """Forced cues, same seed otherwise: the first frame differs, frames after the cue do not."""
    env = make_task("memory", render=True)
    frames = {}
    for cue in ("left", "right"):
        obs = env.reset(seed=3, options={"cue": cue})
        first = obs["images"]["agentview"]
        hold = obs["joint_state"].copy()
        while obs["time"] < CUE_OFF_TIME:
            obs, _, _ = env.step(hold)
        frames[cue] = (first, obs)
    assert not np.array_equal(frames["left"][0], frames["right"][0])
    later = {cue: obs for cue, (_, obs) in frames.items()}
    for cam in ("agentview", "wrist"):
        np.testing.assert_array_equal(later["left"]["images"][cam], later["right"]["images"][cam])
    np.testing.assert_array_equal(later["left"]["joint_state"], later["right"]["joint_state"])
    env.close()


def _width_after(env, widths):
    obs = None
    for w in widths:
        action = env.state()["command"].copy()
        action[7] = w
        obs, _, _ = env.step(action)
    return obs["joint_state"][7]


def test_the_gripper_is_the_franka_hand_as_the_controller_drives_it(envs):
    """The fingers follow Hand commands, not the commanded width: a width below ``close_below`` (0.04 m) is a
    grasp run at the Hand's 0.05 m/s, a width between the thresholds changes nothing, a width above
    ``close_below`` + the hysteresis opens at the same speed. A gripper that jumped to the commanded width
    (before) gave demonstrations whose widths the deployed Hand never reports."""
    env = envs["push"]
    env.reset(seed=0)
    assert _width_after(env, [0.045] * 5) == pytest.approx(0.08, abs=2e-3), "between the thresholds: no command"
    assert _width_after(env, [0.02] * 10) == pytest.approx(0.03, abs=4e-3), "1 s of a grasp at 0.05 m/s"
    assert _width_after(env, [0.045] * 8) == pytest.approx(0.0, abs=3e-3), "the grasp runs on to closed"
    assert _width_after(env, [0.07] * 6) == pytest.approx(0.03, abs=4e-3), "opening: 0.05 m/s again"


def test_a_controller_path_drives_the_hand_as_one_step_does(envs):
    """`step(path=...)` (the controller's cycles, `mail-il eval --through-controller`) moves the Hand by the
    same law: ten 10 ms slices of a grasp close the fingers' set point as far as one 0.1 s step does."""
    a, b = make_task("push", render=False), make_task("push", render=False)
    a.reset(seed=1)
    b.reset(seed=1)
    action = a.state()["command"].copy()
    action[7] = 0.0
    for _ in range(4):
        a.step(action)
        b.step(action, path=np.repeat(action[None], 10, axis=0))
    assert a.state()["command"][7] == pytest.approx(0.08 - 4 * 0.005)
    assert b.state()["command"][7] == pytest.approx(a.state()["command"][7])
    a.close()
    b.close()


def test_the_simulated_hand_runs_one_command_at_a_time():
    """As on the Hand: an open asked for while a grasp runs waits until the grasp has run; NaN keeps what runs."""
    from mail_policy_node.sim.hand import SimulatedHand

    hand = SimulatedHand()
    assert hand.step(0.0, 0.1) == pytest.approx(0.075) and hand.moving
    for _ in range(5):
        assert hand.step(0.08, 0.1) < 0.075, "the open waits behind the running grasp"
    while hand.moving:
        hand.step(0.08, 0.1)
    assert hand.width == pytest.approx(0.0)
    assert hand.step(float("nan"), 0.1) == pytest.approx(0.0)
    assert hand.step(0.08, 0.1) == pytest.approx(0.005), "the open runs once the grasp has"
