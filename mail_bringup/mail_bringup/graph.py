"""The node graph of each bringup profile, described once as plain data.

`launch/*.launch.py` (through `launch_common`) translate it into launch_ros actions for users with a
ROS 2 install, and `mail-il up` (`up`) starts the same nodes as processes where `ros2 launch` is
missing. Both pass each node the profile's YAML file and, on top of it, the same parameters: the
graph's own (`NodeSpec.parameters`), paths resolved here (`NodeSpec.resolved`) and the launch
arguments (`LAUNCH_ARGUMENTS`, whose defaults are read from the YAML, so each default lives there only).

Where the files are (`share_dir`): the share directory the ament index names for mail_bringup (a
colcon install, plain or `--symlink-install`, or a ROS package install), else the source package this
module is imported from (the editable install of `make env`), which has the same layout: `config/`,
`launch/`, `checkpoints/`. A `--symlink-install` share holds links into the source package; it is
read through them (following `package.xml`'s link), so checkpoint files are real files, not links that
the checkpoint root would refuse. A profile whose YAML is missing is refused (`ConfigNotFound`): nodes
never start on their code defaults.

The one path rule: a relative `checkpoint_root` in a profile YAML is relative to that share directory
(`RELATIVE_TO_SHARE`); a value given on a command line is taken as given (relative to the folder the
command runs in, which every node inherits).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

PACKAGE = "mail_bringup"
PROFILES = ("real_robot", "sim", "replay")

# Nodes with `respawn` are restarted this long after they exit, at most this many times; one more exit
# ends the profile. `ros2 launch` (respawn_delay, respawn_max_retries) and `mail-il up` both use them.
RESPAWN_DELAY_S = 2.0
RESPAWN_MAX_RETRIES = 5

# (node, parameter) whose relative value in a profile YAML is relative to the share directory
RELATIVE_TO_SHARE = (("policy_node", "checkpoint_root"),)

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


class ConfigNotFound(FileNotFoundError):
    """mail_bringup's share directory or a profile's parameter file is missing; str() says where it looked."""


@dataclass(frozen=True)
class NodeSpec:
    name: str  # ROS node name (also the key in the YAML parameter file)
    executable: str  # console script installed by mail_policy_node (what `ros2 run` finds)
    module: str  # Python module whose main() runs the node (what `mail-il up` starts)
    parameters: dict = field(default_factory=dict)  # overrides on top of the profile's YAML file
    respawn: bool = False  # restart the process if it exits (never for the controller: it must hold)
    package: str = "mail_policy_node"
    ends_profile: bool = False  # its normal exit (code 0) ends the whole profile (e.g. a bag played out)
    resolved: dict = field(default_factory=dict)  # YAML values rewritten by `profile` (RELATIVE_TO_SHARE)
    remaps: tuple = ()  # (from, to) topic remappings both translators pass

    def launch_parameters(self) -> dict:
        """What both translators pass on top of the YAML file (overrides win over resolved paths)."""
        return {**self.resolved, **self.parameters}


@dataclass(frozen=True)
class Profile:
    name: str
    params_file: Path | None  # YAML with one `<node name>: ros__parameters:` section per node
    nodes: tuple[NodeSpec, ...]

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"profile {self.name!r} has no node {name!r}; nodes: {[n.name for n in self.nodes]}")

    def only(self, *names: str) -> Profile:
        """The same profile with only these nodes (what a harness starts in parts)."""
        return replace(self, nodes=tuple(n for n in self.nodes if n.name in names))


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    targets: tuple[tuple[str, str], ...]  # (node, parameter) pairs it sets; the first holds its YAML default
    description: str


# -- where the files are ------------------------------------------------------------------------------
def share_dir() -> Path:
    """mail_bringup's share directory (see the module docstring), or ConfigNotFound."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError, ValueError):  # not installed, not indexed, no AMENT_PREFIX_PATH
        share = None
    if share is not None:
        marker = share / "package.xml"
        return marker.resolve().parent if marker.is_file() else share
    source = Path(__file__).resolve().parent.parent
    if (source / "package.xml").is_file():
        return source
    raise ConfigNotFound(f"{PACKAGE} is not in the ament index (AMENT_PREFIX_PATH) and {source} is not its "
                         "source package: source the workspace's install/setup.bash (colcon build) or run make env")


def config_dir() -> Path:
    return share_dir() / "config"


