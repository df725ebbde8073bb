"""The arm controller core: chunks in, one safe joint command per fixed control cycle out.

Combines the chunk scheduler, the safety filter and the watchdog with the modes of
mail_msgs/ControllerStatus (DISABLED, ENABLED, HOLDING, ERROR) and a dry-run flag. Time is injected
(``now`` arguments or a ``clock`` callable), so tests run on simulated time. The ROS node only
converts messages to these calls:

    ctrl = ArmController(ControllerConfig(...), clock=time.monotonic, wall_clock=time.time)
    ctrl.update_measurement(q, t, gripper_width)   # every joint state
    ctrl.submit_chunk(chunk)                       # every ActionChunk
    out = ctrl.step()                              # every cycle; send out.command if out.send
    ctrl.status()                                  # for ControllerStatus

Two clocks. Everything the controller times itself (the watchdog, cycle jitter, measurement age) runs
on ``clock``, a monotonic clock, so a step of the system clock (NTP, PTP) can neither blind nor trip
the watchdog. Chunk stamps are observation times on the wall clock of the host that took them (the GPU
box); each chunk is moved onto ``clock`` when it arrives, with the wall-minus-monotonic offset read
then, so its due times do not move if the wall clock steps while it runs. A stamp later than the
wall clock (plus ``max_clock_offset``) means the hosts' clocks disagree: refused. Without
``wall_clock`` (tests), stamps are on ``clock`` already.

Who drives the arm changes only with an enable: the first chunk accepted after an enable binds its
source (``policy_id`` and, for a multi-task checkpoint, its ``task``); chunks of another policy (a hot swap,
a second policy node, the same checkpoint asked for another task) are refused until the next enable. That
enable comes from rest: while the enabled policy still drives, an enable after another policy's chunk was
refused is refused too (it would have answered "already enabled" and switched nothing); the arm holds when
the enabled policy's chunks stop (the watchdog) or on a disable, and the enable after that binds the new one.
Chunks are refused, before they can reach the arm, when their targets lie outside the FR3's joint range,
when consecutive actions are further apart than the FR3 can move in ``dt``, when the first action to run is
further than ``max_start_distance`` from the arm, and when they are in an action space no FR3 executes (a
simulated benchmark's: Meta-World's hand steps, spec.ROBOT_ACTION_SPACES; no controller can be configured for
one either). The watchdog expects the next chunk one replanning period (the chunk's ``execute_horizon`` x
``dt``) after each accepted one, and holds the arm ``watchdog_timeout`` after that (control/watchdog.py).

``ee_delta_pose`` chunks are converted to joint targets when accepted: action i's [dx dy dz] is added
to the TCP position at the chunk's stamp and [drx dry drz] (a rotation vector in the base frame)
pre-multiplies the TCP orientation at the stamp (each action relative to the stamp pose, not to the
previous action). The stamp pose is the FK of the measured joints nearest the stamp. A damped
least-squares IK seeded from the previous action turns each pose into joints; a chunk whose IK does
not converge is rejected. Everything downstream is joint space and goes through the safety filter.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
import time
from dataclasses import dataclass, field
from collections.abc import Callable

import numpy as np

from ..spec import (ACTION_SPACE_EE_DELTA_POSE, ACTION_SPACE_JOINT_POSITION, EE_DELTA_NAMES, FR3_JOINT_NAMES,
                    GRIPPER_NAME)
from .chunks import Accepted, ActionChunk, ChunkRejection, ChunkScheduler, SchedulerConfig
from .kinematics import fk, ik, rotvec_to_matrix
from .limits import FR3_HW_DQ_MAX, FR3_Q_MAX, FR3_Q_MIN, GRIPPER_WIDTH_MAX, GRIPPER_WIDTH_MIN, N_JOINTS
from .safety import CommandState, Limit, SafetyConfig, SafetyFilter
from .safety_limits import check_limits, safety_limit
from .watchdog import TripReason, Watchdog, WatchdogConfig

# The limits counted in ControllerStatus.limit_hits: the filter changed where the arm goes or slowed it
# below what the chunk asked for (invalid input, joint range, workspace, gripper range, velocity,
# per-cycle step or TCP speed). Acceleration and jerk bound how fast the tracker turns between the chunk's 10 Hz
# targets in nearly every cycle of any motion; they are counted per name in ``Counters.limits`` only.
OVERRIDES = (Limit.INVALID_INPUT | Limit.POSITION | Limit.VELOCITY | Limit.STEP | Limit.WORKSPACE
             | Limit.GRIPPER | Limit.TCP_SPEED)


def describe_source(source: tuple[str, str]) -> str:
    """An ActionChunk.source for a log line: 'policy_id', or 'policy_id' on task 'push'."""
    policy_id, task = source
    return f"{policy_id!r}" + (f" on task {task!r}" if task else "")


class Mode(enum.IntEnum):
    """Same numbers as mail_msgs/ControllerStatus MODE_*."""

    DISABLED = 0
    ENABLED = 1
    HOLDING = 2
    ERROR = 3


def _default_scheduler() -> SchedulerConfig:
    return SchedulerConfig(names=FR3_JOINT_NAMES + (GRIPPER_NAME,))


# Garbage bounds of a chunk (what no FR3 policy can mean), wider than any configured limit: targets
# beyond the FR3's joint range by this much, and consecutive actions implying more than the FR3's own
# maximum joint velocity (FR3_HW_DQ_MAX; the filter enforces the configured, lower limits anyway).
RANGE_TOLERANCE = 0.2  # [rad]
GRIPPER_TOLERANCE = 0.01  # [m]


@dataclass(frozen=True)
class ControllerConfig:
    """The controller core's configuration; its own safety limits are declared on their fields
    (``safety_limit``, control/safety_limits.py), the filter's in ``SafetyConfig``."""

    safety: SafetyConfig = field(default_factory=SafetyConfig)
    scheduler: SchedulerConfig = field(default_factory=_default_scheduler)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    dry_run: bool = False  # compute and report commands, never mark them to be sent
    max_tracking_error: float = safety_limit(
        0.15, "rad", 0.0, 1.0, "measured vs commanded joints beyond this: ERROR (0 disables)")
    max_measurement_age: float = safety_limit(
        0.1, "s", 0.001, 1.0, "older measurements are not used for the tracking check", node=False)
    max_start_distance: float = safety_limit(
        0.3, "rad", 0.01, 1.0, "a chunk whose first action is further from the arm (any joint) is refused")
    pose_history: float = 2.0  # [s] of measured joint states kept to find the pose at a chunk stamp
    jitter_window: int = 2000  # cycles in the jitter percentile

    def __post_init__(self):
        names = self.scheduler.names
        # the spaces the FR3 executes (SchedulerConfig refuses every other, spec.ROBOT_ACTION_SPACES)
        need = {ACTION_SPACE_JOINT_POSITION: FR3_JOINT_NAMES, ACTION_SPACE_EE_DELTA_POSE: EE_DELTA_NAMES}[
            self.scheduler.action_space]
        extra = set(names) - set(need) - {GRIPPER_NAME}
        if set(need) - set(names) or extra:
            raise ValueError(f"action names {list(names)} must be {list(need)} (any order) plus optionally "
                             f"{GRIPPER_NAME!r} for action space {self.scheduler.action_space}")
        check_limits(self)
        if not 0.1 <= self.pose_history <= 60.0:
            raise ValueError(f"pose_history must be in [0.1, 60] s, got {self.pose_history}")
        if not 10 <= self.jitter_window <= 1_000_000:
            raise ValueError(f"jitter_window must be in [10, 1e6], got {self.jitter_window}")


