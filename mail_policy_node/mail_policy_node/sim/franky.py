"""The same task scene served by franky-sim over the libfranka protocol, in real time.

Why a second path: `TaskEnv` steps physics synchronously with the policy (fast, deterministic,
for training data and evaluation). The robot stack, however, talks to a Franka through libfranka
(franky) with its own real-time clock; to exercise the real control path against the same scene,
franky-sim runs the physics and serves the libfranka protocol, and our controller connects to it
exactly as to the real arm (``franky.Robot(scene.hostname)``).

Design:
- Scene: franky-sim's ``MujocoSimulator`` builds its own FR3 (names prefixed ``robot0_``); we add
  our table, lights, cameras, tcp site and the task's objects to its MJCF tree before it starts
  (`scene.add_to_franky_scene`). Initial conditions come from `TaskEnv.reset(seed)` (same task
  parameters and start joints as the synchronous env for that seed).
- Physics: franky-sim steps at 1 kHz in a background thread (`SimulationServer.run_async`), at about
  0.9x real time, enforcing no limits (our safety layer is the only guard).
- Cameras: rendering in the physics process slows it to about 0.2x real time, so frames are rendered
  from a *copy of the state*: at the camera rate the caller takes `capture_state()` (qpos, mocap
  poses, time: a few hundred bytes, copied in microseconds) and hands it to a `CameraProcess`, a
  separate process holding its own MjModel compiled from the same MJCF and its own GL context. The
  copy is taken while physics runs, so a frame may mix two consecutive 1 ms steps; at 10 Hz cameras
  this is invisible. The memory task's cue colour is derived from the episode time in the camera
  process, so the physics thread is never touched.
- Bind address: libfranka uses fixed ports, so each scene binds its own loopback address
  (127.<a>.<b>.<c>, derived from the process id) and parallel runs do not collide.

- Closed loop: `FrankySimEnv` has `TaskEnv`'s reset/step/observation interface but sends each action as
  a franky ``JointMotion`` (asynchronous, pre-empting the previous one) and a gripper move, and paces
  `step()` by the simulated arm's clock (``dt`` of the arm's time per step, however fast franky-sim
  runs). It is not deterministic (real-time threads) and each motion is planned
  by franky to stop at its target, so motion is less smooth than in `TaskEnv`; it checks the libfranka
  path, not policy quality. The stack's robot node does the same against the real arm.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import mujoco
import numpy as np

from ..control.gripper import GripperCommander, GripperConfig, send_hand_command
from ..parameters import Parameter, default_of
from .env import TaskEnv, make_task
from .scene import CAMERA_NAMES, add_to_franky_scene, scene_renderer
from .tasks import TASKS, get_task

ROBOT_PREFIX = "robot0_"


def loopback_candidates(seed: int | None = None) -> Iterator[str]:
    """127.x.y.z addresses, starting at one derived from ``seed`` (default: the process id)."""
    start = (os.getpid() if seed is None else seed) * 7919 % (250 * 250 * 250)
    for k in range(250 * 250 * 250):
        n = (start + k) % (250 * 250 * 250)
        yield f"127.{1 + n // 62500}.{(n // 250) % 250}.{1 + n % 250}"


def honour_hand_speed(robot) -> None:
    """Make franky-sim's Hand travel at the speed each command asks for, as the Franka Hand does. franky-sim
    keeps the speed of a move or grasp but never uses it: its finger PD jumps to the command's width and
    closed at about 0.15 m/s whatever was asked (0.05 m/s in the profiles), so the stack's Hand and the
    synchronous tasks' (sim/hand.py, the Hand's law) disagreed by up to 5 cm of width. The fingers' set point
    now moves towards the command's width at its speed, one physics step at a time."""
    from .hand import finger_travel

    original = robot._pre_step
    set_point = float(robot._hand_goal_width)

    def pre_step() -> None:
        nonlocal set_point
        goal = robot._hand_goal_width
        if robot._model is not None:
            set_point = finger_travel(set_point, goal, robot._hand_goal_velocity, robot._model.opt.timestep)
        robot._hand_goal_width = set_point
        try:
            original()
        finally:
            robot._hand_goal_width = goal

    robot._pre_step = pre_step


