"""Adapter from the controller core's per-cycle commands to a Franka FR3 through ``franky``.

Motion type: ``JointVelocityMotion`` pre-empted every cycle (asynchronous=True). The velocity sent is
the safety filter's commanded velocity plus a small, clipped position correction
``gain * (q_cmd - q_measured)``. Why this and not a pre-empted ``JointMotion``: measured on franky-sim
at 100 Hz, re-planning a position motion (with or without target velocity) every 10 ms lagged and
overshot by up to 0.5 rad on a 0.2 rad sine, while streaming velocities tracked it with about 0.02
rad RMS error (most of it the simulator running slower than real time). Velocity streaming also
gives a dead-man behaviour for free: each motion only holds its velocity for ``velocity_hold_ms``, so if
our loop stops, franky ramps the robot to rest on its own, within its jerk-limited planner.

franky still plans every transition with its own velocity/acceleration/jerk limits scaled by the
relative dynamics factor; ``check_compatible`` makes sure those are never tighter than the safety
filter's (otherwise franky, not our filter, would decide the motion). franky-control 2.0.0 notes:
targets must be floats; ``poll_motion`` is unreliable, so errors are collected with
``join_motion(timeout=0.0)``; asynchronous errors surface there or at the next ``move``.

The gripper gets whole Hand commands (a grasp when closing, a move when opening) from
``control.gripper.GripperCommander``, one at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .gripper import GripperCommander, GripperConfig, send_hand_command
from .limits import FRANKY_DDDQ_MAX, FRANKY_DDQ_MAX, FRANKY_DQ_MAX, N_JOINTS
from .safety import CommandState, SafetyConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrankyArmConfig:
    host: str = "172.16.0.2"  # robot (FCI) address
    dry_run: bool = False  # never connect or send; read_state echoes the last command
    realtime: bool = False  # True: RealtimeConfig.Enforce (needs an RT kernel); False: Ignore
    relative_dynamics_factor: float = 0.6  # franky's global scale of its own limits, (0, 1]
    velocity_hold_ms: int = 30  # how long franky keeps a streamed velocity before ramping to rest
    position_gain: float = 5.0  # [1/s] feedback of the tracking error into the streamed velocity
    max_correction: float = 0.1  # [rad/s] bound of that feedback term
    use_gripper: bool = True
    gripper: GripperConfig = field(default_factory=GripperConfig)  # how widths become Hand commands

    def __post_init__(self):
        if not self.host:
            raise ValueError("FrankyArmConfig.host must be set")
        if not 0.0 < self.relative_dynamics_factor <= 1.0:
            raise ValueError(f"relative_dynamics_factor must be in (0, 1], got {self.relative_dynamics_factor}")
        if not 5 <= self.velocity_hold_ms <= 1000:
            raise ValueError(f"velocity_hold_ms must be in [5, 1000], got {self.velocity_hold_ms}")
        if not 0.0 <= self.position_gain <= 50.0:
            raise ValueError(f"position_gain must be in [0, 50] 1/s, got {self.position_gain}")
        if not 0.0 <= self.max_correction <= 0.5:
            raise ValueError(f"max_correction must be in [0, 0.5] rad/s, got {self.max_correction}")


@dataclass
class ArmState:
    q: np.ndarray  # (7,) measured joint positions [rad]
    dq: np.ndarray  # (7,) measured joint velocities [rad/s]
    robot_time: float  # [s] the robot's own clock (RobotState.time)
    host_time: float  # [s] time.monotonic() when read
    gripper_width: float | None  # [m], None without gripper


def check_compatible(arm: FrankyArmConfig, safety: SafetyConfig) -> list[str]:
    """Reasons why franky's scaled limits would be tighter than the filter's (empty = fine)."""
    f = arm.relative_dynamics_factor
    problems = []
    v_sent = safety.velocity_limit + arm.max_correction
    if np.any(v_sent > FRANKY_DQ_MAX * f):
        problems.append(f"velocity {np.round(v_sent, 3)} > franky {np.round(FRANKY_DQ_MAX * f, 3)}")
    if np.any(safety.limits.ddq_max > FRANKY_DDQ_MAX * f):
        problems.append(f"acceleration {safety.limits.ddq_max} > franky {FRANKY_DDQ_MAX * f}")
    if np.any(safety.limits.dddq_max > FRANKY_DDDQ_MAX * f):
        problems.append(f"jerk {safety.limits.dddq_max} > franky {FRANKY_DDDQ_MAX * f}")
    return problems


class FrankyArm:
    """Connects, streams filtered commands, reads state, reports errors. One instance per robot."""

    def __init__(self, config: FrankyArmConfig):
        self.config = config
        self.robot = None
        self.gripper = None
        self._franky = None
        self._last_cmd: CommandState | None = None
        self.hand = GripperCommander(config.gripper)
        self._gripper_future = None
        self.sent = 0
        self.last_state: ArmState | None = None  # the latest read_state(), for publishers (no second read)
        self.last_error: str | None = None
        self._v_cap = FRANKY_DQ_MAX * config.relative_dynamics_factor * 0.98

    # ---------------------------------------------------------- lifecycle
    def connect(self, timeout: float = 10.0) -> None:
        """Connect to the robot (retrying for ``timeout`` s), recover from errors, set the dynamics
        factor, and connect the gripper if configured (a gripper failure is logged, not fatal)."""
        if self.config.dry_run:
            return
        import franky  # local import: dry-run and the rest of the core work without franky

        self._franky = franky
        rt = franky.RealtimeConfig.Enforce if self.config.realtime else franky.RealtimeConfig.Ignore
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.robot = franky.Robot(self.config.host, realtime_config=rt)
                break
            except Exception as exc:  # franky raises several exception types for "not there yet"
                if time.monotonic() > deadline:
                    raise ConnectionError(f"cannot connect to FR3 at {self.config.host}: {exc}") from exc
                time.sleep(0.2)
        self.robot.recover_from_errors()
        self.robot.relative_dynamics_factor = float(self.config.relative_dynamics_factor)
        if self.config.use_gripper:
            try:
                self.gripper = franky.Gripper(self.config.host)
                self.hand.reset()
            except Exception as exc:
                log.warning("gripper not available at %s: %s", self.config.host, exc)
                self.gripper = None

    def close(self) -> None:
        if self.robot is not None:
            try:
                self.robot.stop()
                self.robot.join_motion(timeout=1.0)
            except Exception as exc:
                log.warning("stop on close: %s", exc)
        if self._gripper_future is not None:  # let a running Hand command end before its Gripper goes
            try:
                self._gripper_future.wait(1.0)
            except Exception as exc:
                log.warning("gripper on close: %s", exc)
        self.robot = None
        self._gripper_future = None
        self.gripper = None

    def recover(self) -> bool:
        """``recover_from_errors`` (after a reflex); True in dry run."""
        self.last_error = None
        return True if self.robot is None else bool(self.robot.recover_from_errors())

    # --------------------------------------------------------------- state
    def read_state(self) -> ArmState:
        now = time.monotonic()
        if self.robot is None:  # dry run: a perfectly tracking robot
            cmd = self._last_cmd
            q = np.zeros(N_JOINTS) if cmd is None else cmd.q.copy()
            dq = np.zeros(N_JOINTS) if cmd is None else cmd.dq.copy()
            self.last_state = ArmState(q, dq, now, now, None if cmd is None else cmd.gripper)
            return self.last_state
        s = self.robot.state
        width = None
        if self.gripper is not None:
            try:
                width = float(self.gripper.width)
            except Exception:
                width = None
        self.last_state = ArmState(np.array(s.q, dtype=float), np.array(s.dq, dtype=float), float(s.time.to_sec()),
                                   now, width)
        return self.last_state

    # ---------------------------------------------------------- commanding
    def velocity_for(self, cmd: CommandState, q_measured: np.ndarray | None) -> np.ndarray:
        """Velocity streamed for ``cmd``: feed-forward plus bounded position feedback, within franky's caps."""
        v = cmd.dq.copy()
        if q_measured is not None and self.config.position_gain > 0:
            corr = self.config.position_gain * (cmd.q - q_measured)
            v += np.clip(corr, -self.config.max_correction, self.config.max_correction)
        return np.clip(v, -self._v_cap, self._v_cap)

    def send(self, cmd: CommandState, q_measured: np.ndarray | None = None) -> None:
        """Stream one cycle's command (pre-empts the running motion). No-op on the robot in dry run."""
        self._last_cmd = cmd
        v = self.velocity_for(cmd, q_measured)
        if self.robot is not None:
            f = self._franky
            motion = f.JointVelocityMotion([float(x) for x in v], duration=f.Duration(int(self.config.velocity_hold_ms)))
            self.robot.move(motion, asynchronous=True)
        self.sent += 1
        self._send_gripper(cmd.gripper)

    def _send_gripper(self, width: float) -> None:
        if self.gripper is None:
            return
        busy = self._gripper_future is not None and not self._gripper_future.wait(0)
        cmd = self.hand.command(width, busy)
        if cmd is not None:
            self._gripper_future = send_hand_command(self.gripper, cmd)

    def stop(self) -> None:
        """Ask franky to stop the current motion (it decelerates within its own limits)."""
        if self.robot is not None:
            self.robot.stop()

    def poll_error(self) -> str | None:
        """Error raised by the running asynchronous motion, if any (join_motion with zero timeout)."""
        if self.robot is None:
            return None
        try:
            self.robot.join_motion(timeout=0.0)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return self.last_error
        return None


def run_cycle(controller, arm: FrankyArm, now: float | None = None):
    """One control cycle wiring the controller to the arm: read, step, send, collect errors.

    Returns the controller's CycleOutput (None before the first joint state, or when the state could
    not be read: then the controller is put into ERROR)."""
    try:
        state = arm.read_state()
    except Exception as exc:  # e.g. franky's network exception when the robot stops answering
        controller.set_error(f"state read failed: {exc}")
        return None
    now = state.host_time if now is None else now
    controller.update_measurement(state.q, now, state.gripper_width)
    out = controller.step(now)
    if out is not None and out.send:
        try:
            arm.send(out.command, state.q)
        except Exception as exc:  # a failed move is a robot error, not a crash of the loop
            controller.set_error(f"send failed: {exc}")
    err = arm.poll_error()
    if err is not None:
        controller.set_error(err)
    return out