@dataclass
class Counters:
    chunks_received: int = 0
    chunks_rejected: int = 0
    actions_dropped_stale: int = 0
    watchdog_trips: int = 0
    limit_hits: int = 0  # cycles in which the filter overrode the request (see OVERRIDES)
    cycles: int = 0
    rejections: dict = field(default_factory=lambda: collections.Counter())  # reason -> count
    limits: dict = field(default_factory=lambda: collections.Counter())  # limit name -> cycles, every Limit
    chunk_ages: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))  # [s]


@dataclass
class CycleOutput:
    t: float  # [s] time of this cycle
    mode: Mode
    command: CommandState  # after the safety filter (q, dq, ddq, gripper)
    hits: Limit
    send: bool  # False: disabled, error or dry run -> do not send to the robot


@dataclass
class StatusSnapshot:
    """Fields of mail_msgs/ControllerStatus (plus per-reason detail the node may log)."""

    mode: Mode
    reason: str
    mode_since: float | None  # [s] on ``clock``: when ``mode`` began (None: before the first cycle after it)
    dry_run: bool
    active_policy_id: str
    active_sequence: int
    active_task: str  # the task of the policy the last enable bound ("" for none, or a checkpoint without tasks)
    chunks_received: int
    chunks_rejected: int
    actions_dropped_stale: int
    watchdog_trips: int
    limit_hits: int
    commanded_position: list  # 7 joints + gripper width
    measured_position: list  # 7 joints (+ gripper width when known)
    cycle_jitter_p99_ms: float
    rejections: dict
    limits: dict
    chunk_age_p50_ms: float  # arrival (controller's wall clock) - stamp, recent chunks: latency + clock offset
    chunk_age_min_ms: float  # negative: the stamping host's clock is ahead of this one


