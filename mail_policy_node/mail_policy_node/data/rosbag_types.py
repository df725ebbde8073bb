"""A `rosbags` type store that knows ROS 2 Jazzy's standard messages and this project's mail_msgs.

The mail_msgs definitions are read from the .msg files themselves (the installed share/ folder of a
built workspace, else the checkout), so bags written here carry exactly the definitions that rclpy
was built from and deserialise with rclpy.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

MAIL_MSG_TYPES = ("ActionChunk", "PolicyStatus", "ControllerStatus")


def mail_msgs_dir() -> Path:
    """The folder holding mail_msgs' .msg files: installed copy first, then the source checkout."""
    candidates = [Path(p) / "share" / "mail_msgs" / "msg"
                  for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates.append(Path(sys.prefix) / "share" / "mail_msgs" / "msg")
    candidates.append(Path(__file__).resolve().parents[3] / "mail_msgs" / "msg")
    for c in candidates:
        if (c / "ActionChunk.msg").is_file():
            return c
    raise FileNotFoundError("mail_msgs .msg files not found in AMENT_PREFIX_PATH, the venv or the checkout: "
                            + ", ".join(str(c) for c in candidates))


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    store = get_typestore(Stores.ROS2_JAZZY)
    folder = mail_msgs_dir()
    types = {}
    for name in MAIL_MSG_TYPES:
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(), f"mail_msgs/msg/{name}"))
    store.register(types)
    return store
