"""Bringup of the MaIL ROS 2 stack: the node graph of each profile, described once (`graph`), and
translated either by the launch files (`ros2 launch`) or by `mail-il up` where ROS launch is missing."""
