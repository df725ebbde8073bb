"""Franka Research 3 joint limits and the scaled limits the safety filter enforces.

Sources (checked 2026-11):
- Position range: FR3 table of the Franka control-interface documentation
  (frankaemika/docs `source/control-parameters-joint-fr3.csv`); identical to the joint ranges in the
  FR3 MJCF shipped with franky-sim (`franky_sim/assets/fr3.xml`).
- "Rectangular" range: the same documentation's box of positions and velocities inside which the
  FR3's position-dependent velocity limits are always met
  (`control-parameters-joint-fr3-rectangular.csv`). The FR3 lowers its velocity limit near the ends of
  each joint's range; staying inside this box with these velocities is the conservative reading.
- Velocity / acceleration / jerk: franky-control 2.0.0's built-in maxima (the Panda's, not the FR3's:
  read back from ``robot.joint_*_limit.max``) combined element-wise (minimum) with the FR3
  documentation table (10 rad/s^2, 5000 rad/s^3) and, for velocity, the rectangular table. We take the
  smaller of every pair so neither franky's planner nor the robot's own checks can be the first to object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .safety_limits import check_limits, limit_of, safety_limit

N_JOINTS = 7

FR3_Q_MIN = np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159])
FR3_Q_MAX = np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159])
FR3_RECT_Q_MIN = np.array([-2.3093, -1.5133, -2.4937, -2.7478, -2.4800, 0.8521, -2.6895])
FR3_RECT_Q_MAX = np.array([2.3093, 1.5133, 2.4937, -0.4461, 2.4800, 4.2094, 2.6895])
FR3_RECT_DQ_MAX = np.array([2.0, 1.0, 1.5, 1.25, 3.0, 1.5, 3.0])

FRANKY_DQ_MAX = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
FRANKY_DDQ_MAX = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])
FRANKY_DDDQ_MAX = np.array([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0])
FR3_DOC_DDQ_MAX = np.full(N_JOINTS, 10.0)
FR3_DOC_DDDQ_MAX = np.full(N_JOINTS, 5000.0)

# What "100 %" means for the safety filter (before its scale factors).
FR3_DQ_MAX = np.minimum(FRANKY_DQ_MAX, FR3_RECT_DQ_MAX)  # [2.0, 1.0, 1.5, 1.25, 2.61, 1.5, 2.61]
FR3_DDQ_MAX = np.minimum(FRANKY_DDQ_MAX, FR3_DOC_DDQ_MAX)  # [10, 7.5, 10, 10, 10, 10, 10]
FR3_DDDQ_MAX = np.minimum(FRANKY_DDDQ_MAX, FR3_DOC_DDDQ_MAX)  # [5000, 3750, 5000, ...]

GRIPPER_WIDTH_MIN = 0.0  # [m] Franka Hand closed
GRIPPER_WIDTH_MAX = 0.08  # [m] Franka Hand fully open


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, all arrays of shape (7,). ``q_min``/``q_max`` already include any margin."""

    q_min: np.ndarray
    q_max: np.ndarray
    dq_max: np.ndarray
    ddq_max: np.ndarray
    dddq_max: np.ndarray

    def __post_init__(self):
        for name in ("q_min", "q_max", "dq_max", "ddq_max", "dddq_max"):
            value = np.asarray(getattr(self, name), dtype=float)
            if value.shape != (N_JOINTS,) or not np.all(np.isfinite(value)):
                raise ValueError(f"JointLimits.{name} must be 7 finite numbers, got {value!r}")
            object.__setattr__(self, name, value)
        if not np.all(self.q_min < self.q_max):
            raise ValueError(f"JointLimits: q_min {self.q_min} must be below q_max {self.q_max}")
        for name in ("dq_max", "ddq_max", "dddq_max"):
            if not np.all(getattr(self, name) > 0):
                raise ValueError(f"JointLimits.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class BudgetConfig:
    """The controller's dynamics caps as its node sets them: what "full speed" is as a fraction of the
    FR3 table, the runbook's stage dial and the margin kept from each joint limit. Each is a safety
    limit declared once (``safety_limit``, control/safety_limits.py); ``budget()`` derives the
    ``DynamicsBudget`` from them."""

    relative_dynamics_factor: float = safety_limit(
        0.1, "", 0.01, 1.0, "the runbook's stage dial (0.1, 0.3, 0.6, 1.0): scales every velocity, acceleration "
        "and jerk cap")
    velocity_scale: float = safety_limit(0.625, "", 0.01, 1.0, "velocity caps at factor 1 as a fraction of the "
                                         "FR3 table")
    acceleration_scale: float = safety_limit(0.375, "", 0.01, 1.0, "acceleration caps at factor 1 as a fraction "
                                             "of the FR3 table")
    jerk_scale: float = safety_limit(0.125, "", 0.01, 1.0, "jerk caps at factor 1 as a fraction of the FR3 table")
    position_margin: float = safety_limit(0.05, "rad", 0.0, 0.3, "kept from each end of the FR3's rectangular "
                                          "joint range")

    def __post_init__(self):
        check_limits(self)

    def budget(self) -> DynamicsBudget:
        return dynamics_budget(self.relative_dynamics_factor, self.velocity_scale, self.acceleration_scale,
                               self.jerk_scale, self.position_margin)


def fr3_limits(
    position_range: str = "rectangular",
    position_margin: float = BudgetConfig.position_margin,
    velocity_scale: float = 0.5,
    acceleration_scale: float = 0.3,
    jerk_scale: float = 0.1,
) -> JointLimits:
    """FR3 limits shrunk by ``position_margin`` [rad] on each side and scaled by factors in (0, 1].

    ``position_range``: "rectangular" (default; conservative, see module docstring) or "full".
    """
    for name, value in (("velocity_scale", velocity_scale), ("acceleration_scale", acceleration_scale),
                        ("jerk_scale", jerk_scale)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    limit_of(BudgetConfig, "position_margin").check(position_margin)  # the node's bounds, declared once
    if position_range == "rectangular":
        lo, hi = FR3_RECT_Q_MIN, FR3_RECT_Q_MAX
    elif position_range == "full":
        lo, hi = FR3_Q_MIN, FR3_Q_MAX
    else:
        raise ValueError(f"position_range must be 'rectangular' or 'full', got {position_range!r}")
    return JointLimits(
        q_min=lo + position_margin,
        q_max=hi - position_margin,
        dq_max=FR3_DQ_MAX * velocity_scale,
        ddq_max=FR3_DDQ_MAX * acceleration_scale,
        dddq_max=FR3_DDDQ_MAX * jerk_scale,
    )


TRACKING_SHARE = 0.2  # of each cap kept for franky to track the filter's commands (and the position feedback)


@dataclass(frozen=True)
class DynamicsBudget:
    """Every velocity, acceleration and jerk bound of the controller, derived in one place.

    ``caps``: what franky is told (its joint velocity/acceleration/jerk limits, with its own dynamics
    factor at 1). franky plans every 1 ms command of the stream the arm receives within these, so they
    bound what the FR3 sees, whatever the 100 Hz loop's jitter. ``filter``: the safety filter plans its
    100 Hz commands within a share of the caps (``1 - TRACKING_SHARE``), leaving franky room to follow
    them and to add ``max_correction``, the bounded position feedback streamed on top of the filter's
    velocity. The two share one position range."""

    caps: JointLimits
    filter: JointLimits
    max_correction: np.ndarray  # (7,) [rad/s]


def dynamics_budget(relative_dynamics_factor: float = 1.0, velocity_scale: float = 0.5,
                    acceleration_scale: float = 0.3, jerk_scale: float = 0.1,
                    position_margin: float = BudgetConfig.position_margin,
                    position_range: str = "rectangular") -> DynamicsBudget:
    """Caps = the FR3 table (``FR3_DQ_MAX`` ...) x each scale x ``relative_dynamics_factor``: the scales set
    what "full speed" means for a profile, the factor is the dial of the runbook's stages (0.1 ... 1)."""
    f = relative_dynamics_factor
    if not 0.0 < f <= 1.0:
        raise ValueError(f"relative_dynamics_factor must be in (0, 1], got {f}")
    caps = fr3_limits(position_range, position_margin, velocity_scale * f, acceleration_scale * f, jerk_scale * f)
    keep = 1.0 - TRACKING_SHARE
    inner = JointLimits(caps.q_min, caps.q_max, caps.dq_max * keep, caps.ddq_max * keep, caps.dddq_max * keep)
    return DynamicsBudget(caps, inner, caps.dq_max * TRACKING_SHARE)


# ======================================================================================================
# What the FR3 itself enforces on a joint motion generator (its "necessary conditions"), for the strict
# FR3 emulator (sim/fr3_emulator.py). Not used by the safety filter above.
#
# Sources: Franka's control-interface documentation, "Robot and interface specifications" and "Limits
# for Franka Research 3" (joint range, velocity 2.62 x4 / 5.26 / 4.18 / 5.26 rad/s, acceleration 10 and
# jerk 5000 on every joint), and libfranka's FR3 include/franka/rate_limiting.h (2023 on),
# computeUpperLimitsJointVelocity / computeLowerLimitsJointVelocity, for the position-dependent velocity
# bound (libfranka 0.21 also reads these parameters from the robot's URDF, JointVelocityLimitsConfig):
# v_up(q) = min(v_max, max(0, -offset + sqrt(max(0, k * (q_hi - q))))) and its mirror image
# v_lo(q) = max(-v_max, min(0, offset - sqrt(max(0, k * (q - q_lo))))), with k = 2 x the joint's
# deceleration and q_lo/q_hi the URDF range (slightly wider than the documented range). libfranka's own
# helpers return these minus kLimitEps so that a client saturating to them stays inside; the functions
# here return the bounds themselves.
# ======================================================================================================

FR3_HW_Q_MIN = FR3_Q_MIN
FR3_HW_Q_MAX = FR3_Q_MAX
FR3_HW_DQ_MAX = np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26])
FR3_HW_DDQ_MAX = FR3_DOC_DDQ_MAX
FR3_HW_DDDQ_MAX = FR3_DOC_DDDQ_MAX
FR3_LIMIT_EPS = 1e-3  # libfranka's kLimitEps

