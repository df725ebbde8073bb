"""Closed-loop simulated tasks in the stack's joint_position action space.

    env = make_task("push", seed=0, render=True)
    obs = env.reset(seed=3)                 # obs: images {camera: (H, W, 3) uint8}, joint_state (8,), time
    obs, done, info = env.step(action)      # action: 7 absolute joint targets [rad] + gripper width [m]

One `step` is one control period (``dt`` = 0.1 s, the FeatureSpec's default). Inside, the command is
tracked by joint position actuators (PD, franky_sim's gains) at the physics rate (2 ms): the target
moves linearly from the previous command to the new one over the period, with the ramp's velocity fed
forward, like the interpolating joint controllers of the real arm. Gravity is compensated as on the
real FR3. The gripper is the Franka Hand as the controller drives it (`sim.hand.SimulatedHand`: the
commanded width becomes a grasp or an open command, run at the Hand's speed); a force-limited actuator
follows the Hand's set point.

Everything is deterministic given the seed passed to `reset` (the same seed and actions give the same
observations, bit for bit, on the same machine and MuJoCo build).
"""

from __future__ import annotations

import mujoco
import numpy as np

from ..spec import FR3_JOINT_NAMES, CameraSpec, FeatureSpec
from .hand import SimulatedHand
from .kinematics import HOME_Q, HOME_YAW, ArmKinematics, down_rotation
from .scene import ARM_KP, ARM_KV, CAMERA_NAMES, build_scene_xml, scene_renderer
from .tasks import Task, get_task, gripper_width

GRIPPER_MAX_WIDTH = 0.08
CONTROL_DT = 0.1
PHYSICS_DT = 0.002


