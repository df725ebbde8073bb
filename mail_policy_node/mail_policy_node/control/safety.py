"""The safety filter: the last step between any requested joint target and the robot.

Every control cycle it takes the previous commanded state (q, dq, ddq; what was sent last cycle) and
a requested target and returns the next commanded state, defined by finite differences:

    ddq' = ddq + jerk * dt,   dq' = dq + ddq' * dt,   q' = q + dq' * dt

so position, velocity, acceleration and jerk limits are checked on exactly the numbers that are sent.

How it stays inside the limits whatever the input (golden rule: when in doubt, hold still):
1. Each cycle the new acceleration is chosen inside an interval that respects the jerk, acceleration
   and a velocity-viability bound (dq' + max(ddq', 0)^2 / (2 J) <= V and its mirror image). A state
   that satisfies the bound can always ramp its acceleration back to zero without passing V, so the
   interval is never empty (recursive feasibility).
2. A candidate step is only accepted if, braking from it, the joint stops inside its position range
   and the TCP (its position now, half-way along and at the end of the joint-wise braking path) stays
   inside the workspace box shrunk by a margin. The stopping distance is an upper bound on the brake
   policy below. The box is checked at these points, not along the whole curved TCP path: the margin
   (default 2 cm) covers the path's bulge between them; the fuzzer checks every command against the
   unshrunk box. The TCP's speed is bounded too: the desired joint velocity is scaled so the TCP
   would move at most ``TCP_SPEED_SHARE`` of ``max_tcp_speed``, and a candidate that would move it
   faster than ``max_tcp_speed`` is not accepted (the brake policy is taken).
3. Otherwise the step of a fixed brake policy is taken (deceleration towards the largest b <= A with
   b*dt + b^2/(2J) <= |dq|, i.e. a jerk-limited stop that lands on zero velocity, inside the same
   interval). Because the brake policy only
   depends on the state, braking from an accepted state follows the trajectory whose stopping point
   was checked when that state was accepted.
Garbage targets (NaN, inf, wrong shape) and explicit holds use the brake policy for all joints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .kinematics import fk_position
from .limits import GRIPPER_WIDTH_MAX, GRIPPER_WIDTH_MIN, N_JOINTS, JointLimits, fr3_limits
from .safety_limits import check_limits, safety_limit


GRIPPER_REPORT_TOLERANCE = 1e-3  # [m] a width clamped by more than this is a GRIPPER limit hit
TCP_SPEED_SHARE = 0.9  # tracking aims at most this share of max_tcp_speed (the rest absorbs the jerk lag)


class Limit(enum.IntFlag):
    """Why the filter changed a command. Several can be set in one cycle."""

    NONE = 0
    INVALID_INPUT = enum.auto()  # NaN / inf / wrong dimension: held still
    POSITION = enum.auto()  # target outside the joint range (clamped) or braking before a joint limit
    VELOCITY = enum.auto()
    ACCELERATION = enum.auto()
    JERK = enum.auto()
    STEP = enum.auto()  # maximum change per cycle
    WORKSPACE = enum.auto()  # TCP target outside the box, or braking to stay inside it
    GRIPPER = enum.auto()  # gripper width clamped or invalid
    HOLD = enum.auto()  # braking because the caller asked to hold (watchdog, e-stop, disabled)
    TCP_SPEED = enum.auto()  # the TCP would move faster than max_tcp_speed: slowed down or braked

    def names(self) -> list[str]:
        return [m.name.lower() for m in Limit if m != Limit.NONE and m in self]


@dataclass
class CommandState:
    """A commanded state of the arm (what the filter outputs and gets back next cycle)."""

    q: np.ndarray  # (7,) [rad]
    dq: np.ndarray  # (7,) [rad/s]
    ddq: np.ndarray  # (7,) [rad/s^2]
    gripper: float = float("nan")  # [m]; NaN: no width commanded yet (the Hand is left as it is)

    @classmethod
    def at_rest(cls, q, gripper: float = float("nan")) -> CommandState:
        """At rest at ``q``; ``gripper`` NaN (unknown) stays NaN: an unknown width never means "open"."""
        q = np.array(q, dtype=float)
        if q.shape != (N_JOINTS,) or not np.all(np.isfinite(q)):
            raise ValueError(f"CommandState.at_rest needs 7 finite joint positions, got {q!r}")
        g = float(gripper)
        return cls(q, np.zeros(N_JOINTS), np.zeros(N_JOINTS),
                   float(np.clip(g, GRIPPER_WIDTH_MIN, GRIPPER_WIDTH_MAX)) if np.isfinite(g) else float("nan"))

    @property
    def at_standstill(self) -> bool:
        return bool(np.all(self.dq == 0.0) and np.all(self.ddq == 0.0))


@dataclass(frozen=True)
class SafetyConfig:
    """The filter's configuration. Each safety limit is declared once, on its field (``safety_limit``:
    default, unit, bounds, meaning, the node's parameter and the fuzzer's range; control/safety_limits.py
    says how to add one). ``__post_init__`` checks those bounds, then the relations between fields."""

    cycle_period: float = 0.01  # [s] control cycle (0.001 .. 0.1); the node sets it from control_rate_hz
    limits: JointLimits = field(default_factory=fr3_limits)  # position range incl. margin, scaled dq/ddq/dddq
    max_joint_step: float = safety_limit(
        0.05, "rad", 0.001, 0.5, "largest change of any joint per control cycle (caps velocity at this / period)",
        fuzz=(0.001, 0.05))  # fuzzed where the step binds: above, step / period passes the joint velocity limits
    # z = 0: the plane the arm stands on (the simulated table's top). The fuzz ranges are boxes that hold
    # the fuzzer's start pose (TCP at about (0.31, 0, 0.49) m), from the default box to tight ones.
    workspace_min: tuple[float, float, float] = safety_limit(
        (0.15, -0.6, 0.0), "m", -2.0, 2.0, "lower corner of the TCP box, base frame",
        fuzz=((0.0, -0.6, 0.0), (0.23, -0.08, 0.41)))
    workspace_max: tuple[float, float, float] = safety_limit(
        (0.85, 0.6, 1.0), "m", -2.0, 2.0, "upper corner of the TCP box, base frame",
        fuzz=((0.39, 0.08, 0.57), (0.9, 0.6, 1.0)))
    workspace_margin: float = safety_limit(  # fuzzed up to what the tightest fuzzed box (16 cm) leaves room for
        0.02, "m", 0.0, 0.5, "candidates keep the TCP this far inside the box (covers the path between the "
        "checked points)", node=False, fuzz=(0.0, 0.05))
    # Fuzzed from 0.5 m/s only. Below, the fuzzer finds the brake policy's own steps (a brake after a brake:
    # its TCP speed is not checked) over max_tcp_speed: 49 of 1.2 M actions at 0.01-0.5 m/s, by up to 24 % at
    # 0.17 m/s and 50 Hz, 0.08 % at 0.27 m/s and 1 kHz. A one-step look-ahead on accepted candidates halves
    # them, no more. An open finding; the profiles use 0.5 (real_robot) and 1.0 (sim).
    max_tcp_speed: float = safety_limit(1.0, "m/s", 0.01, 3.0, "Cartesian speed of the TCP (the FR3's own limit is 3)",
                                        fuzz=(0.5, 3.0))
    # the gripper's fuzz ranges lie apart, so a drawn range is never empty
    gripper_min: float = safety_limit(GRIPPER_WIDTH_MIN, "m", GRIPPER_WIDTH_MIN, GRIPPER_WIDTH_MAX,
                                      "smallest gripper width commanded", node=False, fuzz=(0.0, 0.03))
    gripper_max: float = safety_limit(GRIPPER_WIDTH_MAX, "m", GRIPPER_WIDTH_MIN, GRIPPER_WIDTH_MAX,
                                      "largest gripper width commanded", node=False, fuzz=(0.05, 0.08))
    approach_braking_fraction: float = 0.5  # tracking plans to stop at this fraction of the max deceleration
    position_gain: float = 6.0  # [1/s] desired velocity = gain * position error near the target

    def __post_init__(self):
        if not 0.001 <= self.cycle_period <= 0.1:
            raise ValueError(f"cycle_period must be in [0.001, 0.1] s, got {self.cycle_period}")
        if not isinstance(self.limits, JointLimits):
            raise ValueError(f"limits must be a JointLimits, got {type(self.limits).__name__}")
        check_limits(self)
        self._check_relations()
        if not 0.05 <= self.approach_braking_fraction <= 0.9:
            raise ValueError(f"approach_braking_fraction must be in [0.05, 0.9], got {self.approach_braking_fraction}")
        if not 0.1 <= self.position_gain <= 0.5 / self.cycle_period:
            raise ValueError(f"position_gain must be in [0.1, 0.5/cycle_period], got {self.position_gain}")

    def _check_relations(self) -> None:
        """What the declared bounds of single limits cannot say: the box and the gripper range are not empty."""
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if not self.workspace_margin < 0.5 * float(np.min(hi - lo)):
            raise ValueError(f"workspace_margin {self.workspace_margin} must leave a non-empty box "
                             f"{self.workspace_min}..{self.workspace_max}")
        if not self.gripper_min < self.gripper_max:
            raise ValueError(f"gripper range [{self.gripper_min}, {self.gripper_max}] must not be empty")

    @property
    def velocity_limit(self) -> np.ndarray:
        """Effective velocity bound: the scaled FR3 velocity and the per-cycle step cap."""
        return np.minimum(self.limits.dq_max, self.max_joint_step / self.cycle_period)

    def stopping_time_bound(self, dq: np.ndarray, ddq: np.ndarray | None = None) -> float:
        """Upper bound [s] on the time the brake policy needs to bring every joint to rest."""
        ddq = np.zeros(N_JOINTS) if ddq is None else ddq
        A, J, dt = self.limits.ddq_max, self.limits.dddq_max, self.cycle_period
        s = np.where(dq != 0, np.sign(dq), np.sign(ddq))
        a_s = np.maximum(ddq * s, 0.0)
        v_peak = np.abs(dq) + a_s**2 / (2 * J) + a_s * dt
        t = (a_s + A) / J + v_peak / A + A / J + 4 * dt
        return float(np.max(t))


@dataclass
class FilterResult:
    command: CommandState
    hits: Limit


class SafetyFilter:
    """Pure function object: ``step(previous_command, target) -> FilterResult``. Holds no state."""

    def __init__(self, config: SafetyConfig | None = None):
        self.config = config or SafetyConfig()
        c = self.config
        self._dt = c.cycle_period
        self._V = c.velocity_limit
        self._A = c.limits.ddq_max
        self._J = c.limits.dddq_max
        self._qmin, self._qmax = c.limits.q_min, c.limits.q_max
        self._box_lo = np.asarray(c.workspace_min, float)
        self._box_hi = np.asarray(c.workspace_max, float)
        self._inner_lo = self._box_lo + c.workspace_margin
        self._inner_hi = self._box_hi - c.workspace_margin
        # tolerance below which a braking joint is put exactly to rest (see _brake)
        self._settle_v = self._J * self._dt**2 / 4
        self._settle_a = self._J * self._dt / 4

    # ---------------------------------------------------------------- public
    def step(self, prev: CommandState, target=None, gripper_target=None, hold: bool = False,
             target_velocity=None) -> FilterResult:
        """Next command from ``prev`` towards joint ``target`` (7,) and gripper width ``gripper_target`` [m].

        ``target_velocity`` (7,) [rad/s], optional: how fast the target itself moves (the slope of the
        interpolated chunk), used as feed-forward so a moving target is tracked without the lag of a
        pure position loop. Ignored if not 7 finite numbers; it only shapes the desired velocity, every
        limit applies as before.

        ``target=None`` or ``hold=True`` brakes to a stop (reason HOLD). Invalid targets brake too
        (reason INVALID_INPUT). Never raises on bad input; raises ValueError only if ``prev`` is not a
        finite state (a programming error, not data).
        """
        self._check_prev(prev)
        hits = Limit.NONE
        gripper, g_hits = self._gripper(prev.gripper, gripper_target)
        hits |= g_hits
        if hold or target is None:
            q, dq, ddq = self._brake_all(prev)
            return FilterResult(CommandState(q, dq, ddq, gripper), hits | Limit.HOLD)
        tgt = self._valid_target(target)
        if tgt is None:
            q, dq, ddq = self._brake_all(prev)
            return FilterResult(CommandState(q, dq, ddq, gripper), hits | Limit.INVALID_INPUT)

        clamped = np.minimum(np.maximum(tgt, self._qmin), self._qmax)
        if np.any(clamped != tgt):
            hits |= Limit.POSITION
        v_ff = self._valid_target(target_velocity) if target_velocity is not None else None
        if v_ff is not None:
            v_ff = np.where(clamped != tgt, 0.0, v_ff)  # no feed-forward past a joint limit
        q, dq, ddq, t_hits = self._track(prev, clamped, v_ff)
        hits |= t_hits
        # one batched FK: the target's TCP, the candidate's, and those half-way and at the end of the
        # candidate's (joint-wise) braking path
        off = self._stop_offset(dq, ddq)
        p_target, p_now, p_half, p_stop, p_prev = fk_position(np.stack([clamped, q, q + 0.5 * off, q + off,
                                                                         prev.q]))
        if np.any(p_target < self._box_lo) or np.any(p_target > self._box_hi):
            q, dq, ddq = self._brake_all(prev)
            return FilterResult(CommandState(q, dq, ddq, gripper), hits | Limit.WORKSPACE)
        if np.linalg.norm(p_now - p_prev) > self.config.max_tcp_speed * self._dt:
            q, dq, ddq = self._brake_all(prev)
            return FilterResult(CommandState(q, dq, ddq, gripper), hits | Limit.TCP_SPEED)
        bad_now = self._box_violation(p_now)
        bad_stop = max(self._box_violation(p_half), self._box_violation(p_stop))
        if bad_now > 0 or bad_stop > 0:
            cur = self._box_violation(fk_position(prev.q))
            if not (cur > 0 and bad_now <= cur and bad_stop <= cur):  # outside already: allow moving back in
                q, dq, ddq = self._brake_all(prev)
                return FilterResult(CommandState(q, dq, ddq, gripper), hits | Limit.WORKSPACE)
        return FilterResult(CommandState(q, dq, ddq, gripper), hits)

    # --------------------------------------------------------------- helpers
    @staticmethod
    def _check_prev(prev: CommandState) -> None:
        for name in ("q", "dq", "ddq"):
            v = getattr(prev, name)
            if not isinstance(v, np.ndarray) or v.shape != (N_JOINTS,) or not np.all(np.isfinite(v)):
                raise ValueError(f"previous command {name} must be 7 finite values, got {v!r}")

    @staticmethod
    def _valid_target(target) -> np.ndarray | None:
        try:
            t = np.asarray(target, dtype=float)
        except (TypeError, ValueError):
            return None
        if t.shape != (N_JOINTS,) or not np.all(np.isfinite(t)):
            return None
        return t

    def _gripper(self, prev: float, target) -> tuple[float, Limit]:
        c = self.config
        if target is None:
            return prev, Limit.NONE
        try:
            g = float(target)
        except (TypeError, ValueError):
            return prev, Limit.GRIPPER
        if not np.isfinite(g):
            return prev, Limit.GRIPPER
        clamped = min(max(g, c.gripper_min), c.gripper_max)
        # a learned width a fraction of a millimetre past the range (a policy trained on an always-open
        # gripper says 0.0802 m) is clamped without being reported as a limit hit
        return clamped, (Limit.GRIPPER if abs(clamped - g) > GRIPPER_REPORT_TOLERANCE else Limit.NONE)

    def _accel_interval(self, dq: np.ndarray, ddq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Admissible next accelerations: jerk, acceleration and velocity-viability bounds."""
        dt, A, J, V = self._dt, self._A, self._J, self._V
        r_hi = V - dq
        r_lo = V + dq
        hi_v = np.where(r_hi >= 0, self._ramp_accel(r_hi), r_hi / dt)
        lo_v = np.where(r_lo >= 0, -self._ramp_accel(r_lo), -r_lo / dt)
        lo = np.maximum(np.maximum(ddq - J * dt, -A), lo_v)
        hi = np.minimum(np.minimum(ddq + J * dt, A), hi_v)
        # Empty only through rounding or an inconsistent previous state: ramp acceleration towards zero,
        # which the viability argument shows is admissible.
        empty = lo > hi
        if np.any(empty):
            safe = ddq - np.sign(ddq) * np.minimum(np.abs(ddq), J * dt)
            lo = np.where(empty, safe, lo)
            hi = np.where(empty, safe, hi)
        return lo, hi

    def _ramp_accel(self, dv: np.ndarray) -> np.ndarray:
        """Largest b >= 0 with b*dt + b^2/(2J) <= dv: the acceleration after which ramping back to zero
        at the jerk limit changes the velocity by at most dv (>= 0) in total."""
        dt, J = self._dt, self._J
        return J * (np.sqrt(dt * dt + 2 * np.maximum(dv, 0.0) / J) - dt)

    def _stop_offset(self, dq: np.ndarray, ddq: np.ndarray) -> np.ndarray:
        """Signed upper bound on how far each joint travels while the brake policy stops it."""
        dt, A, J = self._dt, self._A, self._J
        s = np.where(dq != 0, np.sign(dq), np.sign(ddq))
        a_s = np.maximum(ddq * s, 0.0)  # acceleration still pushing along the motion
        v_peak = np.abs(dq) + a_s**2 / (2 * J) + a_s * dt
        t_ramp = (a_s + A) / J + dt
        dist = v_peak * (t_ramp + A / J + 3 * dt) + v_peak**2 / (2 * A)
        return s * dist

    def _position_ok(self, q_prev: np.ndarray, q: np.ndarray, dq: np.ndarray, ddq: np.ndarray) -> np.ndarray:
        """Per joint: braking from (q, dq, ddq) stops inside the range. A joint that starts outside the
        range (e.g. enabled there) may move, but not further out."""
        off = self._stop_offset(dq, ddq)
        slack = self._J * self._dt**3 + self._A * self._dt**2  # backward drift of the final settle
        hi = q + np.maximum(off, 0) + slack
        lo = q + np.minimum(off, 0) - slack
        return (lo >= np.minimum(self._qmin, q_prev - slack)) & (hi <= np.maximum(self._qmax, q_prev + slack))

    def _brake_accel(self, dq: np.ndarray, ddq: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        # decelerate so that ramping the deceleration back to zero ends at zero velocity (no chatter)
        desired = -np.sign(dq) * np.minimum(self._A, self._ramp_accel(np.abs(dq)))
        a = np.clip(desired, lo, hi)
        a_settle = -dq / self._dt  # reach exactly zero velocity next cycle
        settle = ((np.abs(dq) <= self._settle_v) & (np.abs(ddq) <= self._settle_a)
                  & (a_settle >= lo) & (a_settle <= hi))
        return np.where(settle, a_settle, a)

    def _integrate(self, prev: CommandState, a: np.ndarray):
        dq = prev.dq + a * self._dt
        dq = np.where(np.abs(dq) < 1e-15, 0.0, dq)
        return prev.q + dq * self._dt, dq, a

    def _brake_all(self, prev: CommandState):
        lo, hi = self._accel_interval(prev.dq, prev.ddq)
        return self._integrate(prev, self._brake_accel(prev.dq, prev.ddq, lo, hi))

    def _track(self, prev: CommandState, target: np.ndarray, v_ff: np.ndarray | None = None):
        c, dt, A, J, V = self.config, self._dt, self._A, self._J, self._V
        dq, ddq = prev.dq, prev.ddq
        e = target - prev.q
        # desired velocity: linear near the target, braking-limited further away, capped by V
        a_b = c.approach_braking_fraction * A
        v_des = np.sign(e) * np.minimum(np.minimum(V, np.sqrt(2 * a_b * np.abs(e))), c.position_gain * np.abs(e))
        if v_ff is not None:  # follow a moving target: its own velocity plus the correction
            v_des = np.minimum(np.maximum(v_des + v_ff, -V), V)
        hits = Limit.NONE
        # the TCP speed this desired velocity would give, from one step of it
        p0, p1 = fk_position(np.stack([prev.q, prev.q + v_des * dt]))
        tcp_speed = float(np.linalg.norm(p1 - p0)) / dt
        if tcp_speed > TCP_SPEED_SHARE * c.max_tcp_speed:
            v_des = v_des * (TCP_SPEED_SHARE * c.max_tcp_speed / tcp_speed)
            hits |= Limit.TCP_SPEED
        # velocity the joint will reach anyway when its acceleration is ramped to zero (jerk lag)
        v_pred = dq + ddq * np.abs(ddq) / (2 * J)
        t_v = max(A.max() / J.min(), 2 * dt)
        a_des = (v_des - v_pred) / t_v
        lo, hi = self._accel_interval(dq, ddq)
        a = np.clip(a_des, lo, hi)
        if np.any(np.abs(a_des) > A):
            hits |= Limit.ACCELERATION
        if np.any(np.abs(a_des - ddq) > J * dt):
            hits |= Limit.JERK
        if np.any(np.abs(v_des) >= c.limits.dq_max):
            hits |= Limit.VELOCITY
        if np.any(np.abs(v_des) >= c.max_joint_step / dt):
            hits |= Limit.STEP
        q_new, dq_new, a_new = self._integrate(prev, a)
        ok = self._position_ok(prev.q, q_new, dq_new, a_new)
        if not np.all(ok):
            hits |= Limit.POSITION
            a_brake = self._brake_accel(dq, ddq, lo, hi)
            a = np.where(ok, a, a_brake)
            q_new, dq_new, a_new = self._integrate(prev, a)
        return q_new, dq_new, a_new, hits

    def _box_violation(self, p: np.ndarray) -> float:
        return float(np.sum(np.maximum(self._inner_lo - p, 0.0) + np.maximum(p - self._inner_hi, 0.0)))

    def in_box(self, q: np.ndarray) -> bool:
        """Whether the TCP at joint positions ``q`` lies inside the (unshrunk) workspace box."""
        p = fk_position(q)
        return bool(np.all(p >= self._box_lo) and np.all(p <= self._box_hi))


def check_command(config: SafetyConfig, prev: CommandState, cmd: CommandState, tol: float = 1e-9) -> list[str]:
    """Independent check used by tests and the fuzzer: which limits ``cmd`` (following ``prev``) breaks."""
    dt, lim = config.cycle_period, config.limits
    v = []
    if not (np.all(np.isfinite(cmd.q)) and np.all(np.isfinite(cmd.dq)) and np.all(np.isfinite(cmd.ddq))):
        return ["non_finite"]
    dq = (cmd.q - prev.q) / dt
    ddq = (dq - prev.dq) / dt
    jerk = (ddq - prev.ddq) / dt
    if np.any(cmd.q < lim.q_min - tol) or np.any(cmd.q > lim.q_max + tol):
        v.append("position")
    if np.any(np.abs(dq) > config.velocity_limit * (1 + 1e-9) + tol):
        v.append("velocity")
    if np.any(np.abs(ddq) > lim.ddq_max * (1 + 1e-6) + 1e-6):
        v.append("acceleration")
    if np.any(np.abs(jerk) > lim.dddq_max * (1 + 1e-6) + 1e-3):
        v.append("jerk")
    if np.any(np.abs(cmd.q - prev.q) > config.max_joint_step + tol):
        v.append("step")
    if np.linalg.norm(fk_position(cmd.q) - fk_position(prev.q)) > config.max_tcp_speed * dt * (1 + 1e-9) + tol:
        v.append("tcp_speed")
    p = fk_position(cmd.q)
    if np.any(p < np.asarray(config.workspace_min) - 1e-9) or np.any(p > np.asarray(config.workspace_max) + 1e-9):
        v.append("workspace")
    if not (np.isnan(cmd.gripper) or config.gripper_min <= cmd.gripper <= config.gripper_max):
        v.append("gripper")
    return v