def run_physics(server, period: float, stop: threading.Event | None = None, after_step=None) -> None:
    """franky-sim's steps, one every ``period`` seconds (0: as fast as possible) until the server stops;
    ``after_step()`` (optional) is called after each (the world's /clock publisher).
    franky-sim's own loop sleeps 1 ms minus the step's time after every step, so each sleep's overshoot
    adds up: its clock ran at 0.87x real time on an idle machine. This one sleeps to absolute deadlines,
    so the simulated clock keeps wall-clock pace whenever the CPU allows; after falling more than 50 ms
    behind it drops the backlog instead of bursting."""
    next_t = time.perf_counter()
    while server.running and not (stop is not None and stop.is_set()):
        server.run_once(False)
        if after_step is not None:
            after_step()
        if not period:
            continue
        next_t += period
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.05:
            next_t = time.perf_counter()


class FrankySimScene:
    """A task scene served by franky-sim. Use as a context manager; connect with
    ``franky.Robot(scene.hostname, realtime_config=RealtimeConfig.Ignore)``."""

    def __init__(self, task: str, seed: int = 0, options: dict | None = None, realtime: bool | float = True,
                 hostname: str | None = None, twin: TaskEnv | None = None, strict: bool | dict = False):
        """``twin``: a synchronous `TaskEnv` of the same task that draws the initial conditions (it is
        reset with ``seed``); a temporary one is made when not given. ``strict``: serve it through the
        strict FR3 emulator (`sim.fr3_emulator`: the FR3's limit checks and reflexes, a recording),
        available as ``scene.emulator``; a dict gives the emulator's keyword arguments."""
        self.strict = strict
        self.emulator = None
        self.task = get_task(task)
        self.requested_hostname = hostname  # bind exactly this address (e.g. a bringup profile's robot_ip)
        self.task.robot_prefix = ROBOT_PREFIX
        self.seed = seed
        self.realtime = realtime
        reference = twin if twin is not None else make_task(task, render=False)
        reference.reset(seed, options)
        self.params = reference.params
        self.initial_q = reference.joint_state()[:7].copy()
        if twin is None:
            reference.close()
        self._sim = None
        self._server = None
        self.after_step = None  # called in the physics thread after every 1 ms step (set before `start`)
        self.xml: str | None = None
        self.t0 = 0.0

    def start(self) -> FrankySimScene:
        from franky_sim import SimulationServer
        from franky_sim.mujoco_simulator import MujocoSimulator

        sim = MujocoSimulator()
        sim.init()
        honour_hand_speed(sim.add_robot(initial_q=tuple(float(q) for q in self.initial_q), initial_hand_width=0.08))
        add_to_franky_scene(sim, self.task.elements(), ROBOT_PREFIX)
        self.xml = ET.tostring(sim.scene, encoding="unicode")
        candidates = [self.requested_hostname] if self.requested_hostname else loopback_candidates()
        server = SimulationServer(sim, hostname_candidates=candidates)
        server.init()  # compiles the model and binds the libfranka ports
        self._sim, self._server = sim, server
        if self.strict or isinstance(self.strict, dict):
            from .fr3_emulator import install_fr3_emulator

            install_fr3_emulator(self, **(self.strict if isinstance(self.strict, dict) else {}))
        self.task.apply(sim.model, sim.data, self.params)
        mujoco.mj_forward(sim.model, sim.data)
        self.t0 = float(sim.data.time)
        server.running = True
        server.async_thread = threading.Thread(target=self._physics_loop, name="franky-sim", daemon=True)
        server.async_thread.start()
        return self

    def _physics_loop(self) -> None:
        run_physics(self._server, 0.001 * float(self.realtime) if self.realtime else 0.0, after_step=self.after_step)

    @property
    def hostname(self) -> str:
        return self._server.robot_servers[0].hostname

    @property
    def model(self) -> mujoco.MjModel:
        return self._sim.model

    @property
    def data(self) -> mujoco.MjData:
        return self._sim.data

    def sim_time(self) -> float:
        """Seconds of simulated time since `start`."""
        return float(self._sim.data.time) - self.t0

    def capture_state(self) -> dict:
        """A copy of what the cameras need, taken while physics runs."""
        d = self._sim.data
        return {"qpos": d.qpos.copy(), "mocap_pos": d.mocap_pos.copy(), "mocap_quat": d.mocap_quat.copy(),
                "time": self.sim_time()}

    def evaluate(self) -> tuple[bool, bool]:
        return self.task.evaluate(self._sim.model, self._sim.data, self.params)

    def goal_distance(self) -> float | None:
        return self.task.goal_distance(self._sim.model, self._sim.data, self.params)

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> FrankySimScene:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# The sim world node's parameters (nodes/sim_world_node.py declares exactly these).
SIM_WORLD_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("task", "reach", "the simulated task", choices=tuple(TASKS)),
    Parameter("seed", default_of(FrankySimScene, "seed"), "seed of the task's scene (object and goal placement)",
              0, 2**31 - 1),
    Parameter("hostname", "127.0.0.1", "loopback address franky-sim serves the FR3 on (the controller's robot_ip)"),
    Parameter("real_time_factor", 1.0, "simulated seconds per wall-clock second franky-sim is paced to (it runs "
              "slower where the host cannot keep that pace); below 1 on a small machine with use_sim_time, so the "
              "stack keeps up with the arm", 0.01, 1.0),
    Parameter("state_rate_hz", 10.0, "[Hz] state snapshots for the simulated cameras (their frame rate)", 0.1, 100.0),
    Parameter("episode_timeout", 0.0, "[s of simulated time] from the episode's start (the observation its first "
              "action chunk was planned on) to its end; 0 = the task's own step limit x 0.1 s", 0.0, 7 * 24 * 3600.0),
    Parameter("motion_timeout", 60.0, "[s of the world's clock] from ready to the episode's start (its first "
              "action chunk), else the episode ends failed", 1.0, 24 * 3600.0),
)


