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


def chunk_to_msg(chunk, checkpoint: str = "", inference_time: float = 0.0, frame_id: str = "fr3_link0"):
    """control.chunks.ActionChunk -> mail_msgs/ActionChunk."""
    from mail_msgs.msg import ActionChunk as ActionChunkMsg

    actions = np.asarray(chunk.actions, dtype=np.float64)
    m = ActionChunkMsg()
    m.header.stamp = to_time(chunk.stamp)
    m.header.frame_id = frame_id
    m.policy_id = chunk.policy_id
    m.checkpoint = checkpoint
    m.task = chunk.task
    m.sequence = int(chunk.sequence)
    m.action_space = chunk.action_space
    m.dimension_names = list(chunk.names)
    m.start_offset = to_duration(chunk.start_offset)
    m.dt = to_duration(chunk.dt)
    m.horizon, m.dimension = (int(actions.shape[0]), int(actions.shape[1])) if actions.ndim == 2 else (0, 0)
    m.execute_horizon = int(chunk.execute_horizon)
    m.actions = actions.reshape(-1).tolist()
    m.inference_time = to_duration(inference_time)
    return m


def chunk_from_msg(m):
    """mail_msgs/ActionChunk (rclpy or rosbags) -> control.chunks.ActionChunk. Never raises: a chunk
    whose sizes do not add up comes back malformed and is rejected (and counted) by the scheduler."""
    from mail_policy_node.control.chunks import ActionChunk

    return ActionChunk.from_flat(stamp=from_time(m.header.stamp), start_offset=from_time(m.start_offset),
                                 dt=from_time(m.dt), horizon=int(m.horizon), dimension=int(m.dimension),
                                 actions=m.actions, names=tuple(m.dimension_names), action_space=m.action_space,
                                 policy_id=m.policy_id, sequence=int(m.sequence),
                                 execute_horizon=int(m.execute_horizon),
                                 task=getattr(m, "task", ""))  # bags recorded before chunks said their task
