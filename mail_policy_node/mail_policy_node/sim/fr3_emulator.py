"""A strict FR3 emulator: franky-sim, plus the checks and reflexes of a real Franka Research 3.

    mail-il fr3-emulator --hostname 127.0.0.1 --record runs/fr3_commands   # then connect franky to it

franky-sim speaks the libfranka protocol but accepts any command. A real FR3 checks every 1 kHz command
of a joint motion generator against its "necessary conditions" and aborts the motion with a reflex when
one fails. This module wraps a franky-sim robot server (``FrankaRobotServer``, on the instance, so nothing
in franky-sim changes for other users) so that it does the same, and records what it saw:

Checks (per UDP command; ``message_id`` = the id of the robot state it answers, 1 id = 1 ms):
- joint-velocity interface (franky ``JointVelocityMotion``): the commanded velocity dq_c is checked and
  differentiated; the commanded position is its integral from the measured position at the motion's start.
  Joint-position interface (``JointMotion``...): q_c is checked and differentiated.
- position inside ``FR3_HW_Q_MIN``/``FR3_HW_Q_MAX`` -> ``joint_motion_generator_position_limits_violation``;
  velocity inside ``fr3_velocity_bounds(q)`` (position dependent, at the previous commanded position, as
  libfranka's own helpers evaluate it) -> ``joint_motion_generator_velocity_limits_violation``;
  |acceleration| <= 10 -> else ``joint_motion_generator_velocity_discontinuity``; |jerk| <= 5000 -> else
  ``joint_motion_generator_acceleration_discontinuity`` (Franka names a failed acceleration bound a
  velocity discontinuity, a failed jerk bound an acceleration discontinuity). Derivatives are finite
  differences over the elapsed ms (the id difference). Bounds get libfranka's kLimitEps (1e-3) of
  tolerance, so a client saturating with libfranka's helpers (limit - kLimitEps) is never flagged.
- start of a motion (a libfranka Move): the robot is at rest, so the previous command is taken as zero
  velocity and acceleration (a first dq_c above 10 rad/s^2 x 1 ms fails the acceleration bound). In the
  position interface the first q_c must be the measured pose (within ``start_pose_tolerance``, else
  ``joint_position_motion_generator_start_pose_invalid``) and is the start: franky starts a JointMotion
  from the measured q, not from the q_d the state reports.
  franky's pre-emption of one motion by another of the same type sends no new Move: franky swaps the
  motion inside its running libfranka control loop, so the stream just continues and every check
  carries on across the switch. End of a motion (the command flagged ``motion_generation_finished``):
  the robot stops there, so stopping from that command's velocity must respect the acceleration bound.
- not checked: Cartesian and torque interfaces (recorded as commands without values), communication
  constraints (packet loss; id gaps are counted), collisions, torques.

Desired state: while a joint motion runs, the state reports ``q_d``, ``dq_d``, ``ddq_d`` of the command
stream itself (the last commanded position, velocity and their finite-difference acceleration, the
quantities the checks use), as the FR3 reports the trajectory it was commanded. franky-sim estimates them
instead (``ddq_d`` a moving average of velocity differences, one tick late), and franky starts every
pre-empting motion from ``ddq_d``: with franky-sim's estimate each motion switch (every 10 ms of our
stream) stepped the acceleration and gave jerk spikes of 1.5-2.5x franky's own jerk limit that a real FR3
would not see. Assumption, not checked on a real FR3: its ``ddq_d`` is that finite difference.

Reflex (what a real FR3 does): the motion is aborted (the running Move is answered
``MoveStatus.kReflexAborted``; libfranka then raises ``franky.ControlException``, "libfranka: Move command
aborted: motion aborted by reflex! [...]", naming the errors), the robot state reports ``robot_mode`` =
Reflex with the flags set in ``current_errors`` and ``last_motion_errors`` (the wire's ``errors`` and
``reflex_reason``), the arm holds where it is, new Moves are refused (``kCommandNotPossibleRejected``,
"command not possible in the current mode (Reflex)"), and AutomaticErrorRecovery
(``robot.recover_from_errors()``) clears ``current_errors`` and returns to idle (``last_motion_errors``
stays until the next motion starts). ``inject_reflex`` triggers the same for a named error, e.g. the
collision reflex ``cartesian_reflex``.

Also recorded: the collision thresholds and payload the client set (``configuration``) and every Franka
Hand move or grasp received (``hand_commands``).

Recording: every checked command (id, host time, mode, motion number, commanded value, the position,
velocity, acceleration and jerk the checks used, violation flags, the check's own cost) and the measured
q, dq of every 1 ms physics step, in numpy blocks preallocated 65536 rows at a time (about 28 MB per
recorded minute; ``max_record_s`` caps it). Peaks and their ratios to the FR3's limits or to any
``JointLimits``-like object, the reflexes seen, and ``save(folder)`` (.npz + summary JSON).

Cost: the checks and the recording run inside franky-sim's 1 kHz loop. Measured on this project's
2-core machine (Python 3.11, numpy): 16 us per command (p50) in a tight loop; 35-55 us (p50, p99 about
100-200 us) inside live runs with franky's threads on the same two cores; about 2 us per physics step
for the state recording. franky-sim's own tick takes about 0.75 ms (p50) of each 1 ms, so the checks
add 5-7 % to it. ``check_cost_us()`` reports the cost of a run.

Lock-step (``command_wait_ms``): franky-sim handles the commands that have arrived at the start of each
tick, and its tick takes most of the millisecond, so libfranka's answer to state k almost always lands
after tick k+1 began: it is applied a tick late and state k+1 still reports the command before it as
q_d / dq_d. libfranka's low-pass filter starts each command from the q_d / dq_d of the state it answers,
so this bends the next command: measured on a JointMotion at 0.2 rad/s, finite-difference accelerations
of 150-200 rad/s^2 in a stream that is otherwise within 1.3 rad/s^2, i.e. reflexes a real FR3 (whose
client answers inside the cycle) would never see. So while a joint motion runs, each tick first waits
(up to ``command_wait_ms``) for the answer to the previous state; ``counters['late_commands']`` counts
the ticks that waited (nearly all: a few us each), ``commands_not_in_time`` those whose wait expired.

Ways to run it:
- on a task scene: ``FrankySimScene(task, seed, strict=True)`` (``scene.emulator``), or
  ``install_fr3_emulator(scene)`` on a started scene before a client connects;
- a bare FR3 (no task objects): ``with StrictFR3(initial_q=...) as fr3: franky.Robot(fr3.hostname, ...)``;
- standalone: ``python -m mail_policy_node.sim.fr3_emulator --hostname 127.0.0.1 [--task reach --seed 0]
  [--initial-q q1 ... q7] [--record DIR]`` (or ``mail-il fr3-emulator ...``): prints ``fr3-emulator ready
  <hostname>`` once served; SIGUSR1 injects a ``cartesian_reflex``; SIGINT/SIGTERM stop it, write the
  recording and summary into DIR and exit 0.
"""

