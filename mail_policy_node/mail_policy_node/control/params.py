"""The Franka controller's parameters, declared once: name, default, unit and meaning, and how they
become the core's configuration (``ControllerConfig``, ``FrankyArmConfig``, ``DynamicsBudget``).

The ROS node declares exactly these (read-only, with these descriptions and ranges: `ros2 param
describe` shows them), profiles' YAML files override them, and scripts and tests that need the node's
configuration without ROS build it with ``controller_setup`` (no rclpy here). Defaults are safe: a dry
run with no robot address at the lowest runbook stage. A default the core's configuration already holds
is taken from it (``default_of``). Each range lies inside what the core accepts (its ``__post_init__``
checks), so the node refuses a value at declaration that the core would refuse anyway; where the core's
bound is open (``(0, 1]``) the range starts at a small positive value.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..parameters import Parameter, default_of
from ..spec import FR3_JOINT_NAMES, GRIPPER_NAME
from .chunks import SchedulerConfig
from .controller import ControllerConfig
from .franky_arm import DEFAULT_COLLISION_FORCE, DEFAULT_COLLISION_TORQUE, FrankyArmConfig
from .gripper import GRIPPER_MODES, GripperConfig
from .limits import DynamicsBudget, dynamics_budget
from .safety import SafetyConfig
from .watchdog import WatchdogConfig

BLENDS = ("replace", "crossfade", "temporal_ensemble")  # SchedulerConfig.blend

CONTROLLER_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("robot_ip", default_of(FrankyArmConfig, "host"),
              "FR3 (FCI) address; empty: no robot, a stand-in arm echoes the commands (dry run only)"),
    Parameter("dry_run", default_of(FrankyArmConfig, "dry_run"),
              "compute and publish commands, never move the arm; with robot_ip, read the real arm"),
    Parameter("realtime", default_of(FrankyArmConfig, "realtime"),
              "franky's real-time check: true refuses to run without a PREEMPT_RT kernel"),
    Parameter("auto_enable", False, "enable on the first chunk; simulators on loopback only"),
    Parameter("autostart", True, "configure (connect) and activate at start; false: a managed node that waits "
              "unconfigured for its lifecycle transitions (ros2 lifecycle set, a lifecycle manager)"),
    # the core: a cycle period of at least 0.001 s, and its position gain (6 /s) at most half the rate
    Parameter("control_rate_hz", 100.0, "[Hz] control loop rate", 2 * default_of(SafetyConfig, "position_gain"),
              1000.0),
    Parameter("status_rate_hz", 10.0, "[Hz] ControllerStatus rate", 0.1, 100.0),
    Parameter("joint_state_rate_hz", 100.0, "[Hz] /joint_states rate (at most one per control cycle)", 1.0, 1000.0),
    Parameter("relative_dynamics_factor", 0.1, "the runbook's stage dial (0.1, 0.3, 0.6, 1.0): scales every "
              "velocity, acceleration and jerk cap", 0.01, 1.0),
    Parameter("velocity_scale", 0.625, "velocity caps at factor 1 as a fraction of the FR3 table", 0.01, 1.0),
    Parameter("acceleration_scale", 0.375, "acceleration caps at factor 1 as a fraction of the FR3 table", 0.01, 1.0),
    Parameter("jerk_scale", 0.125, "jerk caps at factor 1 as a fraction of the FR3 table", 0.01, 1.0),
    Parameter("position_margin", default_of(dynamics_budget, "position_margin"),
              "[rad] kept from each end of the FR3's rectangular joint range", 0.0, 0.3),
    Parameter("max_joint_step", default_of(SafetyConfig, "max_joint_step"),
              "[rad] largest change of any joint per control cycle", 0.001, 0.5),
    Parameter("workspace_min", list(default_of(SafetyConfig, "workspace_min")),
              "[m] lower corner of the TCP box, base frame"),
    Parameter("workspace_max", list(default_of(SafetyConfig, "workspace_max")),
              "[m] upper corner of the TCP box, base frame"),
    Parameter("max_tcp_speed", default_of(SafetyConfig, "max_tcp_speed"),
              "[m/s] Cartesian speed of the TCP (the FR3's own limit is 3)", 0.01, 3.0),
    Parameter("max_start_distance", default_of(ControllerConfig, "max_start_distance"),
              "[rad] a chunk whose first action is further from the arm is refused", 0.01, 1.0),
    Parameter("max_clock_offset", default_of(SchedulerConfig, "max_clock_offset"),
              "[s] a chunk stamped later than this host's clock plus this is refused", 0.0, 1.0),
    Parameter("watchdog_timeout", default_of(WatchdogConfig, "timeout"),
              "[s] without a fresh chunk the arm holds", 0.01, 10.0),
    Parameter("blend", "crossfade", "how a new chunk takes over", choices=BLENDS),
    Parameter("crossfade_duration", default_of(SchedulerConfig, "crossfade_duration"), "[s] of a crossfade",
              0.01, 5.0),
    Parameter("max_tracking_error", default_of(ControllerConfig, "max_tracking_error"),
              "[rad] measured vs commanded beyond this: ERROR (0 disables)", 0.0, 1.0),
    Parameter("use_gripper", default_of(FrankyArmConfig, "use_gripper"),
              "the Franka Hand is required (the node does not start without it)"),
    Parameter("gripper_mode", default_of(GripperConfig, "mode"),
              "binary: close = grasp, open = move; width: a move per width change", choices=GRIPPER_MODES),
    Parameter("gripper_force", default_of(GripperConfig, "grasp_force"), "[N] held on a grasped object", 1.0, 70.0),
    Parameter("gripper_speed", default_of(GripperConfig, "speed"), "[m/s] finger speed", 0.001, 0.1),
    # the core: close_below + its 0.01 m hysteresis below the Hand's 0.08 m
    Parameter("gripper_close_below", default_of(GripperConfig, "close_below"),
              "[m] binary mode: a commanded width below this closes", 0.001, 0.065),
    Parameter("collision_torque", list(DEFAULT_COLLISION_TORQUE), "[Nm] per joint: a reflex stops the arm above these"),
    Parameter("collision_force", list(DEFAULT_COLLISION_FORCE),
              "[N, N, N, Nm, Nm, Nm] at the end effector: reflex above"),
    Parameter("load_mass", default_of(FrankyArmConfig, "load_mass"),
              "[kg] payload beyond the end effector configured in Desk (the FR3 carries 3)", 0.0, 3.0),
    Parameter("load_com", list(default_of(FrankyArmConfig, "load_com")), "[m] payload centre of mass, flange frame"),
    Parameter("load_inertia", list(default_of(FrankyArmConfig, "load_inertia")),
              "[kg m^2] payload inertia, column-major 3x3"),
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


def full_stage_safety() -> SafetyConfig:
    """The safety filter at the runbook's last stage (relative_dynamics_factor 1) with every other
    parameter at its default: what the `sim` profile runs (its YAML sets these values; a test keeps the
    two equal), the most a real profile allows, and what the scripted experts' demonstrations stay within
    (sim.experts.ExpertLimits)."""
    return controller_setup({"relative_dynamics_factor": 1.0}).controller.safety


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