def _camera_worker(conn, xml: str, task: str, params: dict, cameras, size) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    spec = get_task(task)
    renderer = scene_renderer(model, size[0], size[1])
    conn.send("ready")
    while True:
        state = conn.recv()
        if state is None:
            break
        data.qpos[:] = state["qpos"]
        data.mocap_pos[:] = state["mocap_pos"]
        data.mocap_quat[:] = state["mocap_quat"]
        params = state.get("params", params)
        spec.update(model, data, params, state["time"])
        mujoco.mj_forward(model, data)
        images = {}
        for cam in cameras:
            renderer.update_scene(data, camera=cam)
            images[cam] = renderer.render().copy()
        conn.send(images)
    renderer.close()


class CameraProcess:
    """Renders ``cameras`` of a scene (MJCF text) in a separate process from captured states."""

    def __init__(self, xml: str, task: str, params: dict, cameras=CAMERA_NAMES, image_size=(128, 128),
                 timeout: float = 60.0):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_camera_worker, args=(child, xml, task, params, tuple(cameras),
                                                              tuple(image_size)), daemon=True)
        self._proc.start()
        self.timeout = timeout
        if not self._conn.poll(timeout) or self._conn.recv() != "ready":
            self.close()
            raise RuntimeError("camera process did not start")

    def render(self, state: dict) -> dict[str, np.ndarray]:
        self._conn.send(state)
        if not self._conn.poll(self.timeout):
            raise TimeoutError("camera process did not answer")
        return self._conn.recv()

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join()

    def __enter__(self) -> CameraProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrankySimEnv:
    """`TaskEnv`'s interface over franky-sim, stepped on the simulated arm's clock: one fresh scene per
    episode, the camera process kept across episodes. ``dynamics_factor`` scales franky's
    velocity/acceleration/jerk limits.

    ``gripper``: how actions' widths become Hand commands (default: the profiles', 0.05 m/s, binary).

    ``twin`` is a synchronous `TaskEnv` (no rendering) reset with the same seed at every `reset`: the
    same task parameters and start joints, and privileged state for a scripted expert's plan
    (``make_expert(env.twin)``); it does not follow the franky-sim arm."""

    def __init__(self, task: str, cameras=CAMERA_NAMES, image_size=(128, 128), dt: float = 0.1,
                 dynamics_factor: float = 0.3, gripper: GripperConfig | None = None):
        self.task_name = task
        self.cameras = tuple(cameras)
        self.image_size = tuple(image_size)
        self.dt = dt
        self.dynamics_factor = dynamics_factor
        self.max_steps = get_task(task).max_steps
        self.twin = make_task(task, render=False)
        self.scene: FrankySimScene | None = None
        self._cameras: CameraProcess | None = None
        self._robot = None
        self._gripper = None
        self._gripper_future = None
        self._hand = GripperCommander(gripper or GripperConfig())  # the profiles' Hand unless told
        self.steps = 0
        self._t_start = 0.0

    def reset(self, seed: int, options: dict | None = None) -> dict:
        import franky

        self._close_scene()
        self.scene = FrankySimScene(self.task_name, seed, options, twin=self.twin).start()
        if self._cameras is None:
            self._cameras = CameraProcess(self.scene.xml, self.task_name, self.scene.params, self.cameras,
                                          self.image_size)
        self._robot = franky.Robot(self.scene.hostname, realtime_config=franky.RealtimeConfig.Ignore)
        self._robot.relative_dynamics_factor = self.dynamics_factor
        self._gripper = franky.Gripper(self.scene.hostname)
        self._gripper_future = None
        self._hand.reset()
        self.steps = 0
        self._t_start = self.scene.sim_time()  # the arm's clock at the episode's first observation
        return self.observe()

    def step(self, action) -> tuple[dict, bool, dict]:
        import franky

        action = np.asarray(action, float).reshape(-1)
        if action.shape != (8,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 8 finite values (7 joints + gripper width), got {action}")
        self._robot.move(franky.JointMotion([float(q) for q in action[:7]]), asynchronous=True)
        busy = self._gripper_future is not None and not self._gripper_future.wait(0.0)
        hand = self._hand.command(float(action[7]), busy)
        if hand is not None:
            self._gripper_future = send_hand_command(self._gripper, hand)
        self.steps += 1
        self._wait_for_arm_time(self._t_start + self.steps * self.dt)
        success, failed = self.scene.evaluate()
        truncated = self.steps >= self.max_steps
        info = {"success": success, "failed": failed, "truncated": truncated and not success, "steps": self.steps}
        return self.observe(), bool(success or failed or truncated), info

    def _wait_for_arm_time(self, t: float, stall_s: float = 5.0) -> None:
        """Wait until the simulated arm's clock (`FrankySimScene.sim_time`) reads ``t``. A step is ``dt`` of the arm's
        time, not of the wall clock: franky executes each motion in the arm's time, and franky-sim keeps
        wall-clock pace only where the CPU allows (0.35x real time on a loaded 2-core machine, where wall-clock
        steps cut every motion short). A clock that stops for ``stall_s`` is an error."""
        last, since = self.scene.sim_time(), time.monotonic()
        while (now := self.scene.sim_time()) < t - 1e-9:
            if now > last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > stall_s:
                raise RuntimeError(f"franky-sim's clock stopped at {now:.3f} s (waiting for {t:.3f} s)")
            time.sleep(min(0.002, max(0.0005, t - now)))

    def observe(self) -> dict:
        state = self.scene.capture_state()
        state["params"] = self.scene.params
        images = self._cameras.render(state)
        q = np.array(self._robot.current_joint_state.position, float)
        fingers = [self.scene.model.joint(f"{ROBOT_PREFIX}finger_joint{i}").qposadr[0] for i in (1, 2)]
        width = float(state["qpos"][fingers].sum())  # franky-sim's reported gripper width is not faithful
        return {"images": images, "joint_state": np.concatenate([q, [width]]), "time": self.steps * self.dt}

    def _close_scene(self) -> None:
        self._robot = self._gripper = self._gripper_future = None
        if self.scene is not None:
            self.scene.close()
            self.scene = None

    def close(self) -> None:
        self._close_scene()
        self.twin.close()
        if self._cameras is not None:
            self._cameras.close()
            self._cameras = None

    def __enter__(self) -> FrankySimEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
