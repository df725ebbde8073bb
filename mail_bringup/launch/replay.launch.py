"""ros2 launch mail_bringup replay.launch.py bag:=<recorded bag> output_bag:=<new bag> checkpoint:=<name>

The node graph and its parameters are described in mail_bringup/graph.py and config/replay.yaml;
`mail-il up replay` starts the same graph where ros2 launch is not installed."""

from mail_bringup.launch_common import describe


def generate_launch_description():
    return describe("replay")
