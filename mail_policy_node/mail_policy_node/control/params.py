"""The Franka controller's parameters, declared once: name, default, unit and meaning, and how they
become the core's configuration (``ControllerConfig``, ``FrankyArmConfig``, ``DynamicsBudget``).

The ROS node declares exactly these (read-only, with these descriptions and ranges: `ros2 param
describe` shows them), profiles' YAML files override them, and scripts and tests that need the node's
configuration without ROS build it with ``controller_setup`` (no rclpy here). Defaults are safe: a dry
run with no robot address at the lowest runbook stage.

The safety limits are not written here: each is declared on the field of the configuration that holds
it (``safety_limit``, control/safety_limits.py), and this table takes one entry per declaration
(``limit_configs``), with the declaration's range, which is the range the configuration checks. The
other entries take a default the core's configuration already holds from it (``default_of``); their
ranges lie inside what the core accepts, so the node refuses a value at declaration that the core would
refuse anyway; where the core's bound is open (``(0, 1]``) the range starts at a small positive value.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..parameters import Parameter, default_of, without_ros_node_parameters
from ..spec import FR3_JOINT_NAMES, GRIPPER_NAME
from .chunks import SchedulerConfig
from .controller import ControllerConfig
from .franky_arm import DEFAULT_COLLISION_FORCE, DEFAULT_COLLISION_TORQUE, FrankyArmConfig
from .gripper import GRIPPER_MODES, GripperConfig
from .limits import BudgetConfig, DynamicsBudget
from .safety import SafetyConfig
from .safety_limits import limit_values, limits_markdown, node_parameters
from .watchdog import WatchdogConfig

BLENDS = ("replace", "crossfade", "temporal_ensemble")  # SchedulerConfig.blend

# The node's own settings, before the safety limits in the table.
_NODE_SETTINGS: tuple[Parameter, ...] = (
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
)

# After the safety limits: chunk timing and blending, the gripper, franky's reflexes and payload.
_ARM_SETTINGS: tuple[Parameter, ...] = (
    Parameter("max_clock_offset", default_of(SchedulerConfig, "max_clock_offset"),
              "[s] a chunk stamped later than this host's clock plus this is refused", 0.0, 1.0),
    Parameter("blend", "crossfade", "how a new chunk takes over", choices=BLENDS),
    Parameter("crossfade_duration", default_of(SchedulerConfig, "crossfade_duration"), "[s] of a crossfade",
              0.01, 5.0),
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


def limit_configs() -> tuple[type, ...]:
    """The configurations whose declared safety limits (control/safety_limits.py) are node parameters,
    in the table's order. Looked up when called, so a test that extends one sees it everywhere."""
    return (BudgetConfig, SafetyConfig, ControllerConfig, WatchdogConfig)


def controller_parameters() -> tuple[Parameter, ...]:
    """The node's table: its own settings, one entry per declared safety limit (name, default, range and
    description from the declaration), then the arm's settings."""
    limits = tuple(p for cls in limit_configs() for p in node_parameters(cls))
    return _NODE_SETTINGS + limits + _ARM_SETTINGS


def fuzzed_configs() -> tuple[type, ...]:
    """The configurations whose declared limits scripts/fuzz_safety.py draws: the safety filter's."""
    return (BudgetConfig, SafetyConfig)


def safety_limits_markdown() -> str:
    """docs/safety_limits.md: every safety limit the controller declares (scripts/safety_limits_doc.py)."""
    return limits_markdown(limit_configs(), fuzzed_configs())


CONTROLLER_PARAMETERS: tuple[Parameter, ...] = controller_parameters()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def controller_defaults() -> dict:
    return {p.name: p.default for p in controller_parameters()}


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
    ValueError naming the bad value. Each declared safety limit goes to its field by its declaration
    (``limit_values``), so a new one needs nothing here."""
    params = without_ros_node_parameters(params)
    unknown = set(params) - {p.name for p in controller_parameters()}
    if unknown:
        raise ValueError(f"unknown controller parameters {sorted(unknown)}")
    p = {**controller_defaults(), **params}
    if p["auto_enable"] and p["robot_ip"] and not is_loopback(p["robot_ip"]):
        raise ValueError(f"auto_enable is for simulators on loopback only, not for a robot at {p['robot_ip']}: "
                         "enable explicitly with the ~/enable service")
    budget = BudgetConfig(**limit_values(BudgetConfig, p)).budget()
    controller = ControllerConfig(
        safety=SafetyConfig(cycle_period=1.0 / p["control_rate_hz"], limits=budget.filter,
                            **limit_values(SafetyConfig, p)),
        scheduler=SchedulerConfig(names=FR3_JOINT_NAMES + (GRIPPER_NAME,), blend=p["blend"],
                                  crossfade_duration=p["crossfade_duration"], max_clock_offset=p["max_clock_offset"]),
        watchdog=WatchdogConfig(**limit_values(WatchdogConfig, p)),
        dry_run=p["dry_run"], **limit_values(ControllerConfig, p))
    arm = FrankyArmConfig(
        host=p["robot_ip"], dry_run=p["dry_run"], realtime=p["realtime"], budget=budget,
        use_gripper=p["use_gripper"],
        gripper=GripperConfig(mode=p["gripper_mode"], grasp_force=p["gripper_force"], speed=p["gripper_speed"],
                              close_below=p["gripper_close_below"]),
        collision_torque=tuple(p["collision_torque"]), collision_force=tuple(p["collision_force"]),
        load_mass=p["load_mass"], load_com=tuple(p["load_com"]), load_inertia=tuple(p["load_inertia"]))
    return ControllerSetup(controller, arm, budget)
