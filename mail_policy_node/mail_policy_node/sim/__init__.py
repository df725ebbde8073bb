"""Simulated FR3 task suite (MuJoCo, ROS-free): scene, tasks, closed-loop env, scripted experts.

    from mail_policy_node.sim import make_task, make_expert
    env = make_task("pick_place", seed=0, render=True)

Offscreen rendering needs a GL backend chosen before `mujoco` is imported; without a display we
default to EGL (``MUJOCO_GL=egl``) unless the caller has set ``MUJOCO_GL`` already.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from .env import TaskEnv, make_task
from .experts import make_expert, run_expert_episode
from .tasks import TASKS

__all__ = ["TASKS", "TaskEnv", "make_expert", "make_task", "run_expert_episode"]