def params_file(profile_name: str) -> Path:
    """The profile's YAML file, or ConfigNotFound (nothing may start on code defaults)."""
    path = config_dir() / f"{profile_name}.yaml"
    if not path.is_file():
        raise ConfigNotFound(f"parameter file of profile {profile_name!r} not found: {path}; refusing to start "
                             "the nodes on their code defaults (rebuild the workspace: colcon build)")
    return path


def __getattr__(name: str):
    # CONFIG_DIR is looked up when used, so importing this module never fails on a missing install
    if name == "CONFIG_DIR":
        return config_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def yaml_sections(path: Path) -> dict[str, dict]:
    """node name -> its `ros__parameters` in a profile YAML file."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    return {node: (section or {}).get("ros__parameters", {}) for node, section in data.items()}


def params_file_in_namespace(path: Path, namespace: str) -> Path:
    """The YAML for nodes in `namespace`: the file itself for none, else a copy (in the temp folder)
    whose sections name the namespaced nodes. A parameter file's `policy_node:` section applies only to
    /policy_node, not to /<namespace>/policy_node."""
    ns = namespace.strip("/")
    if not ns:
        return Path(path)
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    renamed = {f"/{ns}/{node}": section for node, section in data.items()}
    fd, copy = tempfile.mkstemp(prefix=f"{PACKAGE}_{Path(path).stem}_", suffix=".yaml")
    with open(fd, "w") as f:
        yaml.safe_dump(renamed, f, sort_keys=False)
    return Path(copy)


# -- the graphs ---------------------------------------------------------------------------------------
def _camera(name: str, **params) -> NodeSpec:
    return NodeSpec(f"camera_{name}", "camera_node", "mail_policy_node.nodes.camera_node",
                    {"camera_name": name, **params}, respawn=True)


# The sim world's /clock (use_sim_time) in the profile's namespace: ROS's /clock is global, and two simulated
# arms in one graph (namespace:=arm1, arm2) would each follow both worlds' clocks. Relative, it is /clock
# without a namespace.
WORLD_CLOCK = (("/clock", "clock"),)
POLICY = NodeSpec("policy_node", "policy_node", "mail_policy_node.nodes.policy_node", respawn=True)
CONTROLLER = NodeSpec("franka_controller", "franka_controller_node",
                      "mail_policy_node.nodes.franka_controller_node")


def _nodes(name: str) -> tuple[NodeSpec, ...]:
    if name == "real_robot":
        return (_camera("agentview", source="realsense"), _camera("wrist", source="realsense"), POLICY, CONTROLLER)
    if name == "sim":
        return (NodeSpec("sim_world", "sim_world_node", "mail_policy_node.nodes.sim_world_node", remaps=WORLD_CLOCK),
                _camera("agentview", source="sim"), _camera("wrist", source="sim"),
                replace(POLICY, remaps=WORLD_CLOCK), replace(CONTROLLER, remaps=WORLD_CLOCK))
    # replay: a recorded bag's cameras and joint states into the policy node, its chunks recorded
    return (NodeSpec("bag_player", "bag_player_node", "mail_policy_node.nodes.bag_player_node", ends_profile=True),
            POLICY,
            NodeSpec("chunk_recorder", "chunk_recorder_node", "mail_policy_node.nodes.chunk_recorder_node"))


def profile(name: str, overrides: dict[str, dict] | None = None) -> Profile:
    """The profile's nodes; `overrides` maps node name -> parameters that replace the YAML values.
    Raises ConfigNotFound when the profile's YAML file is missing."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; profiles: {', '.join(PROFILES)}")
    nodes = _nodes(name)
    overrides = overrides or {}
    unknown = set(overrides) - {n.name for n in nodes}
    if unknown:
        raise ValueError(f"overrides name nodes not in profile {name!r}: {sorted(unknown)}")
    path = params_file(name)
    sections = yaml_sections(path)
    share = path.parent.parent
    resolved: dict[str, dict] = {}
    for node, param in RELATIVE_TO_SHARE:
        value = sections.get(node, {}).get(param)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            resolved.setdefault(node, {})[param] = str(share / value)
    nodes = tuple(replace(n, parameters={**n.parameters, **overrides.get(n.name, {})},
                          resolved=resolved.get(n.name, {})) for n in nodes)
    return Profile(name, path, nodes)


# -- launch arguments ---------------------------------------------------------------------------------
def _arg(name: str, node: str, param: str, description: str, *more: tuple[str, str]) -> LaunchArgument:
    return LaunchArgument(name, ((node, param), *more), description)