class ArmController:
    def __init__(self, config: ControllerConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 initial_q=None, initial_gripper: float = float("nan"),
                 wall_clock: Callable[[], float] | None = None):
        """``initial_gripper``: NaN = unknown, the Hand is not commanded until a chunk names a width."""
        self.config = config or ControllerConfig()
        self.clock = clock
        self.wall_clock = wall_clock
        self.filter = SafetyFilter(self.config.safety)
        self.scheduler = ChunkScheduler(self.config.scheduler)
        self.watchdog = Watchdog(self.config.watchdog)
        self.counters = Counters()
        self.mode = Mode.DISABLED
        self.mode_since: float | None = None  # set by the next cycle where a change had no time of its own
        self.reason = "waiting for enable"
        self.transitions: collections.deque = collections.deque(maxlen=100)  # (Mode, reason), newest last
        self._disable_requested = False
        self._estop_active = False
        self._driver: tuple[str, str] | None = None  # ActionChunk.source bound by the first chunk after enable
        self._refused: tuple[str, str] | None = None  # the last other source refused since then (OTHER_POLICY)
        self._replan_period = 0.0  # what the last chunk from the driving policy said (ActionChunk.replan_period)
        self._cmd: CommandState | None = (CommandState.at_rest(initial_q, initial_gripper)
                                          if initial_q is not None else None)
        self._meas_q: np.ndarray | None = None
        self._meas_t: float | None = None
        self._meas_gripper: float | None = None
        self._history: collections.deque = collections.deque()  # (t, q)
        self._last_step: float | None = None
        self._jitter = collections.deque(maxlen=self.config.jitter_window)
        names = self.config.scheduler.names
        self._gripper_col = names.index(GRIPPER_NAME) if GRIPPER_NAME in names else None
        if self.config.scheduler.action_space == ACTION_SPACE_JOINT_POSITION:
            self._joint_cols = [names.index(n) for n in FR3_JOINT_NAMES]
        else:
            self._ee_cols = [names.index(n) for n in EE_DELTA_NAMES]

    # ------------------------------------------------------------ inputs
    def _now(self, now: float | None) -> float:
        return float(self.clock() if now is None else now)

    def update_measurement(self, q, t: float | None = None, gripper_width: float | None = None) -> bool:
        """Latest measured joint positions (7,) at controller time ``t``. Invalid data is ignored (False).
        ``gripper_width`` None: unknown (not read, or the read failed)."""
        t = self._now(t)
        q = np.asarray(q, dtype=float)
        if q.shape != (N_JOINTS,) or not np.all(np.isfinite(q)) or not math.isfinite(t):
            return False
        self._meas_q, self._meas_t = q.copy(), t
        self._meas_gripper = (float(gripper_width) if gripper_width is not None and math.isfinite(gripper_width)
                              else None)
        self._history.append((t, self._meas_q))
        while self._history and self._history[0][0] < t - self.config.pose_history:
            self._history.popleft()
        if self._cmd is None:
            self._cmd = CommandState.at_rest(q, float("nan"))
        return True

    def submit_chunk(self, chunk: ActionChunk, now: float | None = None, wall: float | None = None) -> Accepted:
        """Validate and schedule a chunk stamped on the wall clock. ``now``: controller time; ``wall``: the
        wall clock at the same moment (default: read from ``wall_clock``, or ``now`` without one).
        Rejections are counted; nothing else changes."""
        now = self._now(now)
        if wall is None:
            wall = now if self.wall_clock is None else float(self.wall_clock())
        self.counters.chunks_received += 1
        age = wall - float(chunk.stamp)
        if math.isfinite(age):
            self.counters.chunk_ages.append(age)
        # onto the controller's clock, with the offset of this moment (module docstring)
        chunk = dataclasses.replace(chunk, stamp=float(chunk.stamp) - (wall - now)) if wall != now else chunk
        verdict = self._check_source(chunk)
        if verdict.ok:
            self._replan_period = chunk.replan_period()  # even if refused below: the policy's next is due then
            verdict = self.scheduler.validate(chunk, now)
        rows = None
        if verdict.ok:
            rows = self._to_joint_rows(chunk, now)
            if rows is None:
                verdict = Accepted(False, ChunkRejection.IK_FAILED, detail="IK did not converge")
            else:
                verdict = self._check_rows(chunk, rows, now)
        if verdict.ok:
            verdict = self.scheduler.accept(chunk, now, actions=rows)
        if not verdict.ok:
            self.counters.chunks_rejected += 1
            self.counters.rejections[verdict.reason.value] += 1
            return verdict
        if self._driver is None and self.mode == Mode.ENABLED:
            self._driver = chunk.source
        self.counters.actions_dropped_stale += verdict.dropped_stale
        self.watchdog.feed(now, chunk.replan_period())
        return verdict

    def reject(self, reason: ChunkRejection, detail: str = "") -> Accepted:
        """Count a chunk the caller refused before submitting it (e.g. the node saw two publishers)."""
        self.counters.chunks_received += 1
        self.counters.chunks_rejected += 1
        self.counters.rejections[reason.value] += 1
        return Accepted(False, reason, detail=detail)

    def _check_source(self, chunk: ActionChunk) -> Accepted:
        if self._driver is not None and chunk.source != self._driver:
            self._refused = chunk.source
            return Accepted(False, ChunkRejection.OTHER_POLICY,
                            detail=f"policy {describe_source(chunk.source)} is not the enabled one "
                                   f"({describe_source(self._driver)}): it drives after an enable from rest")
        return Accepted(True)

    def _check_rows(self, chunk: ActionChunk, rows: np.ndarray, now: float) -> Accepted:
        """Bounds on a chunk's joint targets (module docstring); ``rows`` as from ``_to_joint_rows``."""
        q = rows[:, :N_JOINTS]
        out = (q < FR3_Q_MIN - RANGE_TOLERANCE) | (q > FR3_Q_MAX + RANGE_TOLERANCE)
        if np.any(out):
            j = int(np.argwhere(out)[0][1])
            return Accepted(False, ChunkRejection.OUT_OF_RANGE,
                            detail=f"joint {j + 1} target {q[out][0]:.3f} rad outside the FR3 range")
        g = rows[:, N_JOINTS]
        g = g[~np.isnan(g)]
        if np.any((g < GRIPPER_WIDTH_MIN - GRIPPER_TOLERANCE) | (g > GRIPPER_WIDTH_MAX + GRIPPER_TOLERANCE)):
            return Accepted(False, ChunkRejection.OUT_OF_RANGE, detail=f"gripper width {g.min():.3f}..{g.max():.3f} m")
        if len(q) > 1:
            speed = np.max(np.abs(np.diff(q, axis=0)), axis=0) / float(chunk.dt)
            if np.any(speed > FR3_HW_DQ_MAX):
                j = int(np.argmax(speed / FR3_HW_DQ_MAX))
                return Accepted(False, ChunkRejection.TOO_FAST,
                                detail=f"joint {j + 1} at {speed[j]:.2f} rad/s between actions")
        keep = chunk.due_times() >= now - self.config.scheduler.stale_tolerance
        fresh = self._meas_t is not None and now - self._meas_t <= self.config.max_measurement_age
        here = self._meas_q if fresh else self._cmd.q if self._cmd is not None else None
        if here is not None and np.any(keep):
            gap = np.abs(q[keep][0] - here)
            if np.max(gap) > self.config.max_start_distance:
                j = int(np.argmax(gap))
                return Accepted(False, ChunkRejection.FAR_FROM_ARM,
                                detail=f"first action {gap[j]:.3f} rad from the arm on joint {j + 1} "
                                       f"(max_start_distance {self.config.max_start_distance})")
        return Accepted(True)

    def _to_joint_rows(self, chunk: ActionChunk, now: float) -> np.ndarray | None:
        """Rows of [7 joint targets, gripper width (NaN if none)] in FR3 joint order."""
        a = np.asarray(chunk.actions, dtype=float)
        g = a[:, self._gripper_col] if self._gripper_col is not None else np.full(len(a), np.nan)
        if self.config.scheduler.action_space == ACTION_SPACE_JOINT_POSITION:
            return np.column_stack([a[:, self._joint_cols], g])
        q0 = self._q_at(chunk.stamp)
        if q0 is None:
            return None
        T0 = fk(q0)
        lim = self.config.safety.limits
        rows, seed = [], q0
        for d in a[:, self._ee_cols]:
            T = np.eye(4)
            T[:3, :3] = rotvec_to_matrix(d[3:6]) @ T0[:3, :3]
            T[:3, 3] = T0[:3, 3] + d[:3]
            q, ok = ik(T, seed, lim.q_min, lim.q_max)
            if not ok:
                return None
            rows.append(q)
            seed = q
        return np.column_stack([np.array(rows), g])

    def _q_at(self, t: float) -> np.ndarray | None:
        if not self._history:
            return None if self._cmd is None else self._cmd.q
        times = np.array([h[0] for h in self._history])
        i = int(np.argmin(np.abs(times - t)))
        return self._history[i][1]

    # ------------------------------------------------------------- modes
    def enable(self, now: float | None = None) -> tuple[bool, str]:
        """Explicit enable: from DISABLED or HOLDING (once at rest); not from ERROR (``recovered`` first).
        Starts from the measured joints (or the last command), clears old chunks, rearms the watchdog and
        lets the next chunk accepted bind the policy that drives the arm."""
        now = self._now(now)
        if self._cmd is None:
            return False, "no joint state received yet"
        if self._estop_active:
            return False, "e-stop is active; release it first"
        if self.mode == Mode.ERROR:
            return False, f"in ERROR ({self.reason}); recover first"
        if self.mode == Mode.ENABLED:
            if self._refused is not None:  # set only while a driver is bound
                return False, (f"policy {describe_source(self._driver)} drives the arm; "
                               f"{describe_source(self._refused)} is refused until the arm holds (when the "
                               f"enabled policy's chunks stop, or disable): enable again once it is at rest")
            return True, "already enabled"
        if not self._cmd.at_standstill:
            return False, "still decelerating; enable again once at rest"
        start = self._meas_q if self._meas_q is not None else self._cmd.q
        self._cmd = CommandState.at_rest(start, self._cmd.gripper)
        self.scheduler.clear()
        self.watchdog.rearm(now, self._replan_period)
        self._disable_requested = False
        self._driver = self._refused = None
        self._set_mode(Mode.ENABLED, "enabled", now)
        return True, "enabled"

    def disable(self) -> None:
        """Stop commanding: holds (decelerates) first and becomes DISABLED at rest."""
        if self.mode in (Mode.ENABLED, Mode.HOLDING):
            self._disable_requested = True
            self._set_mode(Mode.HOLDING, "disable requested")
        elif self.mode != Mode.ERROR:
            self._set_mode(Mode.DISABLED, "disabled")

    def hold(self, reason: str) -> None:
        """Decelerate to rest and wait for an explicit enable (a trip decided outside the core)."""
        if self.mode == Mode.ENABLED:
            self._set_mode(Mode.HOLDING, reason)

    def estop(self, active: bool = True) -> None:
        """E-stop input. ``active=True``: hold immediately at the filter's maximum deceleration, and refuse
        enable until ``estop(False)`` (release). Releasing does not enable by itself."""
        if not active:
            self._estop_active = False
            return
        self._estop_active = True
        self.watchdog.estop()
        self.counters.watchdog_trips = self.watchdog.trips
        if self.mode in (Mode.ENABLED, Mode.HOLDING):
            self._set_mode(Mode.HOLDING, TripReason.ESTOP.value)

    @property
    def estop_active(self) -> bool:
        return self._estop_active

    def set_error(self, reason: str) -> None:
        """The robot reported an error (e.g. a reflex): stop commanding until recovered and enabled."""
        self._set_mode(Mode.ERROR, reason)
        self.scheduler.clear()

    def recovered(self) -> tuple[bool, str]:
        """The robot's errors were cleared (the caller did that): ERROR -> DISABLED. Resuming is a
        separate, explicit enable."""
        if self.mode != Mode.ERROR:
            return True, f"nothing to recover ({self.mode.name})"
        previous = self.reason
        self._set_mode(Mode.DISABLED, f"recovered from: {previous}")
        return True, f"recovered from: {previous}; enable to resume"

    def _set_mode(self, mode: Mode, reason: str, now: float | None = None) -> None:
        """``now``: the time of the change where the caller has it (a watchdog trip, an enable); otherwise
        the next cycle's time stands for it (a hold, e-stop or error from outside, at most a cycle earlier)."""
        if (mode, reason) != (self.mode, self.reason):
            self.transitions.append((mode, reason))
        if mode != self.mode:
            self.mode_since = now
        self.mode, self.reason = mode, reason

    # -------------------------------------------------------------- cycle
    def step(self, now: float | None = None) -> CycleOutput | None:
        """One control cycle at time ``now``. None until the first joint state (nothing to command)."""
        now = self._now(now)
        if self.mode_since is None:  # a change without a time of its own (or the first cycle): now
            self.mode_since = now
        if self._last_step is not None:
            period = now - self._last_step
            self._jitter.append(abs(period - self.config.safety.cycle_period) * 1e3)
        self._last_step = now
        if self._cmd is None:
            return None
        self.counters.cycles += 1
        if self.mode in (Mode.DISABLED, Mode.ERROR):
            if self._meas_q is not None:  # follow the robot so an enable starts where it is
                self._cmd = CommandState.at_rest(self._meas_q, float("nan"))
            return CycleOutput(now, self.mode, self._cmd, Limit.NONE, False)

        if self._tracking_error_too_large(now):
            err = float(np.max(np.abs(self._meas_q - self._cmd.q)))
            self.set_error(f"tracking error {err:.3f} rad")
            return CycleOutput(now, self.mode, self._cmd, Limit.NONE, False)

        if self.mode == Mode.ENABLED:
            trip = self.watchdog.check(now)
            self.counters.watchdog_trips = self.watchdog.trips
            if trip is not None:
                self._set_mode(Mode.HOLDING, trip.value, now)

        if self.mode == Mode.HOLDING:
            result = self.filter.step(self._cmd, None, hold=True)
        else:
            row = self.scheduler.target(now)
            if row is None:
                result = self.filter.step(self._cmd, None, hold=True)
            else:
                grip = None if np.isnan(row[7]) else row[7]
                rate = self.scheduler.target_rate(now)
                result = self.filter.step(self._cmd, row[:7], grip, target_velocity=rate[:7])
        self._cmd = result.command
        for name in (result.hits & ~Limit.HOLD).names():
            self.counters.limits[name] += 1
        if result.hits & OVERRIDES:
            self.counters.limit_hits += 1
        if self.mode == Mode.HOLDING and self._disable_requested and self._cmd.at_standstill:
            self._disable_requested = False
            self._set_mode(Mode.DISABLED, "disabled", now)
            return CycleOutput(now, self.mode, self._cmd, result.hits, False)
        return CycleOutput(now, self.mode, self._cmd, result.hits, not self.config.dry_run)

    def _tracking_error_too_large(self, now: float) -> bool:
        lim = self.config.max_tracking_error
        if lim <= 0 or self.config.dry_run or self._meas_q is None or self._meas_t is None:
            return False
        if now - self._meas_t > self.config.max_measurement_age:
            return False
        return bool(np.max(np.abs(self._meas_q - self._cmd.q)) > lim)

    # ------------------------------------------------------------ status
    @property
    def command(self) -> CommandState | None:
        return self._cmd

    def status(self) -> StatusSnapshot:
        active = self.scheduler.active
        cmd = [] if self._cmd is None else list(self._cmd.q) + [self._cmd.gripper]
        meas = [] if self._meas_q is None else list(self._meas_q) + (
            [self._meas_gripper] if self._meas_gripper is not None else [])
        jitter = float(np.percentile(self._jitter, 99)) if self._jitter else 0.0
        c = self.counters
        ages = np.asarray(c.chunk_ages) * 1e3
        return StatusSnapshot(
            mode=self.mode, reason=self.reason, mode_since=self.mode_since, dry_run=self.config.dry_run,
            active_policy_id=self._driver[0] if self._driver else ("" if active is None else active.policy_id),
            active_sequence=0 if active is None else active.sequence,
            active_task=self._driver[1] if self._driver else "",
            chunks_received=c.chunks_received, chunks_rejected=c.chunks_rejected,
            actions_dropped_stale=c.actions_dropped_stale, watchdog_trips=c.watchdog_trips,
            limit_hits=c.limit_hits, commanded_position=cmd, measured_position=meas,
            cycle_jitter_p99_ms=jitter, rejections=dict(c.rejections), limits=dict(c.limits),
            chunk_age_p50_ms=float(np.median(ages)) if len(ages) else 0.0,
            chunk_age_min_ms=float(ages.min()) if len(ages) else 0.0,
        )
