"""What every launch file does, in one place: declare the profile's arguments and translate its node
graph (mail_bringup.graph, tested without ROS launch) into launch_ros Nodes. Needs a ROS 2 install."""

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mail_bringup.graph import LAUNCH_ARGUMENTS, launch_node_specs, profile


def describe(profile_name: str) -> LaunchDescription:
    prof = profile(profile_name)
    args = LAUNCH_ARGUMENTS[profile_name]

    def nodes(context):
        # Only arguments actually given override the YAML file; values keep their YAML types.
        given = {a: LaunchConfiguration(a).perform(context) for a in args}
        values = {a: yaml.safe_load(v) for a, v in given.items() if v != ""}
        return [Node(**spec) for spec in launch_node_specs(prof, values)]

    declared = [DeclareLaunchArgument(a, default_value="", description=f"sets {node}.{param} (default: YAML)")
                for a, (node, param) in args.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=nodes)])
