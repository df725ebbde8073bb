"""The franky-sim scene the `sim` profile's cameras render looks like the synchronous task scene the
demonstrations are recorded in: a policy must not meet other images behind the ROS stack."""

import numpy as np
import pytest

from mail_policy_node.data.cameras import SimSceneCamera
from mail_policy_node.sim.env import make_task
from mail_policy_node.sim.franky import FrankySimScene


@pytest.mark.parametrize("task", ["reach", "push"])
def test_franky_scene_renders_like_the_task_scene(task):
    env = make_task(task, render=True)
    obs = env.reset(7)
    scene = FrankySimScene(task, seed=7).start()
    try:
        state = scene.capture_state()
        for cam in ("agentview", "wrist"):
            ours = obs["images"][cam]
            camera = SimSceneCamera(cam, ours.shape[1], ours.shape[0])
            camera.set_scene(scene.xml, task, scene.params)
            theirs = camera.render(state)
            camera.close()
            # same state, same look: within rounding (franky-sim's own lights and ground made it 50/255)
            assert np.abs(ours.astype(float) - theirs).mean() < 1.0, cam
    finally:
        scene.close()
        env.close()
