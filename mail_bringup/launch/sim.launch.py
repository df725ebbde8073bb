"""ros2 launch mail_bringup sim.launch.py [argument:=value ...]   (`-s` lists them with their defaults)

The simulated FR3 (franky-sim), two cameras rendering it, the policy and the controller. The node graph
is mail_bringup/graph.py, the parameters config/sim.yaml in this package's share directory;
`mail-il up sim` starts the same graph where ros2 launch is not installed."""

from mail_bringup.launch_common import describe


def generate_launch_description():
    return describe("sim")
