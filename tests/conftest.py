"""Shared test set-up: every test run gets its own ROS 2 graph (domain id, localhost discovery, log
folder), applied before any test imports rclpy."""

import os
import tempfile

from mail_policy_node import rosenv

_log_dir = tempfile.mkdtemp(prefix="mail-ros-log-")
rosenv.apply_ros_environment(domain_id=int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID")
                             else rosenv.derive_domain_id(os.getpid()))
os.environ["ROS_LOG_DIR"] = _log_dir