_POLICY_ARGS = (
    _arg("checkpoint", "policy_node", "checkpoint",
         "policy folder under checkpoint_root ('' = none: the policy waits); settable at run time with "
         "`ros2 param set /policy_node checkpoint NAME` (hot swap at the next chunk boundary)"),
    _arg("checkpoint_root", "policy_node", "checkpoint_root",
         "the only folder checkpoints load from (read-only at run time); a relative path in the YAML is "
         "relative to the mail_bringup share directory, one given here to the current folder"),
    _arg("device", "policy_node", "device", "where the policy runs: cpu or cuda"),
)
_CONTROLLER_ARGS = (
    _arg("dry_run", "franka_controller", "dry_run",
         "compute and publish commands on /mail/action_command without moving the arm"),
    _arg("relative_dynamics_factor", "franka_controller", "relative_dynamics_factor",
         "dynamics dial in [0.01, 1]: scales the arm's velocity, acceleration and jerk limits (start low with a new "
         "robot or policy, raise it once the motion is trusted)"),
    _arg("realtime", "franka_controller", "realtime",
         "require a real-time kernel for libfranka (false only without one: simulators, never the robot)"),
)

# Arguments each profile offers on the `ros2 launch` command line (and `mail-il up`, as ARG:=VALUE).
# Besides these, every profile takes `namespace`, `log_level` and `machine` (NODE_SETTINGS).
LAUNCH_ARGUMENTS: dict[str, tuple[LaunchArgument, ...]] = {
    "real_robot": (
        _arg("robot_ip", "franka_controller", "robot_ip", "address of the FR3's control unit"),
        *_CONTROLLER_ARGS,
        *_POLICY_ARGS,
        _arg("agentview_serial", "camera_agentview", "serial", "RealSense serial of the agent-view camera"),
        _arg("wrist_serial", "camera_wrist", "serial", "RealSense serial of the wrist camera"),
        _arg("agentview_playback_file", "camera_agentview", "playback_file",
             "a librealsense .db3 recording played instead of the agent-view camera ('' = the camera)"),
        _arg("wrist_playback_file", "camera_wrist", "playback_file",
             "a librealsense .db3 recording played instead of the wrist camera ('' = the camera)"),
    ),
    "sim": (
        _arg("task", "sim_world", "task", "simulated task: reach, push, pick_place or memory"),
        _arg("seed", "sim_world", "seed", "seed of the task's scene (object and goal placement)"),
        _arg("robot_ip", "franka_controller", "robot_ip",
             "loopback address franky-sim serves the simulated FR3 on and the controller connects to (sets "
             "sim_world.hostname too); another 127.x.y.z lets two sim profiles run side by side",
             ("sim_world", "hostname")),
        _arg("use_sim_time", "sim_world", "use_sim_time",
             "run on the simulated world's clock (/clock from franky-sim's physics: chunks run at the simulated "
             "arm's pace however fast this machine runs it); false: every node on the host's clocks",
             ("policy_node", "use_sim_time"), ("franka_controller", "use_sim_time")),
        _arg("real_time_factor", "sim_world", "real_time_factor",
             "simulated seconds per wall second franky-sim is paced to (at most 1; lower on a small machine)"),
        _arg("auto_enable", "franka_controller", "auto_enable",
             "enable the controller on the first chunk that can run; false: the arm moves only after "
             "`ros2 service call /franka_controller/enable std_srvs/srv/Trigger`"),
        *_CONTROLLER_ARGS,
        *_POLICY_ARGS,
    ),
    "replay": (
        _arg("bag", "bag_player", "bag", "the recorded rosbag2 folder (mcap or sqlite3) played into the policy"),
        _arg("output_bag", "chunk_recorder", "output_bag",
             "a new folder: the policy's chunks are recorded there (mcap); the profile ends when the bag is played"),
        _arg("rate", "bag_player", "rate", "playback speed (1.0 = recorded timing)"),
        *_POLICY_ARGS,
    ),
}

# Settings of every node that are not parameters: argument -> (default, description).
NODE_SETTINGS = {
    "namespace": ("", "ROS namespace of every node and topic (/NAMESPACE/joint_states, /NAMESPACE/mail/action_chunk, "
                      "/NAMESPACE/franka_controller/enable): two arms, each in its own namespace, share one graph"),
    "log_level": ("info", "log level of every node"),
    "machine": ("all", "which machine's nodes to start, as labs deploy two: all; gpu (cameras, policy, and replay's "
                       "nodes) on the GPU box; rt (the controller and, in sim, the simulated world) on the real-time "
                       "PC next to the arm"),
}