# Parameters of the position-dependent velocity bound (rate_limiting.h, FR3).
FR3_VBOUND_Q_LO = np.array([-2.7501, -1.7918, -2.9065, -3.0481, -2.8101, 0.54092, -3.0196])
FR3_VBOUND_Q_HI = np.array([2.7501, 1.7918, 2.9065, -0.1458, 2.8101, 4.5205, 3.0196])
FR3_VBOUND_OFFSET = np.array([0.30, 0.20, 0.20, 0.30, 0.35, 0.35, 0.35])  # [rad/s]
FR3_VBOUND_GAIN = np.array([12.0, 5.17, 7.0, 8.0, 34.0, 11.0, 34.0])  # [rad/s^2] 2 x deceleration


def fr3_velocity_bounds(q) -> tuple[np.ndarray, np.ndarray]:
    """The FR3's joint velocity bounds (lower, upper) [rad/s] at joint positions ``q`` (..., 7): the table
    maxima ``FR3_HW_DQ_MAX`` away from the ends of the range, shrinking to 0 towards each end."""
    q = np.asarray(q, dtype=float)
    room_up = np.sqrt(np.maximum(0.0, FR3_VBOUND_GAIN * (FR3_VBOUND_Q_HI - q)))
    room_down = np.sqrt(np.maximum(0.0, FR3_VBOUND_GAIN * (q - FR3_VBOUND_Q_LO)))
    upper = np.minimum(FR3_HW_DQ_MAX, np.maximum(0.0, room_up - FR3_VBOUND_OFFSET))
    lower = np.maximum(-FR3_HW_DQ_MAX, np.minimum(0.0, FR3_VBOUND_OFFSET - room_down))
    return lower, upper
