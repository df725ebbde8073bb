"""The node graph of each bringup profile, described once as plain data.

`launch/*.launch.py` translate it into launch_ros `Node` actions for users with a ROS 2 install, and
`mail-il up` (mail_bringup.up) starts the same nodes as processes where `ros2 launch` is missing.
Both use the same YAML parameter files from `mail_bringup/config/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
PROFILES = ("real_robot", "sim", "replay")


@dataclass(frozen=True)
class NodeSpec:
    name: str  # ROS node name (also the key in the YAML parameter file)
    executable: str  # console script installed by mail_policy_node (what `ros2 run` finds)
    module: str  # Python module whose main() runs the node (what `mail-il up` starts)
    parameters: dict = field(default_factory=dict)  # overrides on top of the profile's YAML file
    respawn: bool = False  # restart the process if it exits (never for the controller: it must hold)
    package: str = "mail_policy_node"
    ends_profile: bool = False  # its normal exit (code 0) ends the whole profile (e.g. a bag played out)


@dataclass(frozen=True)
class Profile:
    name: str
    params_file: Path  # YAML with one `<node name>: ros__parameters:` section per node
    nodes: tuple[NodeSpec, ...]

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"profile {self.name!r} has no node {name!r}; nodes: {[n.name for n in self.nodes]}")


def _camera(name: str, **params) -> NodeSpec:
    return NodeSpec(f"camera_{name}", "camera_node", "mail_policy_node.nodes.camera_node",
                    {"camera_name": name, **params}, respawn=True)


POLICY = NodeSpec("policy_node", "policy_node", "mail_policy_node.nodes.policy_node", respawn=True)
CONTROLLER = NodeSpec("franka_controller", "franka_controller_node",
                      "mail_policy_node.nodes.franka_controller_node")


def profile(name: str, overrides: dict[str, dict] | None = None) -> Profile:
    """The profile's nodes; `overrides` maps node name -> parameters that replace the YAML values."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; profiles: {', '.join(PROFILES)}")
    if name == "real_robot":
        nodes = (_camera("agentview", source="realsense"), _camera("wrist", source="realsense"),
                 POLICY, CONTROLLER)
    elif name == "sim":
        nodes = (NodeSpec("sim_world", "sim_world_node", "mail_policy_node.nodes.sim_world_node"),
                 _camera("agentview", source="sim"), _camera("wrist", source="sim"), POLICY, CONTROLLER)
    else:  # replay: a recorded bag's cameras and joint states into the policy node, its chunks recorded
        nodes = (NodeSpec("bag_player", "bag_player_node", "mail_policy_node.nodes.bag_player_node",
                          ends_profile=True),
                 POLICY,
                 NodeSpec("chunk_recorder", "chunk_recorder_node", "mail_policy_node.nodes.chunk_recorder_node"))
    overrides = overrides or {}
    unknown = set(overrides) - {n.name for n in nodes}
    if unknown:
        raise ValueError(f"overrides name nodes not in profile {name!r}: {sorted(unknown)}")
    nodes = tuple(replace(n, parameters={**n.parameters, **overrides.get(n.name, {})}) for n in nodes)
    return Profile(name, CONFIG_DIR / f"{name}.yaml", nodes)


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """`node.param:=value` strings (as on a ros2 launch command line) -> {node: {param: value}}.
    Values are parsed as YAML scalars, so numbers and booleans keep their types."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition(":=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise ValueError(f"override must look like node.param:=value, got {item!r}")
        out.setdefault(node, {})[param] = yaml.safe_load(value) if value else ""
    return out


# Launch arguments each profile offers on the `ros2 launch` command line: argument -> (node, parameter).
LAUNCH_ARGUMENTS: dict[str, dict[str, tuple[str, str]]] = {
    "real_robot": {"robot_ip": ("franka_controller", "robot_ip"),
                   "dry_run": ("franka_controller", "dry_run"),
                   "checkpoint": ("policy_node", "checkpoint"),
                   "checkpoint_root": ("policy_node", "checkpoint_root"),
                   "device": ("policy_node", "device")},
    "sim": {"task": ("sim_world", "task"),
            "seed": ("sim_world", "seed"),
            "checkpoint": ("policy_node", "checkpoint"),
            "checkpoint_root": ("policy_node", "checkpoint_root")},
    "replay": {"bag": ("bag_player", "bag"),
               "output_bag": ("chunk_recorder", "output_bag"),
               "checkpoint": ("policy_node", "checkpoint"),
               "checkpoint_root": ("policy_node", "checkpoint_root")},
}


def launch_node_specs(prof: Profile, launch_values: dict[str, object]) -> list[dict]:
    """Keyword arguments for one launch_ros `Node` per node of the profile. `launch_values` maps the
    profile's launch arguments to values (or launch substitutions); unset arguments keep the YAML."""
    per_node: dict[str, dict] = {}
    for arg, value in launch_values.items():
        if arg not in LAUNCH_ARGUMENTS[prof.name]:
            raise ValueError(f"profile {prof.name!r} has no launch argument {arg!r}")
        node, param = LAUNCH_ARGUMENTS[prof.name][arg]
        per_node.setdefault(node, {})[param] = value
    specs = []
    for n in prof.nodes:
        params: list = [str(prof.params_file)]
        overrides = {**n.parameters, **per_node.get(n.name, {})}
        if overrides:
            params.append(overrides)
        specs.append(dict(package=n.package, executable=n.executable, name=n.name, parameters=params,
                          respawn=n.respawn, output="screen"))
    return specs
