"""Small rosbag2 files written directly with rosbags, in any image encoding and storage, for replay tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from mail_policy_node.data.bags import STORAGES
from mail_policy_node.data.images import encode_compressed
from mail_policy_node.spec import (FR3_FINGER_NAMES, FR3_JOINT_NAMES, GRIPPER_NAME, TOPIC_ACTION_COMMAND,
                                   TOPIC_EPISODE, TOPIC_JOINT_STATES, camera_image_topic)

BASE_NS = 1_700_000_000 * 1_000_000_000
DT = 0.1
ACTION_NAMES = FR3_JOINT_NAMES + (GRIPPER_NAME,)
TS = get_typestore(Stores.ROS2_JAZZY)


def frame(camera: str, episode: int, step: int, h: int, w: int) -> np.ndarray:
    """A deterministic RGB frame with structure in every channel."""
    y, x = np.mgrid[0:h, 0:w]
    base = 40 * (camera == "wrist") + 17 * episode + 9 * step
    return np.stack([(x * 5 + base) % 256, (y * 7 + 2 * base) % 256, ((x + y) * 3 + 3 * base) % 256],
                    axis=-1).astype(np.uint8)


def action(episode: int, step: int) -> np.ndarray:
    return np.array([0.1 * np.sin(0.3 * step + d + episode) for d in range(7)] + [0.04 + 0.001 * step])


def state(episode: int, step: int) -> np.ndarray:
    """[q1..q7, gripper width]"""
    return np.array([0.05 * np.cos(0.2 * step + d - episode) for d in range(7)] + [0.06 - 0.001 * step])


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """What decoding the written message yields (grey for mono8, the codec's result for jpeg)."""
    if encoding == "mono8":
        return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    if encoding == "jpeg":
        return cv2.imdecode(np.frombuffer(encode_compressed(rgb, "jpeg"), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    return rgb


def _time(ns: int):
    return TS.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns: int):
    return TS.types["std_msgs/msg/Header"](stamp=_time(ns), frame_id="")


def image_msg(rgb: np.ndarray, encoding: str, ns: int):
    h, w = rgb.shape[:2]
    if encoding in ("jpeg", "png"):
        return "sensor_msgs/msg/CompressedImage", TS.types["sensor_msgs/msg/CompressedImage"](
            header=_header(ns), format=encoding, data=np.frombuffer(encode_compressed(rgb, encoding), np.uint8))
    if encoding == "mono8":
        data, step = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), w
    elif encoding == "bgr8":
        data, step = rgb[:, :, ::-1], 3 * w
    else:
        data, step = rgb, 3 * w
    return "sensor_msgs/msg/Image", TS.types["sensor_msgs/msg/Image"](
        header=_header(ns), height=h, width=w, encoding=encoding, is_bigendian=0, step=step,
        data=np.ascontiguousarray(data, np.uint8).reshape(-1))


def write_bag(path, *, storage="mcap", encoding="rgb8", episodes=(8,), size=(32, 32), events=True, starts=True,
              cameras=("agentview", "wrist"), topics: dict | None = None, drop: dict | None = None,
              action_names=ACTION_NAMES) -> dict:
    """Write episodes of ``episodes[i]`` control steps each (observation and action k stamped k * dt
    after the episode's start; 1 s between episodes; ``starts`` False: only "end" events). ``topics`` maps camera / "joint_states" / "action"
    to other topic names; ``drop`` maps the same keys to steps whose message is left out (every episode).
    Returns {"frames": {camera: [[rgb per step] per episode]}, "states", "actions", "stamps_ns"} as written."""
    topics = topics or {}
    drop = drop or {}
    cam_topic = {c: topics.get(c, camera_image_topic(c)) for c in cameras}
    joint_topic = topics.get("joint_states", TOPIC_JOINT_STATES)
    act_topic = topics.get("action", TOPIC_ACTION_COMMAND)
    img_type = "sensor_msgs/msg/CompressedImage" if encoding in ("jpeg", "png") else "sensor_msgs/msg/Image"
    written = {"frames": {c: [] for c in cameras}, "states": [], "actions": [], "stamps_ns": []}
    with Writer(Path(path), version=9, storage_plugin=STORAGES[storage]) as w:
        conns = {t: w.add_connection(t, img_type, typestore=TS) for t in cam_topic.values()}
        conns[joint_topic] = w.add_connection(joint_topic, "sensor_msgs/msg/JointState", typestore=TS)
        conns[act_topic] = w.add_connection(act_topic, "sensor_msgs/msg/JointState", typestore=TS)
        if events:
            conns[TOPIC_EPISODE] = w.add_connection(TOPIC_EPISODE, "std_msgs/msg/String", typestore=TS)

        def put(topic, ns, msgtype, msg):
            w.write(conns[topic], ns, TS.serialize_cdr(msg, msgtype))

        t0 = BASE_NS
        for e, steps in enumerate(episodes):
            if events and starts:
                put(TOPIC_EPISODE, t0, "std_msgs/msg/String",
                    TS.types["std_msgs/msg/String"](data=json.dumps({"event": "start", "episode": e})))
            for c in cameras:
                written["frames"][c].append([])
            written["states"].append([])
            written["actions"].append([])
            written["stamps_ns"].append([])
            for k in range(steps):
                ns = t0 + int(round(k * DT * 1e9))
                written["stamps_ns"][-1].append(ns)
                for c in cameras:
                    rgb = frame(c, e, k, *size)
                    written["frames"][c][-1].append(expected_rgb(rgb, encoding))
                    if k not in drop.get(c, ()):
                        put(cam_topic[c], ns, *image_msg(rgb, encoding, ns))
                s = state(e, k)
                written["states"][-1].append(s)
                if k not in drop.get("joint_states", ()):
                    put(joint_topic, ns, "sensor_msgs/msg/JointState", TS.types["sensor_msgs/msg/JointState"](
                        header=_header(ns), name=list(FR3_JOINT_NAMES + FR3_FINGER_NAMES),
                        position=np.concatenate([s[:7], [s[7] / 2, s[7] / 2]]), velocity=np.zeros(0),
                        effort=np.zeros(0)))
                a = action(e, k)[: len(action_names)]
                written["actions"][-1].append(a)
                if k not in drop.get("action", ()):
                    put(act_topic, ns, "sensor_msgs/msg/JointState", TS.types["sensor_msgs/msg/JointState"](
                        header=_header(ns), name=list(action_names), position=a, velocity=np.zeros(0),
                        effort=np.zeros(0)))
            end = t0 + int(round((steps - 1) * DT * 1e9))
            if events:
                put(TOPIC_EPISODE, end, "std_msgs/msg/String",
                    TS.types["std_msgs/msg/String"](data=json.dumps({"event": "end", "episode": e, "success": True})))
            t0 = end + 1_000_000_000
    return written
