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
# a lab's names (``topics`` of write_bag), the topic map that reads them, and a joint order of its joint states
LAB = {"agentview": "/cam_high/color/image_raw/compressed", "wrist": "/cam_wrist/color/image_raw",
       "joint_states": "/franka/joint_states", "action": "/robot/command", "episode": "/lab/episode"}
LAB_MAP = {"cameras": {"agentview": LAB["agentview"], "wrist": LAB["wrist"]},
           **{k: LAB[k] for k in ("joint_states", "action", "episode")}}
SHUFFLED = [FR3_JOINT_NAMES[i] for i in (4, 0, 6, 2)] + [FR3_FINGER_NAMES[1]] + \
           [FR3_JOINT_NAMES[i] for i in (5, 1, 3)] + [FR3_FINGER_NAMES[0]]


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
              action_names=ACTION_NAMES, joint_rate_hz: float | None = None, joint_order=None,
              camera_rate_hz: float | None = None) -> dict:
    """Write episodes of ``episodes[i]`` control steps each (observation and action k stamped k * dt
    after the episode's start; 1 s between episodes; ``starts`` False: only "end" events). ``topics`` maps
    camera / "joint_states" / "action" / "episode" to other topic names; ``drop`` maps the same keys to
    steps whose message is left out (every episode).
    ``encoding``: one for every camera, or camera -> encoding. A lab's recording: ``joint_rate_hz`` (e.g. 1000)
    writes joint states at that rate from each step's stamp on (the state between steps is `state` at the
    fractional step), named in ``joint_order`` (the stack's 7 joints + 2 fingers by default, in any order);
    ``camera_rate_hz`` (e.g. 30) adds frames between the steps (other pictures), the step's own on its stamp.
    Returns {"frames": {camera: [[rgb per step] per episode]}, "states", "actions", "stamps_ns"} as written
    on the steps."""
    topics = topics or {}
    drop = drop or {}
    enc = {c: encoding.get(c, "rgb8") if isinstance(encoding, dict) else encoding for c in cameras}
    joint_names = list(joint_order or FR3_JOINT_NAMES + FR3_FINGER_NAMES)
    cam_topic = {c: topics.get(c, camera_image_topic(c)) for c in cameras}
    joint_topic = topics.get("joint_states", TOPIC_JOINT_STATES)
    act_topic = topics.get("action", TOPIC_ACTION_COMMAND)
    episode_topic = topics.get("episode", TOPIC_EPISODE)
    joint_sub = 1 if joint_rate_hz is None else int(round(joint_rate_hz * DT))  # joint states per step
    cam_sub = 1 if camera_rate_hz is None else int(round(camera_rate_hz * DT))  # frames per step
    written = {"frames": {c: [] for c in cameras}, "states": [], "actions": [], "stamps_ns": []}

    def joint_msg(s, ns):
        by_name = dict(zip(FR3_JOINT_NAMES + FR3_FINGER_NAMES, [*s[:7], s[7] / 2, s[7] / 2]))
        return TS.types["sensor_msgs/msg/JointState"](
            header=_header(ns), name=joint_names, position=np.array([by_name[n] for n in joint_names], float),
            velocity=np.zeros(0), effort=np.zeros(0))

    with Writer(Path(path), version=9, storage_plugin=STORAGES[storage]) as w:
        conns = {t: w.add_connection(t, "sensor_msgs/msg/CompressedImage" if enc[c] in ("jpeg", "png")
                                     else "sensor_msgs/msg/Image", typestore=TS) for c, t in cam_topic.items()}
        conns[joint_topic] = w.add_connection(joint_topic, "sensor_msgs/msg/JointState", typestore=TS)
        conns[act_topic] = w.add_connection(act_topic, "sensor_msgs/msg/JointState", typestore=TS)
        if events:
            conns[episode_topic] = w.add_connection(episode_topic, "std_msgs/msg/String", typestore=TS)
        pending: list = []  # (ns, topic, msgtype, msg) of one episode, written in time order

        def put(topic, ns, msgtype, msg):
            pending.append((ns, topic, msgtype, msg))

        t0 = BASE_NS
        for e, steps in enumerate(episodes):
            if events and starts:
                put(episode_topic, t0, "std_msgs/msg/String",
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
                    written["frames"][c][-1].append(expected_rgb(rgb, enc[c]))
                    if k not in drop.get(c, ()):
                        put(cam_topic[c], ns, *image_msg(rgb, enc[c], ns))
                        for m in range(1, cam_sub):  # frames between the steps: other pictures
                            t = ns + int(round(m * DT / cam_sub * 1e9))
                            put(cam_topic[c], t, *image_msg(frame(c, e, k + 1000 * m, *size), enc[c], t))
                s = state(e, k)
                written["states"][-1].append(s)
                if k not in drop.get("joint_states", ()):
                    put(joint_topic, ns, "sensor_msgs/msg/JointState", joint_msg(s, ns))
                    for j in range(1, joint_sub):
                        t = ns + int(round(j * DT / joint_sub * 1e9))
                        put(joint_topic, t, "sensor_msgs/msg/JointState", joint_msg(state(e, k + j / joint_sub), t))
                a = action(e, k)[: len(action_names)]
                written["actions"][-1].append(a)
                if k not in drop.get("action", ()):
                    put(act_topic, ns, "sensor_msgs/msg/JointState", TS.types["sensor_msgs/msg/JointState"](
                        header=_header(ns), name=list(action_names), position=a, velocity=np.zeros(0),
                        effort=np.zeros(0)))
            end = t0 + int(round((steps - 1) * DT * 1e9))
            if events:
                put(episode_topic, end, "std_msgs/msg/String",
                    TS.types["std_msgs/msg/String"](data=json.dumps({"event": "end", "episode": e, "success": True})))
            for ns, topic, msgtype, msg in sorted(pending, key=lambda m: m[0]):  # stable: same-stamp order kept
                w.write(conns[topic], ns, TS.serialize_cdr(msg, msgtype))
            pending.clear()
            t0 = end + 1_000_000_000
    return written
