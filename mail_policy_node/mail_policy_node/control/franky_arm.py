"""Adapter from the controller core's per-cycle commands to a Franka FR3 through ``franky``.

Motion type: ``JointVelocityMotion`` pre-empted every cycle (asynchronous=True). The velocity sent is
the safety filter's commanded velocity plus a small, clipped position correction
``gain * (q_cmd - q_measured)``. Why this and not a pre-empted ``JointMotion``: measured on franky-sim
at 100 Hz, re-planning a position motion (with or without target velocity) every 10 ms lagged and
overshot by up to 0.5 rad on a 0.2 rad sine, while streaming velocities tracked it with about 0.02
rad RMS error (most of it the simulator running slower than real time). Velocity streaming also
gives a dead-man behaviour for free: each motion only holds its velocity for ``velocity_hold_ms``, so if
our loop stops, franky ramps the robot to rest on its own, within its jerk-limited planner.

What the arm receives: franky turns each 10 ms velocity into 1 kHz commands with its own planner,
within its joint velocity/acceleration/jerk limits. Those limits are set at connection to the caps of
``limits.DynamicsBudget`` (the FR3 table x the profile's scales x the relative dynamics factor; franky's
own factor stays 1) and read back: so every 1 kHz command is inside the caps, whatever the 100 Hz loop's
jitter, and the caps are inside the FR3's limits. franky's built-in limits are the Panda's table (its
maxima; higher values are refused); left as they were, franky's plans at a factor above about 0.5 gave
a 1 kHz stream beyond the FR3's acceleration and jerk limits on a strict emulator.

Connection: ``host`` names the robot; "" means no robot (dry run only: the stand-in echoes the
commands as the measured state). A dry run with a host connects and reads the arm's real state, and
never moves it (nor changes its configuration). franky-control 2.0.0 notes: targets must be floats;
``poll_motion`` is unreliable, so errors are collected with ``join_motion(timeout=0.0)``; asynchronous
errors surface there or at the next ``move``.

The gripper is owned by a worker thread (``_HandWorker``): it reads the width and sends whole Hand
commands (a grasp when closing, a move when opening) from ``control.gripper.GripperCommander``, one
at a time, so neither the blocking width read nor a Hand command ever runs on the control path.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .gripper import GripperCommander, GripperConfig, send_hand_command
from .limits import N_JOINTS, DynamicsBudget, JointLimits, dynamics_budget
from .safety import CommandState

log = logging.getLogger(__name__)

# libfranka's example thresholds (setDefaultBehavior): a reflex above these measured torques / forces
DEFAULT_COLLISION_TORQUE = (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0)  # [Nm]
DEFAULT_COLLISION_FORCE = (20.0, 20.0, 20.0, 25.0, 25.0, 25.0)  # [N], [Nm]
HAND_WIDTH_MAX_AGE = 0.5  # [s] an older width reading is unknown
LIMIT_READBACK_TOLERANCE = 1e-6


@dataclass(frozen=True)
class FrankyArmConfig:
    host: str = ""  # robot (FCI) address; "" = no robot (dry run only)
    dry_run: bool = True  # never move the arm; with a host, read its real state
    realtime: bool = True  # True: RealtimeConfig.Enforce (needs an RT kernel); False: Ignore
    budget: DynamicsBudget = field(default_factory=dynamics_budget)  # caps franky plans within
    velocity_hold_ms: int = 30  # how long franky keeps a streamed velocity before ramping to rest
    position_gain: float = 5.0  # [1/s] feedback of the tracking error into the streamed velocity
    use_gripper: bool = True  # a gripper is required: connecting fails without one
    gripper: GripperConfig = field(default_factory=GripperConfig)  # how widths become Hand commands
    collision_torque: tuple = DEFAULT_COLLISION_TORQUE  # [Nm] per joint: a reflex above these
    collision_force: tuple = DEFAULT_COLLISION_FORCE  # [N, N, N, Nm, Nm, Nm] at the end effector
    load_mass: float = 0.0  # [kg] payload beyond the end effector configured in Desk
    load_com: tuple = (0.0, 0.0, 0.0)  # [m] payload centre of mass in the flange frame
    load_inertia: tuple = (0.0,) * 9  # [kg m^2] column-major

    def __post_init__(self):
        if not self.dry_run and not self.host:
            raise ValueError("a live arm needs a robot address (robot_ip); without one only dry_run is possible")
        if not 5 <= self.velocity_hold_ms <= 1000:
            raise ValueError(f"velocity_hold_ms must be in [5, 1000], got {self.velocity_hold_ms}")
        if not 0.0 <= self.position_gain <= 50.0:
            raise ValueError(f"position_gain must be in [0, 50] 1/s, got {self.position_gain}")
        for name, n, hi in (("collision_torque", 7, 100.0), ("collision_force", 6, 200.0)):
            v = np.asarray(getattr(self, name), float)
            if v.shape != (n,) or not np.all((v > 0) & (v <= hi)):
                raise ValueError(f"{name} must be {n} values in (0, {hi}], got {getattr(self, name)}")
        if not 0.0 <= self.load_mass <= 3.0:
            raise ValueError(f"load_mass must be in [0, 3] kg (the FR3's payload), got {self.load_mass}")
        if np.asarray(self.load_com).shape != (3,) or np.asarray(self.load_inertia).shape != (9,):
            raise ValueError("load_com must be 3 values and load_inertia 9 (column-major 3x3)")


class ArmClockPacer:
    """Keeps the control loop from running ahead of the arm's own clock: a cycle is one ``period`` of the
    arm's time as well as of the wall clock. A real FR3's clock keeps real time and this never waits. An
    emulated arm that runs slower than real time (franky-sim at 0.3x on a loaded 2-core machine) executed
    each streamed velocity for a third of a cycle, so the command ran ahead of the arm until the tracking
    check stopped it (ERROR at 0.1 rad after 2 s at factor 0.1); paced, the whole loop slows with the arm
    and the commands stay ones the arm follows. Each wait is bounded by ``max_wait``: an arm clock that
    stopped (a lost connection) never stops the loop, which reads the arm's errors, the e-stop and the
    watchdog every cycle."""

    def __init__(self, period: float, max_wait: float, slack: float = 0.002, poll: float = 0.0005):
        if not 0 < slack < period <= max_wait:
            raise ValueError(f"need 0 < slack < period <= max_wait, got {slack}, {period}, {max_wait}")
        self.period, self.max_wait, self.slack, self.poll = period, max_wait, slack, poll
        self._due: float | None = None  # the arm's time the next cycle is due at
        self.waits = 0  # cycles that waited for the arm

    def wait(self, arm_time, clock=time.monotonic, sleep=time.sleep) -> float:
        """Before a cycle: wait until ``arm_time()`` (the arm's clock, s) reaches this cycle's due time
        (``slack`` early: a state read is up to a robot tick old). Returns the seconds waited."""
        t = arm_time()
        if self._due is None or t > self._due + self.period:
            self._due = t  # the first cycle, or the arm ahead (the loop was late): no catching up
        start = clock()
        waited = False
        while t < self._due - self.slack and clock() - start < self.max_wait:
            waited = True
            sleep(self.poll)
            t = arm_time()
        self.waits += waited
        self._due += self.period
        return clock() - start


@dataclass
class ArmState:
    q: np.ndarray  # (7,) measured joint positions [rad]
    dq: np.ndarray  # (7,) measured joint velocities [rad/s]
    robot_time: float  # [s] the robot's own clock (RobotState.time)
    host_time: float  # [s] FrankyArm.clock() when read (the host's monotonic clock, or the simulated world's)
    gripper_width: float | None  # [m], None without gripper or when the width is not known


def limit_problems(caps: JointLimits, velocity, acceleration, jerk) -> list[str]:
    """Differences between franky's joint limits as read back and the caps they were set to."""
    problems = []
    for name, want, got in (("velocity", caps.dq_max, velocity), ("acceleration", caps.ddq_max, acceleration),
                            ("jerk", caps.dddq_max, jerk)):
        got = np.asarray(got, float)
        if got.shape != (N_JOINTS,) or np.any(np.abs(got - want) > LIMIT_READBACK_TOLERANCE * np.maximum(1, want)):
            problems.append(f"franky joint {name} limit {np.round(got, 4)} != {np.round(want, 4)}")
    return problems


class _HandWorker:
    """Owns the franky Gripper in a thread of its own: reads the width continuously and sends the Hand
    commands the commander decides for the newest requested width."""

    def __init__(self, gripper, commander: GripperCommander):
        self.gripper = gripper
        self.commander = commander
        self._lock = threading.Lock()
        self._requested = math.nan
        self._width: tuple[float, float] | None = None  # (width, monotonic time of the read)
        self._future = None
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hand", daemon=True)
        self._thread.start()

    def request(self, width: float) -> None:
        with self._lock:
            self._requested = float(width)

    def width(self) -> float | None:
        with self._lock:
            w = self._width
        if w is None or time.monotonic() - w[1] > HAND_WIDTH_MAX_AGE:
            return None
        return w[0]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                width = float(self.gripper.width)  # blocks until the Hand's next state
                with self._lock:
                    self._width = (width, time.monotonic())
                    requested = self._requested
                busy = self._future is not None and not self._future.wait(0)
                cmd = self.commander.command(requested, busy)
                if cmd is not None:
                    self._future = send_hand_command(self.gripper, cmd)
            except Exception as exc:  # noqa: BLE001 - a failed read or command: the width becomes unknown after a while
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(0.05)
            self._stop.wait(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self._future is not None:  # let a running Hand command end before its Gripper goes
            try:
                self._future.wait(1.0)
            except Exception as exc:  # noqa: BLE001 - closing: a gripper error must not stop the close
                log.warning("gripper on close: %s", exc)
        self._future = None


class FrankyArm:
    """Connects, streams filtered commands, reads state, reports errors. One instance per robot."""

    def __init__(self, config: FrankyArmConfig, clock=time.monotonic):
        """``clock``: the host's monotonic clock, or the simulated world's (`ArmState.host_time`)."""
        self.config = config
        self.clock = clock
        self.robot = None
        self.hand: _HandWorker | None = None
        self._franky = None
        self._last_cmd: CommandState | None = None
        self.commander = GripperCommander(config.gripper)
        self.sent = 0
        self.last_state: ArmState | None = None  # the latest read_state(), for publishers (no second read)
        self.last_error: str | None = None
        self.startup_error: str | None = None  # the robot was in error when we connected
        budget = config.budget
        self._v_cap = budget.caps.dq_max * (1.0 - 1e-6)  # franky refuses a velocity above its limit
        self._correction = budget.max_correction

    @property
    def moves(self) -> bool:
        """Whether this arm moves anything (a robot is connected and it is not a dry run)."""
        return self.robot is not None and not self.config.dry_run

    # ---------------------------------------------------------- lifecycle
    def connect(self, timeout: float = 10.0) -> None:
        """Connect to the robot (retrying for ``timeout`` s). Live: set franky's limits to the caps and
        read them back, set the collision thresholds and the payload. Dry run: read only. The gripper is
        required when ``use_gripper``. A robot found in error is not recovered here: ``startup_error``
        says why, and recovery is an explicit step (``recover``)."""
        c = self.config
        if not c.host:
            return
        import franky  # local import: the dry run without a robot and the rest of the core work without it

        self._franky = franky
        rt = franky.RealtimeConfig.Enforce if c.realtime else franky.RealtimeConfig.Ignore
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.robot = franky.Robot(c.host, realtime_config=rt)
                break
            except Exception as exc:  # franky raises several exception types for "not there yet"
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot connect to FR3 at {c.host}: {exc}") from exc
                time.sleep(0.2)
        if self.robot.has_errors:
            self.startup_error = f"robot in error at connection: {self.robot.state.current_errors}"
        if not c.dry_run:
            self._configure_robot()
        if c.use_gripper:
            try:
                gripper = franky.Gripper(c.host)
            except Exception as exc:
                raise ConnectionError(f"no gripper at {c.host} ({exc}); set use_gripper false if the arm has "
                                      "no Franka Hand") from exc
            self.commander.reset()
            self.hand = _HandWorker(gripper, self.commander)

    def _configure_robot(self) -> None:
        c, r = self.config, self.robot
        caps = c.budget.caps
        r.relative_dynamics_factor = 1.0
        r.joint_velocity_limit.set([float(x) for x in caps.dq_max])
        r.joint_acceleration_limit.set([float(x) for x in caps.ddq_max])
        r.joint_jerk_limit.set([float(x) for x in caps.dddq_max])
        problems = limit_problems(caps, r.joint_velocity_limit.get(), r.joint_acceleration_limit.get(),
                                  r.joint_jerk_limit.get())
        if problems:
            raise ValueError("franky did not take the joint limits: " + "; ".join(problems))
        r.set_collision_behavior([float(x) for x in c.collision_torque], [float(x) for x in c.collision_force])
        r.set_load(float(c.load_mass), [float(x) for x in c.load_com], [float(x) for x in c.load_inertia])

    def franky_limits(self) -> dict | None:
        """franky's joint limits and dynamics factor as the robot object reports them (None: no robot)."""
        if self.robot is None:
            return None
        r, f = self.robot, self.robot.relative_dynamics_factor
        return {"velocity": list(r.joint_velocity_limit.get()), "acceleration": list(r.joint_acceleration_limit.get()),
                "jerk": list(r.joint_jerk_limit.get()),
                "relative_dynamics_factor": [float(f.velocity), float(f.acceleration), float(f.jerk)]}

    def close(self) -> None:
        if self.moves:
            try:
                self.robot.stop()
                self.robot.join_motion(timeout=1.0)
            except Exception as exc:  # noqa: BLE001 - closing: a stop error must not stop the close
                log.warning("stop on close: %s", exc)
        if self.hand is not None:
            self.hand.close()
        self.robot = None
        self.hand = None

    def recover(self) -> None:
        """``recover_from_errors`` (after a reflex). Raises when the robot refuses."""
        self.last_error = None
        self.startup_error = None
        if self.robot is not None and not self.robot.recover_from_errors():
            raise RuntimeError("the robot refused to recover from its errors (see Desk)")

    # --------------------------------------------------------------- state
    def read_state(self) -> ArmState:
        now = self.clock()
        if self.robot is None:  # no robot (dry run): a perfectly tracking stand-in
            cmd = self._last_cmd
            q = np.zeros(N_JOINTS) if cmd is None else cmd.q.copy()
            dq = np.zeros(N_JOINTS) if cmd is None else cmd.dq.copy()
            width = None if cmd is None or math.isnan(cmd.gripper) else cmd.gripper
            self.last_state = ArmState(q, dq, now, now, width)
            return self.last_state
        s = self.robot.state
        width = self.hand.width() if self.hand is not None else None
        self.last_state = ArmState(np.array(s.q, dtype=float), np.array(s.dq, dtype=float), float(s.time.to_sec()),
                                   now, width)
        return self.last_state

    def arm_time(self) -> float | None:
        """The arm's own clock (RobotState.time, s); None without a robot."""
        return None if self.robot is None else float(self.robot.state.time.to_sec())

    # ---------------------------------------------------------- commanding
    def velocity_for(self, cmd: CommandState, q_measured: np.ndarray | None) -> np.ndarray:
        """Velocity streamed for ``cmd``: feed-forward plus bounded position feedback, within the caps."""
        v = cmd.dq.copy()
        if q_measured is not None and self.config.position_gain > 0:
            corr = self.config.position_gain * (cmd.q - q_measured)
            v += np.clip(corr, -self._correction, self._correction)
        return np.clip(v, -self._v_cap, self._v_cap)

    def send(self, cmd: CommandState, q_measured: np.ndarray | None = None) -> None:
        """Stream one cycle's command (pre-empts the running motion). Moves nothing in a dry run."""
        self._last_cmd = cmd
        if not self.moves:
            return
        f = self._franky
        v = self.velocity_for(cmd, q_measured)
        motion = f.JointVelocityMotion([float(x) for x in v], duration=f.Duration(int(self.config.velocity_hold_ms)))
        self.robot.move(motion, asynchronous=True)
        self.sent += 1
        if self.hand is not None and not math.isnan(cmd.gripper):
            self.hand.request(cmd.gripper)

    def stop(self) -> None:
        """Ask franky to stop the current motion (it decelerates within its own limits)."""
        if self.moves:
            self.robot.stop()

    def poll_error(self) -> str | None:
        """Error raised by the running asynchronous motion, if any (join_motion with zero timeout)."""
        if not self.moves:
            return None
        try:
            self.robot.join_motion(timeout=0.0)
        except Exception as exc:  # noqa: BLE001 - franky's motion errors: reported as the arm's error
            self.last_error = f"{type(exc).__name__}: {exc}"
            return self.last_error
        return None


def run_cycle(controller, arm: FrankyArm, now: float | None = None):
    """One control cycle wiring the controller to the arm: read, step, send, collect errors.

    Returns the controller's CycleOutput (None before the first joint state, or when the state could
    not be read: then the controller is put into ERROR)."""
    try:
        state = arm.read_state()
    except Exception as exc:  # noqa: BLE001 - e.g. franky's network exception when the robot stops answering
        controller.set_error(f"state read failed: {exc}")
        return None
    now = state.host_time if now is None else now
    controller.update_measurement(state.q, now, state.gripper_width)
    out = controller.step(now)
    if out is not None and (out.send or arm.config.dry_run):  # a dry run moves nothing (its stand-in echoes)
        try:
            arm.send(out.command, state.q)
        except Exception as exc:  # noqa: BLE001 - a failed move is a robot error, not a crash of the loop
            controller.set_error(f"send failed: {exc}")
    err = arm.poll_error()
    if err is not None:
        controller.set_error(err)
    return out