class TaskEnv:
    """One task in its own MuJoCo model. Not thread-safe; one instance per process or thread."""

    def __init__(
        self,
        task: str | Task,
        seed: int = 0,
        render: bool = True,
        image_size: tuple[int, int] = (128, 128),
        cameras: tuple[str, ...] = CAMERA_NAMES,
        dt: float = CONTROL_DT,
        physics_dt: float = PHYSICS_DT,
    ):
        self.task = get_task(task) if isinstance(task, str) else task
        self.dt = float(dt)
        self.n_substeps = int(round(self.dt / physics_dt))
        if self.n_substeps < 1 or abs(self.n_substeps * physics_dt - self.dt) > 1e-9:
            raise ValueError(f"dt {dt} must be a whole multiple of physics_dt {physics_dt}")
        unknown = set(cameras) - set(CAMERA_NAMES)
        if unknown:
            raise ValueError(f"unknown cameras {sorted(unknown)}; scene cameras: {list(CAMERA_NAMES)}")
        self.cameras = tuple(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))  # (H, W)
        self.model = mujoco.MjModel.from_xml_string(build_scene_xml(self.task.elements(), physics_dt))
        self.data = mujoco.MjData(self.model)
        self.kinematics = ArmKinematics(self.model)
        self.hand = SimulatedHand()
        m = self.model
        self._qpos_adr = np.array([m.joint(n).qposadr[0] for n in FR3_JOINT_NAMES])
        self._dof_adr = np.array([m.joint(n).dofadr[0] for n in FR3_JOINT_NAMES])
        self._finger_qpos = np.array([m.joint(n).qposadr[0] for n in ("finger_joint1", "finger_joint2")])
        self._finger_dof = np.array([m.joint(n).dofadr[0] for n in ("finger_joint1", "finger_joint2")])
        self._arm_act = np.array([m.actuator(n).id for n in FR3_JOINT_NAMES])
        self._grip_act = m.actuator("gripper").id
        self._ff = np.array(ARM_KV) / np.array(ARM_KP)  # velocity feed-forward time constant per joint
        self.joint_lower = m.jnt_range[[m.joint(n).id for n in FR3_JOINT_NAMES], 0].copy()
        self.joint_upper = m.jnt_range[[m.joint(n).id for n in FR3_JOINT_NAMES], 1].copy()
        self._renderer = None
        if render:
            self._renderer = scene_renderer(m, self.image_size[0], self.image_size[1])
        self._next_seed = int(seed)
        self.seed: int | None = None
        self.params: dict = {}
        self.steps = 0
        self._command = np.zeros(8)
        self._base_rgba = m.geom_rgba.copy()

    # ----------------------------------------------------------------------------------------------
    @property
    def task_name(self) -> str:
        return self.task.name

    @property
    def max_steps(self) -> int:
        return self.task.max_steps

    def feature_spec(self, **overrides) -> FeatureSpec:
        """The FeatureSpec this env produces and consumes: its cameras at its image size, the
        joint_position action space, its dt. ``overrides`` set the remaining fields (K, J, ...)."""
        cams = tuple(CameraSpec(c, *self.image_size) for c in self.cameras)
        return FeatureSpec(cameras=cams, dt=self.dt, **overrides)

    @property
    def time(self) -> float:
        return self.steps * self.dt

    def reset(self, seed: int | None = None, options: dict | None = None) -> dict:
        """Start an episode. ``seed`` None continues with the next seed after the last one used.
        ``options`` go to the task (memory: {"cue": "left"|"right"} forces the cue)."""
        seed = self._next_seed if seed is None else int(seed)
        self.seed, self._next_seed = seed, seed + 1
        rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        m.geom_rgba[:] = self._base_rgba
        self.params = self.task.sample(rng, options)
        # Arm start: tcp above the table centre with a little variation, hand pointing down.
        start = np.array([0.42, 0.0, 0.28]) + rng.uniform(-1, 1, 3) * [0.03, 0.05, 0.03]
        yaw = HOME_YAW + rng.uniform(-0.15, 0.15)
        q0 = self.kinematics.ik(HOME_Q, start, down_rotation(yaw), iters=60)
        d.qpos[self._qpos_adr] = q0
        d.qpos[self._finger_qpos] = GRIPPER_MAX_WIDTH / 2
        self.task.apply(m, d, self.params)
        self.hand.reset(GRIPPER_MAX_WIDTH)
        self._command = np.concatenate([q0, [GRIPPER_MAX_WIDTH]])
        d.ctrl[self._arm_act] = q0
        d.ctrl[self._grip_act] = GRIPPER_MAX_WIDTH
        mujoco.mj_forward(m, d)
        self.steps = 0
        self.task.update(m, d, self.params, 0.0)
        return self.observe()

    def step(self, action, path=None) -> tuple[dict, bool, dict]:
        """Apply one joint_position action for ``dt`` seconds and observe. ``path`` (k, 8): the commands of
        k equal slices of the step that end at ``action`` (a controller's cycles), followed instead of one
        straight ramp; ``k`` must divide the step's physics substeps."""
        if self.seed is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=float).reshape(-1)
        if action.shape != (8,):
            raise ValueError(f"action must be 7 joint targets + gripper width (8 values), got shape {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        target = action.copy()
        target[:7] = np.clip(target[:7], self.joint_lower, self.joint_upper)
        target[7] = np.clip(target[7], 0.0, GRIPPER_MAX_WIDTH)
        m, d = self.model, self.data
        if path is None:
            slices = target[None].copy()
        else:
            slices = np.asarray(path, dtype=float).reshape(-1, 8).copy()
            if self.n_substeps % len(slices) or not np.all(np.isfinite(slices)):
                raise ValueError(f"path: {len(slices)} finite slices must divide {self.n_substeps} substeps")
            slices[:, :7] = np.clip(slices[:, :7], self.joint_lower, self.joint_upper)
            slices[:, 7] = np.clip(slices[:, 7], 0.0, GRIPPER_MAX_WIDTH)
            slices[-1] = target
        for row in slices:  # the commanded widths through the Hand, slice by slice
            row[7] = self.hand.step(row[7], self.dt / len(slices))
        per = self.n_substeps // len(slices)
        start = self._command
        for j, end in enumerate(slices):
            feed_forward = self._ff * (end[:7] - start[:7]) / (self.dt / len(slices))
            for k in range(1, per + 1):
                ramp = start + (k / per) * (end - start)
                last = j == len(slices) - 1 and k == per
                d.ctrl[self._arm_act] = ramp[:7] + (0.0 if last else feed_forward)
                d.ctrl[self._grip_act] = ramp[7]
                mujoco.mj_step(m, d)
            start = end
        self._command = slices[-1]
        self.steps += 1
        self.task.update(m, d, self.params, self.time)
        success, failed = self.task.evaluate(m, d, self.params)
        truncated = self.steps >= self.task.max_steps
        info = {"success": success, "failed": failed, "truncated": truncated and not success, "steps": self.steps,
                "command": target, "goal_distance": self.task.goal_distance(m, d, self.params)}
        return self.observe(), bool(success or failed or truncated), info

    # ----------------------------------------------------------------------------------------------
    def joint_state(self) -> np.ndarray:
        """[q1..q7, gripper width] as on /joint_states (width = sum of the two finger joints)."""
        d = self.data
        return np.concatenate([d.qpos[self._qpos_adr], [d.qpos[self._finger_qpos].sum()]])

    def joint_velocity(self) -> np.ndarray:
        """[dq1..dq7, finger1 velocity, finger2 velocity]."""
        d = self.data
        return np.concatenate([d.qvel[self._dof_adr], d.qvel[self._finger_dof]])

    def joint_effort(self) -> np.ndarray:
        """Actuator torques on the 7 arm joints and forces on the 2 fingers."""
        d = self.data
        return np.concatenate([d.qfrc_actuator[self._dof_adr], d.qfrc_actuator[self._finger_dof]])

    def render(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("this env was made with render=False")
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def observe(self) -> dict:
        images = {c: self.render(c) for c in self.cameras} if self._renderer is not None else {}
        return {"images": images, "joint_state": self.joint_state(), "time": self.time}

    def state(self) -> dict:
        """Privileged state: tcp pose, commanded action, task objects. For experts and tests only."""
        m, d = self.model, self.data
        site = m.site("tcp").id
        return {
            "tcp": d.site_xpos[site].copy(),
            "tcp_rot": d.site_xmat[site].reshape(3, 3).copy(),
            "q": d.qpos[self._qpos_adr].copy(),
            "width": gripper_width(m, d),
            "command": self._command.copy(),
            "time": self.time,
            **self.task.object_state(m, d, self.params),
        }

    def camera_fovy(self, camera: str) -> float:
        return float(self.model.cam_fovy[self.model.camera(camera).id])

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_task(name: str, seed: int = 0, render: bool = True, **kwargs) -> TaskEnv:
    """The closed-loop evaluation entry point: a `TaskEnv` for task ``name`` (see sim.tasks.TASKS)."""
    return TaskEnv(name, seed=seed, render=render, **kwargs)