from __future__ import annotations

import argparse
import enum
import json
import select
import signal
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..control.limits import (FR3_HW_DDDQ_MAX, FR3_HW_DDQ_MAX, FR3_HW_DQ_MAX, FR3_HW_Q_MAX, FR3_HW_Q_MIN,
                              FR3_LIMIT_EPS, fr3_velocity_bounds)

# franka::Errors, libfranka 0.21 (the order of the 41 flags in RobotState's error arrays; checked against
# the franky-control 2.0.0 binary: Errors.__setstate__ with one flag set names exactly this one).
ERROR_NAMES = (
    "joint_position_limits_violation", "cartesian_position_limits_violation",
    "self_collision_avoidance_violation", "joint_velocity_violation", "cartesian_velocity_violation",
    "force_control_safety_violation", "joint_reflex", "cartesian_reflex", "max_goal_pose_deviation_violation",
    "max_path_pose_deviation_violation", "cartesian_velocity_profile_safety_violation",
    "joint_position_motion_generator_start_pose_invalid", "joint_motion_generator_position_limits_violation",
    "joint_motion_generator_velocity_limits_violation", "joint_motion_generator_velocity_discontinuity",
    "joint_motion_generator_acceleration_discontinuity", "cartesian_position_motion_generator_start_pose_invalid",
    "cartesian_motion_generator_elbow_limit_violation", "cartesian_motion_generator_velocity_limits_violation",
    "cartesian_motion_generator_velocity_discontinuity", "cartesian_motion_generator_acceleration_discontinuity",
    "cartesian_motion_generator_elbow_sign_inconsistent", "cartesian_motion_generator_start_elbow_invalid",
    "force_controller_desired_force_tolerance_violation", "start_elbow_sign_inconsistent",
    "communication_constraints_violation", "power_limit_violation",
    "cartesian_motion_generator_joint_position_limits_violation",
    "cartesian_motion_generator_joint_velocity_limits_violation",
    "cartesian_motion_generator_joint_velocity_discontinuity",
    "cartesian_motion_generator_joint_acceleration_discontinuity",
    "cartesian_position_motion_generator_invalid_frame", "controller_torque_discontinuity",
    "joint_p2p_insufficient_torque_for_planning", "tau_j_range_violation", "instability_detected",
    "joint_move_in_wrong_direction", "cartesian_spline_motion_generator_violation",
    "joint_via_motion_generator_planning_joint_limit_violation", "base_acceleration_initialization_timeout",
    "base_acceleration_invalid_reading",
)
ERROR_INDEX = {name: i for i, name in enumerate(ERROR_NAMES)}
START_POSE_INVALID = 1 << ERROR_INDEX["joint_position_motion_generator_start_pose_invalid"]
POSITION_LIMITS = 1 << ERROR_INDEX["joint_motion_generator_position_limits_violation"]
VELOCITY_LIMITS = 1 << ERROR_INDEX["joint_motion_generator_velocity_limits_violation"]
VELOCITY_DISCONTINUITY = 1 << ERROR_INDEX["joint_motion_generator_velocity_discontinuity"]  # acceleration bound
ACCELERATION_DISCONTINUITY = 1 << ERROR_INDEX["joint_motion_generator_acceleration_discontinuity"]  # jerk bound

READY_Q = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)


def error_names(flags: int) -> list[str]:
    """Names of the errors set in a bitmask (bit i = ``ERROR_NAMES[i]``)."""
    return [name for i, name in enumerate(ERROR_NAMES) if flags >> i & 1]


class MotionMode(enum.IntEnum):
    """Interface of the running motion (numbers as libfranka's state motion generator modes, 5 = torque)."""

    NONE = 0
    JOINT_POSITION = 1
    JOINT_VELOCITY = 2
    CARTESIAN_POSITION = 3
    CARTESIAN_VELOCITY = 4
    TORQUE = 5


_JOINT_MODES = (MotionMode.JOINT_POSITION, MotionMode.JOINT_VELOCITY)

# Layout of libfranka's UDP command (franky-sim's UDPCommand.STRUCT): message id, q_c, dq_c, ...
_ID = struct.Struct("<Q")
_Q_C_OFFSET, _DQ_C_OFFSET = 8, 64
_MOTION_FINISHED_OFFSET = 8 + 7 * 8 + 7 * 8 + 16 * 8 + 6 * 8 + 2 * 8 + 1  # after valid_elbow
_TORQUE_FINISHED_OFFSET = _MOTION_FINISHED_OFFSET + 1 + 7 * 8

