"""Conversions between the core's plain types and ROS messages (no cv_bridge on PyPI: ours to write).

Imports message packages only, never rclpy, so it is usable from bag tools as well as nodes.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CameraInfo, Image


def to_time(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def from_time(t) -> float:
    """builtin_interfaces Time (rclpy or rosbags type) -> seconds."""
    return t.sec + t.nanosec * 1e-9


def to_duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_msg(rgb: np.ndarray, stamp: float, frame_id: str) -> Image:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    m = Image()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = frame_id
    m.height, m.width = rgb.shape[:2]
    m.encoding = "rgb8"
    m.is_bigendian = 0
    m.step = 3 * m.width
    m.data = np.ascontiguousarray(rgb).tobytes()
    return m


def camera_info_msg(intr, stamp: float, frame_id: str) -> CameraInfo:
    m = CameraInfo()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = frame_id
    m.width, m.height = intr.width, intr.height
    m.distortion_model = "plumb_bob"
    m.d = [float(x) for x in intr.distortion]
    m.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    m.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    m.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return m
