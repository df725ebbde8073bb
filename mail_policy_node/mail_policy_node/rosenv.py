"""Environment for ROS 2 processes started by this project (nodes, tests, `mail-il up`).

Plain Python, no rclpy: it only computes environment variables, so the launcher and the tests can use
it before any ROS library is loaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FASTDDS_PROFILE = Path(__file__).resolve().parent / "config" / "fastdds_shm.xml"


def venv_prefix() -> Path:
    """The prefix that holds the ROS wheels and mail_msgs (the running interpreter's venv)."""
    return Path(sys.prefix)


def ros_environment(domain_id: int | None = None, log_dir: str | os.PathLike | None = None,
                    base: dict[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``base`` (default: os.environ) set up for a local ROS 2 graph.

    - ``ROS_DOMAIN_ID``: the given one, else the one already set, else one derived from the process id
      so that parallel test runs on one machine do not see each other;
    - discovery limited to this host (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) unless the environment
      says otherwise (two hosts: ``SUBNET`` with ``ROS_STATIC_PEERS``);
    - ``ROS_LOG_DIR`` inside the build tree (or the given folder);
    - the Fast DDS profile with a large shared-memory segment for camera images;
    - ``AMENT_PREFIX_PATH`` containing the venv, which ament_index needs to find packages.
    """
    env = dict(os.environ if base is None else base)
    if domain_id is None:
        domain_id = int(env["ROS_DOMAIN_ID"]) if env.get("ROS_DOMAIN_ID") else derive_domain_id(os.getpid())
    if not 0 <= domain_id <= 101:
        raise ValueError(f"ROS_DOMAIN_ID must be in 0..101 for Fast DDS on Linux, got {domain_id}")
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # two hosts: SUBNET and ROS_STATIC_PEERS
    if log_dir is None:
        log_dir = env.get("ROS_LOG_DIR") or str(repo_root() / "build" / "ros_log")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    env["ROS_LOG_DIR"] = str(log_dir)
    env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if str(venv_prefix()) not in prefixes:
        prefixes.insert(0, str(venv_prefix()))
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(prefixes)
    env.setdefault("MUJOCO_GL", "egl")
    return env


def apply_ros_environment(domain_id: int | None = None) -> dict[str, str]:
    """Set up this process's own environment (before rclpy is imported) and return it."""
    env = ros_environment(domain_id)
    os.environ.update(env)
    return env


def derive_domain_id(seed: int) -> int:
    """A domain id in 1..100 from a seed (e.g. a pid); 0 is left to an untouched default graph."""
    return 1 + seed % 100


def repo_root() -> Path:
    """The checkout this package runs from (editable install), else the current directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "mail_msgs" / "package.xml").exists():
            return parent
    return Path.cwd()
