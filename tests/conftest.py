"""Shared test set-up: every test run gets its own ROS 2 graph (domain id, localhost discovery, log
folder), applied before any test imports rclpy."""

import os
import tempfile
from pathlib import Path

from hypothesis import settings

from mail_policy_node import rosenv

# UDP only for the suite (see udp_only.xml); set before rosenv, which only sets the profile if unset
os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(Path(__file__).with_name("udp_only.xml"))

# Property tests draw the same examples on every run (CI must not pass or fail by luck); the open-ended
# search is `HYPOTHESIS_PROFILE=explore make test` and scripts/fuzz_safety.py (a million actions).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_log_dir = tempfile.mkdtemp(prefix="mail-ros-log-")
rosenv.apply_ros_environment(domain_id=int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID")
                             else rosenv.derive_domain_id(os.getpid()))
os.environ["ROS_LOG_DIR"] = _log_dir