# Columns of the float command table.
_C_T, _C_VAL, _C_Q, _C_V, _C_A, _C_J, _C_COST = 0, slice(1, 8), slice(8, 15), slice(15, 22), slice(22, 29), \
    slice(29, 36), 36
_C_AJ = slice(22, 36)
_C_WIDTH = 37
_I_ID, _I_MODE, _I_MOTION, _I_FLAGS, _I_FINISHED = range(5)
_I_WIDTH = 5
_S_SIMT, _S_T, _S_Q, _S_DQ = 0, 1, slice(2, 9), slice(9, 16)
_S_WIDTH = 16


class _Blocks:
    """Rows appended one at a time into numpy blocks allocated ``rows`` at a time (no copies as it grows)."""

    def __init__(self, rows: int, widths: tuple[tuple[int, type], ...], max_rows: int | None):
        self.block_rows = int(rows)
        self.widths = widths
        self.max_rows = max_rows
        self.blocks: list[list[np.ndarray]] = []
        self.count = 0
        self._scratch = [[np.zeros((2, w), dtype=d) for w, d in widths]]

    def next_row(self) -> tuple[list[np.ndarray], int, bool]:
        """(arrays of the block, row index, recorded); past ``max_rows`` a scratch pair is reused."""
        if self.max_rows is not None and self.count >= self.max_rows:
            self.count += 1
            return self._scratch[0], self.count & 1, False
        b, i = divmod(self.count, self.block_rows)
        if b == len(self.blocks):
            self.blocks.append([np.empty((self.block_rows, w), dtype=d) for w, d in self.widths])
        self.count += 1
        return self.blocks[b], i, True

    def gather(self, column: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        n = self.count if self.max_rows is None else min(self.count, self.max_rows)
        stop = n if stop is None else min(stop, n)
        start = min(max(0, start), stop)
        parts = []
        for b in range(start // self.block_rows, (stop + self.block_rows - 1) // self.block_rows):
            lo, hi = max(start - b * self.block_rows, 0), min(stop - b * self.block_rows, self.block_rows)
            parts.append(self.blocks[b][column][lo:hi])
        if not parts:
            w, d = self.widths[column]
            return np.empty((0, w), dtype=d)
        return np.concatenate(parts)


class FR3Emulator:
    """The FR3's checks and reflexes on one franky-sim robot server (see the module docstring).

    Install it on a server that is bound but not yet serving a client (``FR3Emulator(server, sim)``).
    ``sim``: the simulator, for the measured state of every physics step (optional).
    ``tolerance``: added to every velocity/acceleration/jerk bound (libfranka's kLimitEps).
    ``check_motion_end``: also check the stop after a motion's final command.
    ``start_pose_tolerance``: [rad] how far a position motion's first command may be from the measured q.
    ``command_wait_ms``: while a joint motion runs, each step first waits up to this long for the answer
    to the previous state (lock-step, as a real-time client on the real FR3; 0 = never wait).
    ``max_record_s``: stop recording (not checking) after this many seconds of commands / steps."""

    def __init__(self, server, sim=None, *, tolerance: float = FR3_LIMIT_EPS, check_motion_end: bool = True,
                 start_pose_tolerance: float = 1e-3, command_wait_ms: float = 5.0, block_rows: int = 65536,
                 max_record_s: float | None = None):
        from franky_sim.franka_robot_state import FrankaRobotState  # noqa: F401 (fail early without franky-sim)

        self.server = server
        self.sim = sim
        self.tolerance = float(tolerance)
        self.check_motion_end = bool(check_motion_end)
        self.start_pose_tolerance = float(start_pose_tolerance)
        max_rows = None if max_record_s is None else int(max_record_s * 1000)
        self._cmd = _Blocks(block_rows, ((_C_WIDTH, np.float64), (_I_WIDTH, np.int64)), max_rows)
        self._st = _Blocks(block_rows, ((_S_WIDTH, np.float64), (1, np.int64)), max_rows)
        self._lock = threading.Lock()  # guards the reflex list and error flags against readers
        self.t0 = time.monotonic()
        self.wall_t0 = time.time()
        # limits, hoisted
        self._q_min, self._q_max = FR3_HW_Q_MIN.copy(), FR3_HW_Q_MAX.copy()
        self._ddq_lim = FR3_HW_DDQ_MAX + self.tolerance
        self._dddq_lim = FR3_HW_DDDQ_MAX + self.tolerance
        self._aj_lim = np.concatenate([self._ddq_lim, self._dddq_lim])
        self._stop_dv = (FR3_HW_DDQ_MAX + self.tolerance) * 1e-3  # the most it can stop from in 1 ms
        # motion state (physics thread only)
        self._mode = MotionMode.NONE
        self._motion = 0
        self._first = True
        self._prev_id = -1
        self._prev_q = np.zeros(7)
        self._prev_v = np.zeros(7)
        self._prev_a = np.zeros(7)
        # reflex state
        self._in_reflex = False
        self._current_errors = [False] * len(ERROR_NAMES)
        self._last_motion_errors = [False] * len(ERROR_NAMES)
        self._errors_tuple = (tuple(self._current_errors), tuple(self._last_motion_errors))
        self._override_state = False
        self._pending_injection: str | None = None
        self._deferred: list = []  # replies sent at the start of the next step
        self._wait_s = max(0.0, float(command_wait_ms)) * 1e-3
        self._waited_s = 0.0
        self._injected = threading.Event()
        self._reflex_event = threading.Event()
        self.reflexes: list[dict] = []
        self.configuration: dict = {}  # the last collision thresholds (upper, nominal) and load set by the client
        self.hand_commands: list[dict] = []  # Franka Hand moves and grasps received: time, kind, width
        self.counters = {"motions": 0, "moves_refused": 0, "stale_commands": 0, "ignored_in_reflex": 0,
                         "unchecked_commands": 0, "missing_ids": 0, "max_id_gap": 0, "recoveries": 0,
                         "late_commands": 0, "commands_not_in_time": 0}
        self._install()

    # ------------------------------------------------------------------ installation
    def _install(self) -> None:
        from franky_sim.franka_robot_protocol import (AutomaticErrorRecoveryCommand, AutomaticErrorRecoveryStatus,
                                                      MoveCommand, MoveStatus, RobotCommand,
                                                      SetCollisionBehaviorCommand, SetLoadCommand)

        rs = self.server
        if getattr(rs, "_fr3_emulator", None) is not None:
            raise RuntimeError("an FR3 emulator is already installed on this server")
        rs._fr3_emulator = self
        self._orig_udp = rs._handle_udp_command
        self._orig_pre = rs._pre_process_commands
        self._orig_state_bytes = rs._get_state_bytes
        rs._handle_udp_command = self._on_udp_command
        rs._pre_process_commands = self._on_pre_process
        rs._get_state_bytes = self._state_bytes

        class StrictMove(MoveCommand):
            def handle(self, server):
                emu = getattr(server, "_fr3_emulator", None)
                if emu is not None and emu._in_reflex:
                    emu.counters["moves_refused"] += 1
                    self.reply(MoveStatus.kCommandNotPossibleRejected)
                    return
                super().handle(server)
                if emu is not None and server.current_motion_id == self.command_id:
                    emu._on_motion_started(self.controller_mode, self.motion_generator_mode)

        class StrictRecovery(AutomaticErrorRecoveryCommand):
            def handle(self, server):
                emu = getattr(server, "_fr3_emulator", None)
                if emu is None:
                    self.reply(AutomaticErrorRecoveryStatus.kSuccess)
                    return
                emu._recover()
                # answered at the next step, after a state without the errors went out: franky reads the
                # state right after the answer (recover_from_errors returns "no errors left")
                emu._deferred.append(lambda: self.reply(AutomaticErrorRecoveryStatus.kSuccess))

        class RecordedCollisionBehavior(SetCollisionBehaviorCommand):
            def handle(self, server):
                emu = getattr(server, "_fr3_emulator", None)
                if emu is not None:
                    emu.configuration["collision_torque"] = list(self.upper_torque_thresholds_nominal)
                    emu.configuration["collision_force"] = list(self.upper_force_thresholds_nominal)
                super().handle(server)

        class RecordedLoad(SetLoadCommand):
            def handle(self, server):
                emu = getattr(server, "_fr3_emulator", None)
                if emu is not None:
                    emu.configuration["load_mass"] = float(self.m_load)
                super().handle(server)

        commands = rs._FrankaServer__command_class_map  # franky-sim keeps it per instance
        commands[RobotCommand.kMove] = StrictMove
        commands[RobotCommand.kAutomaticErrorRecovery] = StrictRecovery
        commands[RobotCommand.kSetCollisionBehavior] = RecordedCollisionBehavior
        commands[RobotCommand.kSetLoad] = RecordedLoad
        hand = rs.gripper_server
        if hand is not None:
            from franky_sim.franka_gripper_protocol import GripperCommand, GripperGraspCommand, GripperMoveCommand

            emulator = self

            class RecordedHandMove(GripperMoveCommand):
                def handle(self, server):
                    emulator.hand_commands.append({"t": time.monotonic(), "kind": "move", "width": float(self.width)})
                    super().handle(server)

            class RecordedHandGrasp(GripperGraspCommand):
                def handle(self, server):
                    emulator.hand_commands.append({"t": time.monotonic(), "kind": "grasp", "width": float(self.width)})
                    super().handle(server)

            hand_commands = hand._FrankaServer__command_class_map
            hand_commands[GripperCommand.kMove] = RecordedHandMove
            hand_commands[GripperCommand.kGrasp] = RecordedHandGrasp
        self._move_status = MoveStatus
        self._robot_command = RobotCommand
        if self.sim is not None:
            robot = rs.robot
            self._qadr = np.asarray(robot._qpos_addrs, dtype=int)
            self._dadr = np.asarray(robot._dof_addrs, dtype=int)
            self.sim.register_post_step_callback(self._on_post_step)

    @property
    def hostname(self) -> str:
        return self.server.hostname

    # ------------------------------------------------------------------ the 1 kHz path (physics thread)
    def _on_motion_started(self, controller_mode, motion_generator_mode) -> None:
        from franky_sim.franka_robot_protocol import MoveCommandControllerMode

        if controller_mode == MoveCommandControllerMode.kExternalController:
            self._mode = MotionMode.TORQUE
        else:
            self._mode = MotionMode(int(motion_generator_mode) + 1) if int(motion_generator_mode) < 4 \
                else MotionMode.NONE
        self._prev_q = np.array(self.server.robot.inner_state.q, dtype=float)  # at rest, where it is
        self._prev_v = np.zeros(7)
        self._prev_a = np.zeros(7)
        self._prev_id = -1
        self._first = True
        self._motion += 1
        self.counters["motions"] += 1
        with self._lock:
            self._last_motion_errors = [False] * len(ERROR_NAMES)
            self._refresh_errors()

    def _on_udp_command(self, data: bytes) -> None:
        t_start = time.perf_counter()
        if self._in_reflex:  # the aborted motion's last packets: the robot no longer listens
            self.counters["ignored_in_reflex"] += 1
            return
        mode = self._mode
        if not self.server.current_motion_id or mode == MotionMode.NONE:
            self._orig_udp(data)
            return
        msg_id = _ID.unpack_from(data, 0)[0]
        finished = bool(data[_MOTION_FINISHED_OFFSET] or data[_TORQUE_FINISHED_OFFSET])
        if msg_id <= self._prev_id:  # older than one already applied: dropped, as the robot does
            self.counters["stale_commands"] += 1
            return
        arrays, i, _ = self._cmd.next_row()
        fl, it = arrays[0][i], arrays[1][i]
        it[_I_ID], it[_I_MODE], it[_I_MOTION], it[_I_FINISHED] = msg_id, mode, self._motion, finished
        flags = 0
        if mode == MotionMode.JOINT_VELOCITY or mode == MotionMode.JOINT_POSITION:
            if self._prev_id < 0:
                dt = 1e-3
            else:
                gap = msg_id - self._prev_id
                dt = gap * 1e-3
                if gap > 1:
                    self.counters["missing_ids"] += gap - 1
                    if gap > self.counters["max_id_gap"]:
                        self.counters["max_id_gap"] = gap
            q, v, a, j = fl[_C_Q], fl[_C_V], fl[_C_A], fl[_C_J]
            prev_q = self._prev_q
            if mode == MotionMode.JOINT_VELOCITY:
                v[:] = np.frombuffer(data, "<f8", 7, _DQ_C_OFFSET)
                fl[_C_VAL] = v
                np.multiply(v, dt, out=q)
                q += prev_q
            else:
                q[:] = np.frombuffer(data, "<f8", 7, _Q_C_OFFSET)
                fl[_C_VAL] = q
                if self._first:  # the robot starts from rest at the first commanded pose, if it is there
                    prev_q = q
                    if not (np.abs(q - self._prev_q) <= self.start_pose_tolerance).all():
                        flags |= START_POSE_INVALID
                np.subtract(q, prev_q, out=v)
                v /= dt
            np.subtract(v, self._prev_v, out=a)
            a /= dt
            np.subtract(a, self._prev_a, out=j)
            j /= dt
            # NaN fails every "inside" test below, as it must
            if not ((q >= self._q_min).all() and (q <= self._q_max).all()):
                flags |= POSITION_LIMITS
            lo, up = fr3_velocity_bounds(prev_q)
            tol = self.tolerance
            if not ((v <= up + tol).all() and (v >= lo - tol).all()):
                flags |= VELOCITY_LIMITS
            if not (np.abs(fl[_C_AJ]) <= self._aj_lim).all():  # acceleration and jerk at once
                if not (np.abs(a) <= self._ddq_lim).all():
                    flags |= VELOCITY_DISCONTINUITY
                if not (np.abs(j) <= self._dddq_lim).all():
                    flags |= ACCELERATION_DISCONTINUITY
            if finished and self.check_motion_end and not flags and not (np.abs(v) <= self._stop_dv).all():
                flags |= VELOCITY_DISCONTINUITY
            if flags:
                detail = self._detail(flags, fl, prev_q, self._prev_q)
            self._prev_q, self._prev_v, self._prev_a = q, v, a
        else:
            self.counters["unchecked_commands"] += 1
            fl[1:36] = np.nan
        self._prev_id = msg_id
        self._first = False
        it[_I_FLAGS] = flags
        fl[_C_T] = time.monotonic()
        fl[_C_COST] = (time.perf_counter() - t_start) * 1e6
        if flags:
            self._reflex(flags, "check", msg_id, detail)
            return
        self._orig_udp(data)

    def _detail(self, flags: int, row: np.ndarray, prev_q: np.ndarray, start_q: np.ndarray) -> list[dict]:
        q, v, a, j = row[_C_Q], row[_C_V], row[_C_A], row[_C_J]
        out = []
        if flags & START_POSE_INVALID:
            bad = ~(np.abs(q - start_q) <= self.start_pose_tolerance)
            out += [{"quantity": "start_pose", "joint": int(k) + 1, "value": float(q[k]),
                     "measured": float(start_q[k]), "limit": self.start_pose_tolerance} for k in np.flatnonzero(bad)]
        if flags & POSITION_LIMITS:
            bad = ~((q >= self._q_min) & (q <= self._q_max))
            out += [{"quantity": "position", "joint": int(k) + 1, "value": float(q[k]),
                     "limit": [float(self._q_min[k]), float(self._q_max[k])]} for k in np.flatnonzero(bad)]
        if flags & VELOCITY_LIMITS:
            lo, up = fr3_velocity_bounds(prev_q)
            bad = ~((v <= up + self.tolerance) & (v >= lo - self.tolerance))
            out += [{"quantity": "velocity", "joint": int(k) + 1, "value": float(v[k]),
                     "limit": [float(lo[k]), float(up[k])]} for k in np.flatnonzero(bad)]
        if flags & VELOCITY_DISCONTINUITY:
            bad = ~(np.abs(a) <= self._ddq_lim)
            out += [{"quantity": "acceleration", "joint": int(k) + 1, "value": float(a[k]),
                     "limit": float(FR3_HW_DDQ_MAX[k])} for k in np.flatnonzero(bad)]
            if not bad.any():  # the stop after a final command
                out += [{"quantity": "stop", "joint": int(k) + 1, "value": float(v[k]),
                         "limit": float(self._stop_dv[k])} for k in np.flatnonzero(~(np.abs(v) <= self._stop_dv))]
        if flags & ACCELERATION_DISCONTINUITY:
            bad = ~(np.abs(j) <= self._dddq_lim)
            out += [{"quantity": "jerk", "joint": int(k) + 1, "value": float(j[k]),
                     "limit": float(FR3_HW_DDDQ_MAX[k])} for k in np.flatnonzero(bad)]
        return out

    def _on_pre_process(self) -> None:
        self._orig_pre()
        while self._deferred:
            self._deferred.pop(0)()
        error = self._pending_injection
        if error is not None:
            self._pending_injection = None
            self._reflex(1 << ERROR_INDEX[error], "injected", self.server._FrankaServer__message_id - 1, [])
            self._injected.set()
        if self._wait_s and self._prev_id >= 0 and not self._in_reflex and self._mode in _JOINT_MODES:
            rs = self.server
            if self._prev_id < rs._FrankaServer__message_id - 1 and rs.current_motion_id:
                sock = rs._FrankaServer__udp_socket  # the answer to the last state is late: wait for it
                if sock is not None:
                    t = time.perf_counter()
                    in_time = bool(select.select([sock], [], [], self._wait_s)[0])
                    self._waited_s += time.perf_counter() - t
                    self.counters["late_commands"] += 1
                    self.counters["commands_not_in_time"] += not in_time

    def _on_post_step(self, sim) -> None:
        arrays, i, _ = self._st.next_row()
        d = sim.data
        row = arrays[0][i]
        row[_S_SIMT] = d.time
        row[_S_T] = time.monotonic()
        row[_S_Q] = d.qpos[self._qadr]
        row[_S_DQ] = d.qvel[self._dadr]
        arrays[1][i, 0] = self.server._FrankaServer__message_id  # the id of the state sent after this step

    def _reflex(self, flags: int, source: str, msg_id: int, detail: list) -> None:
        """Abort the running motion as the FR3 does on a reflex (physics thread)."""
        rs = self.server
        names = error_names(flags)
        with self._lock:
            for n in names:
                self._current_errors[ERROR_INDEX[n]] = True
                self._last_motion_errors[ERROR_INDEX[n]] = True
            self._in_reflex = True
            self._refresh_errors()
            motion_id = rs.current_motion_id
            if motion_id and rs._tcp_socket is not None:
                from franky_sim.franka_server import BaseCommand

                BaseCommand.send_response(rs._tcp_socket, self._robot_command.kMove, motion_id,
                                          self._move_status.kReflexAborted)
            rs.reset_current_motion_id()
            rs.stop_motion(send_preemption_signal=False)  # idle: holds its present desired position
            self._mode = MotionMode.NONE
            now = time.monotonic()
            self.reflexes.append({"t": now, "time": now - self.t0, "message_id": int(msg_id), "source": source,
                                  "errors": names, "motion": self._motion, "aborted_motion": bool(motion_id),
                                  "detail": detail})
        self._reflex_event.set()

    def _recover(self) -> None:
        with self._lock:
            was = self._in_reflex
            self._in_reflex = False
            self._current_errors = [False] * len(ERROR_NAMES)
            self._refresh_errors()
        if was:
            self.counters["recoveries"] += 1

    def _refresh_errors(self) -> None:
        self._errors_tuple = (tuple(self._current_errors), tuple(self._last_motion_errors))
        self._override_state = self._in_reflex or any(self._current_errors) or any(self._last_motion_errors)

    def _state_bytes(self) -> bytes:
        desired = self._mode in _JOINT_MODES and not self._first and not self._in_reflex
        if not (self._override_state or desired):
            return self._orig_state_bytes()
        from franky_sim.franka_robot_protocol import RobotMode

        st = self.server.robot_state
        if desired:  # the desired state of the command stream itself, as the FR3 reports it (module docstring)
            st = st.replace(q_d=tuple(self._prev_q), dq_d=tuple(self._prev_v), ddq_d=tuple(self._prev_a))
        if self._override_state:
            current, last = self._errors_tuple
            st = st.replace(robot_mode=RobotMode.kReflex if self._in_reflex else st.robot_mode, errors=current,
                            reflex_reason=last)
        return st.pack_state()

    # ------------------------------------------------------------------ public API
    @property
    def in_reflex(self) -> bool:
        return self._in_reflex

    @property
    def current_errors(self) -> list[str]:
        return [n for n, on in zip(ERROR_NAMES, self._errors_tuple[0]) if on]

    @property
    def last_motion_errors(self) -> list[str]:
        return [n for n, on in zip(ERROR_NAMES, self._errors_tuple[1]) if on]

    @property
    def n_commands(self) -> int:
        return self._cmd.count

    @property
    def n_states(self) -> int:
        return self._st.count

    def mark(self) -> int:
        """The number of commands so far: pass as ``since`` to look at what comes after."""
        return self._cmd.count

    def inject_reflex(self, error: str = "cartesian_reflex", wait: bool = True, timeout: float = 2.0) -> bool:
        """Behave as if the FR3 had this reflex now (applied by the physics thread at its next step).
        With ``wait``: True once applied (False if the simulator did not step within ``timeout``)."""
        if error not in ERROR_INDEX:
            raise ValueError(f"unknown FR3 error {error!r}; one of franka::Errors: {', '.join(ERROR_NAMES)}")
        self._injected.clear()
        self._pending_injection = error
        return self._injected.wait(timeout) if wait else True

    def wait_for_reflex(self, timeout: float, after: int = 0) -> dict | None:
        """The first reflex with index >= ``after`` (``len(emulator.reflexes)`` before the action), waiting
        up to ``timeout`` s; None if none came."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.reflexes) > after:
                    return dict(self.reflexes[after])
                self._reflex_event.clear()
            left = deadline - time.monotonic()
            if left <= 0 or not self._reflex_event.wait(left):
                with self._lock:
                    return dict(self.reflexes[after]) if len(self.reflexes) > after else None

    def commands(self, since: int = 0) -> dict[str, np.ndarray]:
        """The recorded commands from index ``since``: message_id, t (time.monotonic), mode, motion, flags,
        finished, value (q_c or dq_c as sent), q, v, a, j (what the checks used), cost_us."""
        n = self._cmd.count  # one snapshot: the physics thread keeps appending
        f, i = self._cmd.gather(0, since, n), self._cmd.gather(1, since, n)
        return {"message_id": i[:, _I_ID], "t": f[:, _C_T], "mode": i[:, _I_MODE], "motion": i[:, _I_MOTION],
                "flags": i[:, _I_FLAGS], "finished": i[:, _I_FINISHED].astype(bool), "value": f[:, _C_VAL],
                "q": f[:, _C_Q], "v": f[:, _C_V], "a": f[:, _C_A], "j": f[:, _C_J], "cost_us": f[:, _C_COST]}

    def states(self, since: int = 0) -> dict[str, np.ndarray]:
        """The measured state of every physics step: sim_time, t (time.monotonic), message_id (of the state
        sent after the step), q, dq."""
        n = self._st.count
        f, i = self._st.gather(0, since, n), self._st.gather(1, since, n)
        return {"sim_time": f[:, _S_SIMT], "t": f[:, _S_T], "message_id": i[:, 0], "q": f[:, _S_Q],
                "dq": f[:, _S_DQ]}

    def peaks(self, since: int = 0) -> dict[str, np.ndarray]:
        """Per joint: the largest |velocity|, |acceleration|, |jerk| of the joint-interface commands, and
        the largest velocity as a fraction of the position-dependent bound at its position."""
        c = self.commands(since)
        joint = (c["mode"] == MotionMode.JOINT_POSITION) | (c["mode"] == MotionMode.JOINT_VELOCITY)
        out = {}
        for key, name in (("v", "velocity"), ("a", "acceleration"), ("j", "jerk")):
            x = np.abs(c[key][joint])
            out[name] = np.nanmax(x, axis=0) if len(x) else np.zeros(7)
        v = c["v"][joint]
        if len(v):
            q_before = c["q"][joint] - v * 1e-3
            lo, up = fr3_velocity_bounds(q_before)
            bound = np.where(v >= 0, up, -lo)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(np.abs(v) > 0, np.abs(v) / bound, 0.0)
            out["velocity_bound_ratio"] = np.nanmax(r, axis=0)
        else:
            out["velocity_bound_ratio"] = np.zeros(7)
        return out

    def peak_ratios(self, limits=None, since: int = 0) -> dict:
        """Peaks as ratios: ``fr3`` to the FR3's table (velocity 2.62.., acceleration 10, jerk 5000) and,
        with ``limits`` (anything with ``dq_max``, ``ddq_max``, ``dddq_max``, e.g. ``JointLimits``), to those.
        Each entry: per-joint list and its maximum."""
        p = self.peaks(since)

        def block(dq, ddq, dddq):
            r = {"velocity": p["velocity"] / dq, "acceleration": p["acceleration"] / ddq, "jerk": p["jerk"] / dddq}
            return {k: {"per_joint": [round(float(x), 4) for x in val], "max": round(float(np.max(val)), 4)}
                    for k, val in r.items()}

        out = {"fr3": block(FR3_HW_DQ_MAX, FR3_HW_DDQ_MAX, FR3_HW_DDDQ_MAX)}
        out["fr3"]["velocity_bound"] = {"per_joint": [round(float(x), 4) for x in p["velocity_bound_ratio"]],
                                        "max": round(float(np.max(p["velocity_bound_ratio"])), 4)}
        if limits is not None:
            out["limits"] = block(np.asarray(limits.dq_max, float), np.asarray(limits.ddq_max, float),
                                  np.asarray(limits.dddq_max, float))
        return out

    def check_cost_us(self) -> dict:
        """The checks' own cost per command [us] (inside franky-sim's loop, franky-sim's handling excluded)."""
        cost = self.commands()["cost_us"]
        if not len(cost):
            return {"n": 0}
        return {"n": int(len(cost)), "mean": round(float(np.mean(cost)), 2),
                "p50": round(float(np.percentile(cost, 50)), 2), "p99": round(float(np.percentile(cost, 99)), 2),
                "max": round(float(np.max(cost)), 2)}

    def summary(self, limits=None) -> dict:
        c = self.commands()
        peaks = self.peaks()
        with self._lock:
            reflexes = [dict(r, t=round(r["t"], 6), time=round(r["time"], 6)) for r in self.reflexes]
        return {
            "hostname": self.hostname, "started_unix": self.wall_t0, "duration_s": round(time.monotonic() - self.t0, 3),
            "commands": int(self._cmd.count), "states": int(self._st.count),
            "commands_per_ms": _rate(c["message_id"], c["motion"]),
            "counters": dict(self.counters), "in_reflex": self._in_reflex, "configuration": dict(self.configuration),
            "hand_commands": [dict(h, t=round(h["t"], 6)) for h in self.hand_commands],
            "current_errors": self.current_errors, "last_motion_errors": self.last_motion_errors,
            "peaks": {k: [round(float(x), 5) for x in v] for k, v in peaks.items()},
            "ratios": self.peak_ratios(limits), "reflexes": reflexes, "check_cost_us": self.check_cost_us(),
            "fr3_limits": {"q_min": FR3_HW_Q_MIN.tolist(), "q_max": FR3_HW_Q_MAX.tolist(),
                           "dq_max": FR3_HW_DQ_MAX.tolist(), "ddq_max": FR3_HW_DDQ_MAX.tolist(),
                           "dddq_max": FR3_HW_DDDQ_MAX.tolist(), "tolerance": self.tolerance},
        }

    def save(self, folder, limits=None) -> tuple[Path, Path]:
        """Write ``fr3_emulator.npz`` (commands_*, states_*) and ``fr3_emulator_summary.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"commands_{k}": v for k, v in self.commands().items()}
        arrays.update({f"states_{k}": v for k, v in self.states().items()})
        npz = folder / "fr3_emulator.npz"
        np.savez_compressed(npz, **arrays)
        js = folder / "fr3_emulator_summary.json"
        js.write_text(json.dumps(self.summary(limits), indent=1) + "\n")
        return npz, js


def _rate(ids: np.ndarray, motions: np.ndarray) -> float | None:
    """Commands per elapsed ms (state id) within motions: 1.0 when every state was answered."""
    n = span = 0
    for m in np.unique(motions):
        sel = ids[motions == m]
        if len(sel) > 1:
            n += len(sel) - 1
            span += int(sel[-1] - sel[0])
    return round(n / span, 4) if span > 0 else None


# ---------------------------------------------------------------------------------------------- running it
class StrictFR3:
    """A bare FR3 (no task objects) served by franky-sim with the emulator installed. Context manager;
    connect with ``franky.Robot(fr3.hostname, realtime_config=RealtimeConfig.Ignore)``.

    ``hostname``: bind exactly this address (default: a free 127.x.y.z from ``loopback_candidates``).
    ``realtime``: simulated speed relative to the wall clock (1.0 = real time)."""

    def __init__(self, hostname: str | None = None, initial_q=READY_Q, realtime: float = 1.0,
                 gripper_width: float = 0.08, **emulator_kwargs):
        q = np.asarray(initial_q, dtype=float)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"initial_q must be 7 finite numbers, got {initial_q!r}")
        self.initial_q = q
        self.requested_hostname = hostname
        self.realtime = float(realtime)
        self.gripper_width = float(gripper_width)
        self.emulator_kwargs = emulator_kwargs
        self.sim = self.server = self.emulator = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StrictFR3:
        from franky_sim import SimulationServer
        from franky_sim.mujoco_simulator import MujocoSimulator

        from .franky import honour_hand_speed, loopback_candidates, run_physics

        sim = MujocoSimulator()
        sim.init()
        honour_hand_speed(sim.add_robot(initial_q=tuple(float(x) for x in self.initial_q),
                                        initial_hand_width=self.gripper_width))
        candidates = [self.requested_hostname] if self.requested_hostname else loopback_candidates()
        server = SimulationServer(sim, hostname_candidates=candidates)
        server.init()
        self.sim, self.server = sim, server
        self.emulator = FR3Emulator(server.robot_servers[0], sim, **self.emulator_kwargs)
        server.running = True
        period = 0.001 / self.realtime if self.realtime else 0.0
        self._thread = threading.Thread(target=run_physics, args=(server, period, self._stop),
                                        name="fr3-emulator", daemon=True)
        server.async_thread = self._thread
        self._thread.start()
        return self

    @property
    def hostname(self) -> str:
        return self.server.robot_servers[0].hostname

    def close(self) -> None:
        if self.server is not None:
            self._stop.set()
            self.server.cleanup()  # stops and joins the physics thread, closes the sockets
            self.server = None

    def __enter__(self) -> StrictFR3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def install_fr3_emulator(scene, **kwargs) -> FR3Emulator:
    """Install the emulator on a started ``FrankySimScene`` (before a client connects); also kept as
    ``scene.emulator``."""
    if getattr(scene, "_server", None) is None:
        raise RuntimeError("start the scene first")
    emulator = FR3Emulator(scene._server.robot_servers[0], scene._sim, **kwargs)
    scene.emulator = emulator
    return emulator


# ---------------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hostname", default="127.0.0.1", help="address to serve the FR3 on (loopback)")
    parser.add_argument("--task", default=None, help="serve this task's scene (default: a bare FR3)")
    parser.add_argument("--seed", type=int, default=0, help="task seed (initial conditions)")
    parser.add_argument("--initial-q", type=float, nargs=7, default=None, metavar="Q",
                        help="start joints (default: the task's, or a ready pose for the bare FR3)")
    parser.add_argument("--record", default=None, metavar="DIR", help="write the recording and summary here on exit")
    parser.add_argument("--realtime", type=float, default=1.0, help="simulated speed / wall clock")
    parser.add_argument("--max-record-s", type=float, default=None, help="stop recording after this many seconds")


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    kwargs = {"max_record_s": args.max_record_s}
    if args.task:
        from .franky import FrankySimScene

        # FrankySimScene's realtime is wall ms per simulated ms (0: as fast as it goes), this flag the inverse
        scene = FrankySimScene(args.task, seed=args.seed, realtime=1.0 / args.realtime if args.realtime else 0.0,
                               hostname=args.hostname, strict=kwargs)
        if args.initial_q is not None:
            scene.initial_q = np.asarray(args.initial_q, dtype=float)
        scene.start()
        emulator, close = scene.emulator, scene.close
    else:
        fr3 = StrictFR3(args.hostname, READY_Q if args.initial_q is None else args.initial_q, args.realtime,
                        **kwargs).start()
        emulator, close = fr3.emulator, fr3.close

    def on_stop(signum, frame):
        stop.set()

    def on_usr1(signum, frame):
        emulator.inject_reflex("cartesian_reflex", wait=False)

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_usr1)
    print(f"fr3-emulator ready {emulator.hostname}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        close()
        s = emulator.summary()
        if args.record:
            npz, js = emulator.save(args.record)
            print(f"fr3-emulator recording: {npz} {js}", flush=True)
        print(f"fr3-emulator stopped: {s['commands']} commands, {s['states']} steps, {len(s['reflexes'])} reflexes",
              flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mail_policy_node.sim.fr3_emulator",
                                     description="franky-sim with a real FR3's limit checks and reflexes")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
