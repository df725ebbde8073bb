"""ros2 launch mail_bringup replay.launch.py bag:=<recorded bag> output_bag:=<new bag> checkpoint:=<name>

Plays a recorded bag into the policy node and records its chunks; ends by itself when the bag has been
played (the output bag is then complete). The node graph is mail_bringup/graph.py, the parameters
config/replay.yaml in this package's share directory; `mail-il up replay` starts the same graph where
ros2 launch is not installed. `-s` lists the arguments with their defaults."""

from mail_bringup.launch_common import describe


def generate_launch_description():
    return describe("replay")
