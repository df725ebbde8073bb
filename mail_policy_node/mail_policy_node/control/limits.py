"""Franka Research 3 joint limits and the scaled limits the safety filter enforces.

Sources (checked 2026-11):
- Position range: FR3 table of the Franka control-interface documentation
  (frankaemika/docs `source/control-parameters-joint-fr3.csv`); identical to the joint ranges in the
  FR3 MJCF shipped with franky-sim (`franky_sim/assets/fr3.xml`).
- "Rectangular" range: the same documentation's box of positions and velocities inside which the
  FR3's position-dependent velocity limits are always met
  (`control-parameters-joint-fr3-rectangular.csv`). The FR3 lowers its velocity limit near the ends of
  each joint's range; staying inside this box with these velocities is the conservative reading.
- Velocity / acceleration / jerk: franky-control 2.0.0's built-in maxima (see shared ENVIRONMENT.md)
  combined element-wise (minimum) with the FR3 documentation table (10 rad/s^2, 5000 rad/s^3) and,
  for velocity, the rectangular table. We take the smaller of every pair so neither franky's planner
  nor the robot's own checks can be the first to object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def fr3_limits(
    position_range: str = "rectangular",
    position_margin: float = 0.05,
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
    if not 0.0 <= position_margin <= 0.3:
        raise ValueError(f"position_margin must be in [0, 0.3] rad, got {position_margin}")
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
