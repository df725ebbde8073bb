"""MuJoCo renders offscreen through EGL here (no display); chosen before mujoco is first imported."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
