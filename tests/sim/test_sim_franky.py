"""The task scene served by franky-sim over the libfranka protocol, cameras rendered in a separate
process from copies of the running state."""

import numpy as np
import pytest

from mail_policy_node.sim.franky import CameraProcess, FrankySimScene


@pytest.mark.slow
def test_franky_sim_serves_the_scene_and_cameras_follow_the_arm():
    franky = pytest.importorskip("franky")
    with FrankySimScene("pick_place", seed=2) as scene:
        assert scene.hostname.startswith("127.")
        robot = franky.Robot(scene.hostname, realtime_config=franky.RealtimeConfig.Ignore)
        robot.relative_dynamics_factor = 0.5
        q0 = np.array(robot.current_joint_state.position)
        np.testing.assert_allclose(q0, scene.initial_q, atol=0.01)
        cube = scene.data.xpos[scene.model.body("cube").id]
        np.testing.assert_allclose(cube[:2], scene.params["cube"][:2], atol=0.005)
        with CameraProcess(scene.xml, "pick_place", scene.params) as cameras:
            before = cameras.render(scene.capture_state())
            target = q0.copy()
            target[0] += 0.15
            robot.move(franky.JointMotion([float(q) for q in target]))
            after = cameras.render(scene.capture_state())
        assert abs(robot.current_joint_state.position[0] - target[0]) < 0.05
    for images in (before, after):
        assert set(images) == {"agentview", "wrist"}
        assert all(img.shape == (128, 128, 3) and img.std() > 10 for img in images.values())
    assert np.abs(after["wrist"].astype(int) - before["wrist"]).mean() > 2, "wrist view must move with the arm"
