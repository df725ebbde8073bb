"""One Meta-World v3 task as this project's simulated tasks look: seeded starts, two 128x128 cameras,
the scripted expert, success as Meta-World reports it. The only module that imports metaworld (and
mujoco 3.3.0): it runs in .venv-metaworld (scripts/setup_metaworld_env.sh).

    env = MetaWorldTask("push")
    obs = env.reset(seed=1000)           # {"time", "images": {camera: (H, W, 3) uint8}, "state", "raw"}
    obs, info = env.step(expert.act(obs))  # info: success (Meta-World's), steps

Setup, following DP3 (3D Diffusion Policy, Ze et al. 2024, its MetaWorldEnv): the goal-observable
environments (the experts read the goal from the observation; the policies here see only images and
the arm's state), episodes of ``MAX_STEPS`` = 200 control steps, camera ``corner2`` moved to
``DP3_CORNER2_POS`` with DP3's near/far clipping (applied to that camera only). DP3 rendered through
mujoco-py, whose frames come bottom row first: its corner2 images are this camera's view flipped
vertically, which is the right way up (the table below, the arm's base above); rendered here with
mujoco.Renderer (top row first) the camera itself is upside down, so its frames are flipped here. The
second camera is Meta-World's ``gripperPOV`` (on the hand), for MaIL's two-camera layout.

Seeded starts: ``seeded_rand_vec`` draws the object and goal positions from the environment's own
generator, seeded with the episode's seed before each reset: the same seed, the same start.

State (what the bags' /joint_states holds, `BAG_STATE_NAMES`): the Sawyer's 7 arm joints [rad] under
their MJCF names, the distance between its two claws [m], and DP3-style hand position [m] and
Meta-World's normalised gripper opening (`HAND_STATE_NAMES`, the first 4 values of Meta-World's own
observation). Actions: Meta-World's 4 values, the hand's target displacement in x, y, z (1 = 1 cm per
step, clipped to [-1, 1]) and the gripper effort (-1 open .. 1 close): `ACTION_NAMES` (spec's
``ee_delta_position``).

Rendering: shadows, reflections and skybox off and no multisampling (offsamples 0): both views at
128x128 in about 8 ms on this CPU with EGL (``MUJOCO_GL=egl``, set here unless the caller chose); with
MuJoCo's default multisampling it was about 28 ms.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported

import mujoco
from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
from metaworld.policies import ENV_POLICY_MAP

from .metaworld import (ACTION_NAMES, ARM_JOINT_NAMES, CAMERAS, DP3_CORNER2_CLIP, DP3_CORNER2_POS, FLIPPED_CAMERAS,
                        IMAGE_SIZE, MAX_STEPS, env_name)


def all_tasks() -> tuple[str, ...]:
    """Every Meta-World v3 task with a scripted expert (50)."""
    return tuple(sorted(n[: -len("-v3")] for n in ENV_POLICY_MAP))


class MetaWorldTask:
    """One task: `reset(seed)`, `step(action)`, `expert()`; rendering only when ``render``."""

    def __init__(self, task: str, image_size: tuple[int, int] = IMAGE_SIZE, cameras=CAMERAS, render: bool = True):
        key = f"{env_name(task)}-goal-observable"
        if key not in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
            raise ValueError(f"unknown Meta-World v3 task {task!r}; known: {', '.join(all_tasks())}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"camera(s) {unknown}: the benchmark renders {list(CAMERAS)}")
        self.task_name, self.cameras, self.max_steps = task, tuple(cameras), MAX_STEPS
        self.env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[key]()
        m = self.env.model
        m.cam_pos[m.camera("corner2").id] = DP3_CORNER2_POS
        self.dt = float(m.opt.timestep * self.env.frame_skip)  # [s] per control step (0.0125)
        self._arm_qpos = [m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINT_NAMES]
        self.steps, self.time = 0, 0.0
        self._renderer = None
        if render:
            m.vis.quality.offsamples = 0
            self._renderer = mujoco.Renderer(m, *image_size)
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                self._renderer.scene.flags[flag] = False

    # ---- episode ----
    def reset(self, seed: int) -> dict:
        env = self.env
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.seed(int(seed))
        self._raw, _ = env.reset()
        mujoco.mj_forward(env.model, env.data)  # camera poses for the first frame
        self.steps, self.time = 0, 0.0
        return self.observation()

    def step(self, action) -> tuple[dict, dict]:
        """One control step (Meta-World clips the action to [-1, 1]). info: success, steps, reward."""
        a = np.asarray(action, np.float64).reshape(-1)
        if a.shape != (4,) or not np.isfinite(a).all():
            raise ValueError(f"a Meta-World action is 4 finite values {ACTION_NAMES}, got {a}")
        self._raw, reward, _, _, info = self.env.step(a)
        self.steps += 1
        self.time = self.steps * self.dt
        return self.observation(), dict(success=bool(info["success"]), steps=self.steps, reward=float(reward))

    def expert(self):
        """Meta-World's scripted policy for this task: ``act(obs)`` -> action."""
        return _Expert(ENV_POLICY_MAP[env_name(self.task_name)]())

    # ---- observations ----
    def observation(self) -> dict:
        return dict(time=self.time, images=self.render() if self._renderer else {}, state=self.state(),
                    raw=np.array(self._raw))

    def state(self) -> np.ndarray:
        """`BAG_STATE_NAMES`: [7 arm joints [rad], claw distance [m], hand x y z [m], gripper opening]."""
        d = self.env.data
        width = float(np.linalg.norm(d.body("rightclaw").xpos - d.body("leftclaw").xpos))
        return np.array([*d.qpos[self._arm_qpos], width, *self._raw[:4]], float)

    def object_state(self) -> np.ndarray:
        """Positions and orientations of the task's objects and the goal (the raw observation's, not the hand's)."""
        return np.concatenate([self._raw[4:18], self._raw[-3:]])

    def render(self) -> dict[str, np.ndarray]:
        r, m = self._renderer, self.env.model
        out = {}
        for cam in self.cameras:
            near_far = (m.vis.map.znear, m.vis.map.zfar)
            if cam == "corner2":
                m.vis.map.znear, m.vis.map.zfar = DP3_CORNER2_CLIP
            r.update_scene(self.env.data, camera=cam)
            m.vis.map.znear, m.vis.map.zfar = near_far
            img = r.render()
            out[cam] = np.ascontiguousarray(img[::-1] if cam in FLIPPED_CAMERAS else img)
        return out

    def camera_fovy(self, camera: str) -> float:
        return float(self.env.model.cam_fovy[self.env.model.camera(camera).id])

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.env.close()


class _Expert:
    def __init__(self, policy):
        self.policy = policy

    def act(self, obs: dict) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": the env clips, as intended
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(self.policy.get_action(obs["raw"]), np.float64)
