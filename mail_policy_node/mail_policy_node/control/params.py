"""The Franka controller's parameters, declared once: name, default, unit and meaning, and how they
become the core's configuration (``ControllerConfig``, ``FrankyArmConfig``, ``DynamicsBudget``).

The ROS node declares exactly these (read-only, with these descriptions: `ros2 param describe` shows
them), profiles' YAML files override them, and scripts and tests that need the node's configuration
without ROS build it with ``controller_setup`` (no rclpy here). Defaults are safe: a dry run with no
robot address at the lowest runbook stage.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..spec import FR3_JOINT_NAMES, GRIPPER_NAME
from .chunks import SchedulerConfig
from .controller import ControllerConfig
from .franky_arm import DEFAULT_COLLISION_FORCE, DEFAULT_COLLISION_TORQUE, FrankyArmConfig
from .gripper import GripperConfig
from .limits import DynamicsBudget, dynamics_budget
from .safety import SafetyConfig
from .watchdog import WatchdogConfig


@dataclass(frozen=True)
class Parameter:
    name: str
    default: object
    description: str


CONTROLLER_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("robot_ip", "", "FR3 (FCI) address; empty: no robot, a stand-in arm echoes the commands (dry run only)"),
    Parameter("dry_run", True, "compute and publish commands, never move the arm; with robot_ip, read the real arm"),
    Parameter("realtime", True, "franky's real-time check: true refuses to run without a PREEMPT_RT kernel"),
    Parameter("auto_enable", False, "enable on the first chunk; simulators on loopback only"),
    Parameter("control_rate_hz", 100.0, "control loop rate [Hz]"),
    Parameter("status_rate_hz", 10.0, "ControllerStatus rate [Hz]"),
    Parameter("joint_state_rate_hz", 100.0, "/joint_states rate [Hz]"),
    Parameter("relative_dynamics_factor", 0.1, "the runbook's stage dial (0.1, 0.3, 0.6, 1.0): scales every "
              "velocity, acceleration and jerk cap"),
    Parameter("velocity_scale", 0.625, "velocity caps at factor 1 as a fraction of the FR3 table"),
    Parameter("acceleration_scale", 0.375, "acceleration caps at factor 1 as a fraction of the FR3 table"),
    Parameter("jerk_scale", 0.125, "jerk caps at factor 1 as a fraction of the FR3 table"),
    Parameter("position_margin", 0.05, "[rad] kept from each end of the FR3's rectangular joint range"),
    Parameter("max_joint_step", 0.05, "[rad] largest change of any joint per control cycle"),
    Parameter("workspace_min", [0.15, -0.6, 0.05], "[m] lower corner of the TCP box, base frame"),
    Parameter("workspace_max", [0.85, 0.6, 1.0], "[m] upper corner of the TCP box, base frame"),
    Parameter("max_tcp_speed", 1.0, "[m/s] Cartesian speed of the TCP"),
    Parameter("max_start_distance", 0.3, "[rad] a chunk whose first action is further from the arm is refused"),
    Parameter("max_clock_offset", 0.05, "[s] a chunk stamped later than this host's clock plus this is refused"),
    Parameter("watchdog_timeout", 0.5, "[s] without a fresh chunk the arm holds"),
    Parameter("blend", "crossfade", "replace | crossfade | temporal_ensemble: how a new chunk takes over"),
    Parameter("crossfade_duration", 0.1, "[s] of a crossfade"),
    Parameter("max_tracking_error", 0.15, "[rad] measured vs commanded beyond this: ERROR (0 disables)"),
    Parameter("use_gripper", True, "the Franka Hand is required (the node does not start without it)"),
    Parameter("gripper_mode", "binary", "binary: close = grasp, open = move; width: a move per width change"),
    Parameter("gripper_force", 20.0, "[N] held on a grasped object"),
    Parameter("gripper_speed", 0.05, "[m/s] finger speed"),
    Parameter("gripper_close_below", 0.04, "[m] binary mode: a commanded width below this closes"),
    Parameter("collision_torque", list(DEFAULT_COLLISION_TORQUE), "[Nm] per joint: a reflex stops the arm above these"),
    Parameter("collision_force", list(DEFAULT_COLLISION_FORCE), "[N, N, N, Nm, Nm, Nm] at the end effector: reflex above"),
    Parameter("load_mass", 0.0, "[kg] payload beyond the end effector configured in Desk"),
    Parameter("load_com", [0.0, 0.0, 0.0], "[m] payload centre of mass, flange frame"),
    Parameter("load_inertia", [0.0] * 9, "[kg m^2] payload inertia, column-major 3x3"),
    Parameter("estop_latch_file", "", "file that keeps an e-stop across restarts until released; empty: none"),
    Parameter("dry_run_start", [0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785], "[rad] the stand-in arm's start joints"),
)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def controller_defaults() -> dict:
    return {p.name: p.default for p in CONTROLLER_PARAMETERS}


@dataclass(frozen=True)
class ControllerSetup:
    controller: ControllerConfig
    arm: FrankyArmConfig
    budget: DynamicsBudget


def controller_setup(params: dict) -> ControllerSetup:
    """The core's configuration from parameter values (missing ones take the defaults). Raises
    ValueError naming the bad value."""
    unknown = set(params) - {p.name for p in CONTROLLER_PARAMETERS}
    if unknown:
        raise ValueError(f"unknown controller parameters {sorted(unknown)}")
    p = {**controller_defaults(), **params}
    if p["auto_enable"] and p["robot_ip"] and not is_loopback(p["robot_ip"]):
        raise ValueError(f"auto_enable is for simulators on loopback only, not for a robot at {p['robot_ip']}: "
                         "enable explicitly with the ~/enable service")
    budget = dynamics_budget(p["relative_dynamics_factor"], p["velocity_scale"], p["acceleration_scale"],
                             p["jerk_scale"], p["position_margin"])
    controller = ControllerConfig(
        safety=SafetyConfig(cycle_period=1.0 / p["control_rate_hz"], limits=budget.filter,
                            max_joint_step=p["max_joint_step"], workspace_min=tuple(p["workspace_min"]),
                            workspace_max=tuple(p["workspace_max"]), max_tcp_speed=p["max_tcp_speed"]),
        scheduler=SchedulerConfig(names=FR3_JOINT_NAMES + (GRIPPER_NAME,), blend=p["blend"],
                                  crossfade_duration=p["crossfade_duration"], max_clock_offset=p["max_clock_offset"]),
        watchdog=WatchdogConfig(timeout=p["watchdog_timeout"]),
        dry_run=p["dry_run"], max_tracking_error=p["max_tracking_error"],
        max_start_distance=p["max_start_distance"])
    arm = FrankyArmConfig(
        host=p["robot_ip"], dry_run=p["dry_run"], realtime=p["realtime"], budget=budget,
        use_gripper=p["use_gripper"],
        gripper=GripperConfig(mode=p["gripper_mode"], grasp_force=p["gripper_force"], speed=p["gripper_speed"],
                              close_below=p["gripper_close_below"]),
        collision_torque=tuple(p["collision_torque"]), collision_force=tuple(p["collision_force"]),
        load_mass=p["load_mass"], load_com=tuple(p["load_com"]), load_inertia=tuple(p["load_inertia"]))
    return ControllerSetup(controller, arm, budget)
