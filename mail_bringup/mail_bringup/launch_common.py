"""What every launch file does, in one place: translate a profile's node graph (mail_bringup.graph,
which `mail-il up` translates too) into the real launch API. Needs a ROS 2 install (launch, launch_ros).

For each profile: a `DeclareLaunchArgument` per argument, with its default read from the profile YAML
and a description; the DDS environment `mail-il up` gives its nodes (mail_policy_node.rosenv:
domain, localhost discovery, the Fast DDS profile, ...) as `SetEnvironmentVariable` actions; one
launch_ros `Node` per node, with respawn delay and retry limit from the graph; and an `OnProcessExit`
handler per node that shuts the launch down when `mail-il up` would end the profile: a node without
respawn exits (the controller, the simulated world, the recorder; the bag player's normal exit is the
replay's end, exit code 0), or a respawning node exits once more than its retries (exit code 1).
"""

from __future__ import annotations

import os

from launch import LaunchDescription, Substitution
from launch.actions import DeclareLaunchArgument, LogInfo, RegisterEventHandler, SetEnvironmentVariable, Shutdown
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from mail_bringup.graph import (LAUNCH_ARGUMENTS, LOG_LEVELS, MACHINES, NODE_SETTINGS, RESPAWN_DELAY_S,
                                RESPAWN_MAX_RETRIES, NodeSpec, Profile, argument_defaults, as_text, machine_of,
                                params_file_in_namespace, profile)


class ProfileParameterFile(Substitution):
    """The profile's YAML for the nodes' namespace (graph.params_file_in_namespace): the file itself
    without one, else a copy whose sections name the namespaced nodes."""

    def __init__(self, path, namespace) -> None:
        super().__init__()
        self.path = str(path)
        self.namespace = normalize_to_list_of_substitutions(namespace)

    def describe(self) -> str:
        return f"{self.path} (sections renamed for a namespace, if one is given)"

    def perform(self, context) -> str:
        return str(params_file_in_namespace(self.path, perform_substitutions(context, self.namespace)))


def dds_environment(profile_name: str) -> list:
    """SetEnvironmentVariable for every variable mail_policy_node.rosenv sets for `mail-il up`'s nodes
    (the same function), and a line saying which graph the nodes join. Node logs go next to launch's
    own log unless ROS_LOG_DIR is set."""
    import launch.logging

    from mail_policy_node import rosenv

    log_dir = os.environ.get("ROS_LOG_DIR") or launch.logging.launch_config.log_dir
    env = rosenv.ros_environment(log_dir=log_dir)
    managed = rosenv.ros_environment(domain_id=0, log_dir=log_dir, base={})  # the variables it sets
    actions: list = [SetEnvironmentVariable(k, env[k]) for k in sorted(managed)]
    actions.append(LogInfo(msg=f"mail_bringup {profile_name}: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} (set it in "
                               f"another shell to reach these nodes), discovery {env['ROS_AUTOMATIC_DISCOVERY_RANGE']},"
                               f" Fast DDS profile {env.get('FASTRTPS_DEFAULT_PROFILES_FILE', '(none)')}"))
    return actions


def _end_of_profile(prof: Profile, spec: NodeSpec):
    """OnProcessExit callback: shut the launch down when `mail-il up` would end the profile."""
    exits = 0

    def on_exit(event, context):
        nonlocal exits
        if context.is_shutdown:
            return None
        exits += 1
        if spec.respawn and exits <= RESPAWN_MAX_RETRIES:
            return None  # launch respawns it after RESPAWN_DELAY_S
        if spec.ends_profile and event.returncode == 0:
            return [LogInfo(msg=f"{spec.name} finished: profile {prof.name} ends"),
                    Shutdown(reason=f"{spec.name} finished")]
        why = f"{spec.name} exited with code {event.returncode}" + (
            f" after {RESPAWN_MAX_RETRIES} restarts" if spec.respawn else "")
        # launch has no exit code of its own for a Shutdown: an error raised here shuts the launch down
        # as Shutdown does, logs the reason, and makes `ros2 launch` exit 1, as `mail-il up` does
        raise ProfileStopped(f"profile {prof.name} stops: {why}")

    return on_exit


class ProfileStopped(RuntimeError):
    """A node the profile cannot run without ended: `ros2 launch` stops every node and exits 1."""


def describe(profile_name: str) -> LaunchDescription:
    prof = profile(profile_name)  # ConfigNotFound when the YAML is missing: ros2 launch prints it and fails
    defaults = argument_defaults(prof)
    entities: list = []
    for arg in LAUNCH_ARGUMENTS[profile_name]:
        targets = ", ".join(f"{n}.{p}" for n, p in arg.targets)
        entities.append(DeclareLaunchArgument(arg.name, default_value=as_text(defaults[arg.name]),
                                              description=f"{arg.description} [{targets}]"))
    for name, (default, description) in NODE_SETTINGS.items():
        choices = {"log_level": list(LOG_LEVELS), "machine": list(MACHINES)}.get(name)
        entities.append(DeclareLaunchArgument(name, default_value=default, description=description, choices=choices))
    entities += dds_environment(profile_name)

    namespace = LaunchConfiguration("namespace")
    for spec in prof.nodes:
        params = dict(spec.launch_parameters())
        for arg in LAUNCH_ARGUMENTS[profile_name]:
            kind = type(defaults[arg.name])
            for node, param in arg.targets:
                if node == spec.name:
                    params[param] = ParameterValue(LaunchConfiguration(arg.name), value_type=kind)
        respawn = dict(respawn=True, respawn_delay=RESPAWN_DELAY_S, respawn_max_retries=RESPAWN_MAX_RETRIES) \
            if spec.respawn else {}
        runs_here = IfCondition(PythonExpression(
            ["'", LaunchConfiguration("machine"), f"' in ('all', '{machine_of(spec.name)}')"]))
        node = Node(package=spec.package, executable=spec.executable, name=spec.name, namespace=namespace,
                    condition=runs_here, remappings=list(spec.remaps),
                    parameters=[ProfileParameterFile(prof.params_file, namespace), params],
                    ros_arguments=["--log-level", LaunchConfiguration("log_level")], output="screen", **respawn)
        entities += [node, RegisterEventHandler(OnProcessExit(target_action=node,
                                                              on_exit=_end_of_profile(prof, spec)))]
    return LaunchDescription(entities)
