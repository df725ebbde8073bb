"""The task scene served by franky-sim over the libfranka protocol (real time), cameras rendered in a
separate process from copies of the running state: a scripted expert closes the loop through it."""

import numpy as np
import pytest

from mail_policy_node.sim import make_expert


@pytest.mark.slow
def test_expert_reaches_through_franky_sim():
    pytest.importorskip("franky")
    from mail_policy_node.sim.franky import FrankySimEnv

    with FrankySimEnv("reach", dynamics_factor=0.5) as env:
        obs = env.reset(seed=3)
        expert = make_expert(env.twin)  # plans from the synchronous twin's privileged state
        expert.reset(3)
        assert env.scene.hostname.startswith("127.")
        assert env.scene.params == env.twin.params
        np.testing.assert_allclose(obs["joint_state"], env.twin.joint_state(), atol=0.01)
        first = obs["images"]
        assert set(first) == {"agentview", "wrist"}
        assert all(img.shape == (128, 128, 3) and img.std() > 10 for img in first.values())
        done = False
        while not done:
            obs, done, info = env.step(expert.act(obs))
    assert info["success"], f"expert did not reach the target through franky-sim: {info}"
    assert np.abs(obs["images"]["wrist"].astype(int) - first["wrist"]).mean() > 2, "wrist view must follow the arm"
