"""ros2 launch mail_bringup sim.launch.py [argument:=value ...]

The node graph and its parameters are described in mail_bringup/graph.py and config/sim.yaml;
`mail-il up sim` starts the same graph where ros2 launch is not installed."""

from mail_bringup.launch_common import describe


def generate_launch_description():
    return describe("sim")