# The nodes of the real-time PC (`machine:=rt`); every other node runs on the GPU box (`machine:=gpu`).
MACHINES = ("all", "gpu", "rt")
RT_NODES = ("franka_controller", "sim_world")


def machine_of(node: str) -> str:
    return "rt" if node in RT_NODES else "gpu"


def on_machine(prof: Profile, machine: str) -> Profile:
    """The part of the profile one machine starts (`machine:=...`)."""
    if machine not in MACHINES:
        raise ValueError(f"machine must be one of {', '.join(MACHINES)}, got {machine!r}")
    return prof if machine == "all" else prof.only(*(n.name for n in prof.nodes if machine_of(n.name) == machine))


def argument_defaults(prof: Profile) -> dict[str, object]:
    """Each launch argument's default: its first target's value in the profile YAML (a relative
    checkpoint_root resolved). Every target of one argument must hold the same value there."""
    sections = yaml_sections(prof.params_file)
    out: dict[str, object] = {}
    for arg in LAUNCH_ARGUMENTS[prof.name]:
        values = []
        for node, param in arg.targets:
            spec = prof.node(node)
            if param in spec.resolved:
                values.append(spec.resolved[param])
            elif param in sections.get(node, {}):
                values.append(sections[node][param])
            else:
                raise ConfigNotFound(f"{prof.params_file}: {node}.{param} is missing; it holds the default of "
                                     f"the launch argument {arg.name!r}")
        if any(v != values[0] for v in values[1:]):
            pairs = ", ".join(f"{n}.{p} = {v!r}" for (n, p), v in zip(arg.targets, values))
            raise ValueError(f"{prof.params_file}: {pairs} disagree; the launch argument {arg.name!r} sets them all")
        out[arg.name] = values[0]
    return out


def as_text(value) -> str:
    """A parameter value as written on a command line (`true`, `0.6`, `reach`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def typed(text: str, like, what: str = "value"):
    """A command-line value with the type of `like` (a YAML default): `checkpoint:=123` stays a string,
    `seed:=3` an int, `dry_run:=false` a bool. ValueError names the argument."""
    import yaml

    if isinstance(like, str):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(like, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(like, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    else:
        return value
    kind = {bool: "true or false", int: "an integer", float: "a number"}[type(like)]
    raise ValueError(f"{what} must be {kind}, got {text!r}")


def parse_overrides(items: list[str], text: bool = False) -> dict[str, dict]:
    """`node.param:=value` strings (as on a ros2 launch command line) -> {node: {param: value}}.
    Values are parsed as YAML scalars, so numbers and booleans keep their types; ``text``: kept as written,
    for a caller that types them like the profile's own values (`typed`)."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition(":=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise ValueError(f"override must look like node.param:=value, got {item!r}")
        out.setdefault(node, {})[param] = value if text else yaml.safe_load(value) if value else ""
    return out


def parse_arguments(profile_name: str, items: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """`mail-il up` arguments: the launch file's `ARG:=VALUE` (typed like the YAML default) and
    `node.param:=value` overrides -> ({node: {param: value}}, {namespace / log_level: value})."""
    args = {a.name: a for a in LAUNCH_ARGUMENTS[profile_name]}
    defaults = None
    overrides: dict[str, dict] = {}
    settings: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(":=")
        if "." in key or not sep:
            for node, params in parse_overrides([item]).items():
                overrides.setdefault(node, {}).update(params)
        elif key in NODE_SETTINGS:
            settings[key] = value
        elif key in args:
            if defaults is None:
                defaults = argument_defaults(profile(profile_name))
            for node, param in args[key].targets:
                overrides.setdefault(node, {})[param] = typed(value, defaults[key], key)
        else:
            known = sorted(args) + sorted(NODE_SETTINGS)
            raise ValueError(f"profile {profile_name!r} has no argument {key!r}; arguments: {', '.join(known)} "
                             "(or node.param:=value)")
    if settings.get("machine", "all") not in MACHINES:
        raise ValueError(f"machine must be one of {', '.join(MACHINES)}, got {settings['machine']!r}")
    if settings.get("log_level", "info") not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {settings['log_level']!r}")
    return overrides, settings
