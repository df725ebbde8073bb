"""ros2 launch mail_bringup real_robot.launch.py [argument:=value ...]   (`-s` lists them with their defaults)

Two RealSense cameras, the policy and the controller of a real FR3 (in dry run until dry_run:=false).
The node graph is mail_bringup/graph.py, the parameters config/real_robot.yaml in this package's share
directory; `mail-il up real_robot` starts the same graph where ros2 launch is not installed."""

from mail_bringup.launch_common import describe


def generate_launch_description():
    return describe("real_robot")
