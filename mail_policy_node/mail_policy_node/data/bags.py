"""rosbag2 demonstrations: a writer for simulated demos and a reader for any bag of the stack.

Both use `rosbags` (pure Python, no ROS install). Topics and types are the stack's (see ``spec``):

| topic | type | content |
| --- | --- | --- |
| camera_image_topic(cam) | sensor_msgs/Image | rgb8, header.stamp = acquisition time |
| camera_info_topic(cam) | sensor_msgs/CameraInfo | pinhole intrinsics, one per frame |
| /joint_states | sensor_msgs/JointState | fr3_joint1..7 + fr3_finger_joint1/2 (each = width / 2) |
| /mail/action_command | sensor_msgs/JointState | names = action names, position = command |
| /mail/episode | std_msgs/String | JSON {"event": "start"/"end", "episode", "task", "seed", ...} |

In a demo written here, the observation of control step k and the action chosen from it carry the
same stamp (k * dt after the episode start); the bag's log time equals the header stamp.

Recorded actions (`recorded_action`): a command topic (/mail/action_command: names are the action names)
is taken as it is. A topic that carries the arm's measured joint state (it names both finger joints,
e.g. /joint_states of a hand-guided demonstration, recorded with the controller disabled) is read as
the commands that would have produced it: the joints and gripper width measured at t are the action
stamped t - lead, the target the arm reaches one lead (one dt) after the observation it was chosen
from, as the recorded commands are.

`BagReader` opens mcap and sqlite3 bags alike and yields time-ordered typed records (camera frames
already decoded to RGB); `load_demo` turns one demo bag into aligned arrays. Bags recorded under other
names are read through a topic map (`data.topics.TopicMap`), the same one for training and replay.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Sequence

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore, get_types_from_msg

from ..spec import (
    FR3_FINGER_NAMES,
    FR3_JOINT_NAMES,
    GRIPPER_NAME,
    TOPIC_ACTION_COMMAND,
    TOPIC_EPISODE,
    TOPIC_JOINT_STATES,
    camera_image_topic,
    camera_info_topic,
)
from .images import msg_to_rgb, resize_to_model
from .topics import TopicMap

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
JOINT_STATE = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
DEFAULT_ACTION_NAMES = FR3_JOINT_NAMES + (GRIPPER_NAME,)


def _typestore():
    return get_typestore(Stores.ROS2_JAZZY)


class MissingTopicError(KeyError):
    """A bag lacks topics a consumer needs. The message names them and what the bag has."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
class DemoBagWriter:
    """Write one demonstration as a rosbag2 folder at ``path`` (must not exist).

        with DemoBagWriter(path, cameras={"agentview": 45.0, "wrist": 75.0}) as bag:
            bag.episode_event("start", 0.0, episode=0, task="push", seed=3)
            bag.observation(obs)          # env observation: images, joint_state, time
            bag.action(obs["time"], action)
            bag.episode_event("end", t, episode=0, success=True)

    ``cameras`` maps camera name -> vertical field of view [deg] (for CameraInfo). Stamps are
    ``stamp_base_ns`` + episode time; by default the wall clock when the bag was opened.
    """

    def __init__(
        self,
        path: str | Path,
        cameras: dict[str, float],
        storage: str = "mcap",
        action_names: Sequence[str] = DEFAULT_ACTION_NAMES,
        stamp_base_ns: int | None = None,
    ):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        self.cameras = dict(cameras)
        self.action_names = list(action_names)
        self.stamp_base_ns = time.time_ns() if stamp_base_ns is None else int(stamp_base_ns)
        self._ts = _typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self._conns: dict[str, Any] = {}
        self._open = False

    def __enter__(self) -> DemoBagWriter:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        self._writer.open()
        self._open = True
        for cam in self.cameras:
            self._add(camera_image_topic(cam), IMAGE)
            self._add(camera_info_topic(cam), CAMERA_INFO)
        self._add(TOPIC_JOINT_STATES, JOINT_STATE)
        self._add(TOPIC_ACTION_COMMAND, JOINT_STATE)
        self._add(TOPIC_EPISODE, STRING)

    def close(self) -> None:
        if self._open:
            self._writer.close()
            self._open = False

    def _add(self, topic: str, msgtype: str) -> None:
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self._ts)

    def _stamp(self, t: float) -> tuple[int, Any]:
        ns = self.stamp_base_ns + int(round(t * 1e9))
        return ns, self._ts.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def _header(self, stamp, frame_id: str = ""):
        return self._ts.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def _write(self, topic: str, ns: int, msg, msgtype: str) -> None:
        self._writer.write(self._conns[topic], ns, self._ts.serialize_cdr(msg, msgtype))

    def episode_event(self, event: str, t: float, **fields) -> None:
        ns, _ = self._stamp(t)
        payload = json.dumps({"event": event, **fields}, sort_keys=True, default=json_default)
        self._write(TOPIC_EPISODE, ns, self._ts.types[STRING](data=payload), STRING)

    def image(self, camera: str, t: float, rgb: np.ndarray) -> None:
        ns, stamp = self._stamp(t)
        h, w = rgb.shape[:2]
        types = self._ts.types
        msg = types[IMAGE](header=self._header(stamp, f"{camera}_optical_frame"), height=h, width=w,
                           encoding="rgb8", is_bigendian=0, step=w * 3,
                           data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1))
        self._write(camera_image_topic(camera), ns, msg, IMAGE)
        f = (h / 2.0) / math.tan(math.radians(self.cameras[camera]) / 2.0)
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        info = types[CAMERA_INFO](
            header=self._header(stamp, f"{camera}_optical_frame"), height=h, width=w, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
            p=np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )
        self._write(camera_info_topic(camera), ns, info, CAMERA_INFO)

    def joint_state(self, t: float, state8: np.ndarray, velocity9=None, effort9=None) -> None:
        """``state8`` = [q1..q7, gripper width]; written as 7 joints + 2 fingers (width / 2 each)."""
        ns, stamp = self._stamp(t)
        s = np.asarray(state8, float)
        position = np.concatenate([s[:7], [s[7] / 2, s[7] / 2]])
        msg = self._ts.types[JOINT_STATE](
            header=self._header(stamp), name=list(FR3_JOINT_NAMES + FR3_FINGER_NAMES), position=position,
            velocity=np.asarray(velocity9 if velocity9 is not None else [], float),
            effort=np.asarray(effort9 if effort9 is not None else [], float),
        )
        self._write(TOPIC_JOINT_STATES, ns, msg, JOINT_STATE)

    def observation(self, obs: dict, velocity9=None, effort9=None) -> None:
        """An env observation: every camera image + the joint state, stamped ``obs["time"]``."""
        for cam in self.cameras:
            self.image(cam, obs["time"], obs["images"][cam])
        self.joint_state(obs["time"], obs["joint_state"], velocity9, effort9)

    def action(self, t: float, action: np.ndarray) -> None:
        ns, stamp = self._stamp(t)
        a = np.asarray(action, float)
        if a.shape != (len(self.action_names),):
            raise ValueError(f"action has {a.shape} values, expected {len(self.action_names)} ({self.action_names})")
        msg = self._ts.types[JOINT_STATE](header=self._header(stamp), name=self.action_names, position=a,
                                          velocity=np.zeros(0), effort=np.zeros(0))
        self._write(TOPIC_ACTION_COMMAND, ns, msg, JOINT_STATE)


def json_default(o):
    """`default=` for json.dumps: numpy scalars and arrays as plain numbers and lists."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """Any message: ``msg`` is the deserialised rosbags object."""

    topic: str
    log_time_ns: int
    stamp_ns: int | None
    msgtype: str
    msg: Any = field(repr=False)


@dataclass(frozen=True)
class ImageRecord:
    topic: str
    log_time_ns: int
    stamp_ns: int
    frame_id: str
    image: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB, native size


@dataclass(frozen=True)
class JointStateRecord:
    topic: str
    log_time_ns: int
    stamp_ns: int
    names: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@dataclass(frozen=True)
class CameraInfoRecord:
    topic: str
    log_time_ns: int
    stamp_ns: int
    height: int
    width: int
    k: np.ndarray  # (3, 3)


@dataclass(frozen=True)
class EpisodeEventRecord:
    topic: str
    log_time_ns: int
    stamp_ns: None
    event: dict


def _stamp_ns(msg) -> int | None:
    header = getattr(msg, "header", None)
    if header is None:
        return None
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class BagReader:
    """Read a rosbag2 folder (mcap or sqlite3 storage; also the .mcap/.db3 file inside it).

        with BagReader(path) as bag:
            bag.require([TOPIC_JOINT_STATES, camera_image_topic("wrist")])
            for rec in bag.records():      # time-ordered by log time
                ...
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_file():
            path = path.parent
        if not (path / "metadata.yaml").is_file():
            raise FileNotFoundError(f"{path} is not a rosbag2 folder (no metadata.yaml)")
        self.path = path
        self._reader = Reader(path)
        self._ts = _typestore()

    def __enter__(self) -> BagReader:
        self._reader.open()
        for conn in self._reader.connections:
            if conn.msgtype not in self._ts.types:
                self._register(conn)
        return self

    def __exit__(self, *exc) -> None:
        self._reader.close()

    def _register(self, conn) -> None:
        msgdef = getattr(conn, "msgdef", None)
        text = getattr(msgdef, "data", msgdef) if msgdef is not None else None
        if text:
            try:
                self._ts.register(get_types_from_msg(text, conn.msgtype))
            except Exception:  # noqa: BLE001 - unparsable definition: its records stay raw bytes
                pass

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type, e.g. {"/joint_states": "sensor_msgs/msg/JointState"}."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    def message_count(self, topic: str) -> int:
        return sum(c.msgcount for c in self._reader.connections if c.topic == topic)

    def require(self, topics: Sequence[str]) -> None:
        missing = [t for t in topics if t not in self.topics]
        if missing:
            raise MissingTopicError(
                f"bag {self.path} lacks topic(s) {missing}; it has {sorted(self.topics)}"
            )

    def records(self, topics: Sequence[str] | None = None, decode_images: bool = True,
                episode_topic: str = TOPIC_EPISODE) -> Iterator:
        """Time-ordered records of ``topics`` (all when None; every requested topic must exist).
        Images and compressed images become ImageRecord (RGB, native size) when ``decode_images``;
        std_msgs/String on ``episode_topic`` (a topic map's ``episode``) become EpisodeEventRecord."""
        if topics is not None:
            self.require(topics)
            conns = [c for c in self._reader.connections if c.topic in set(topics)]
        else:
            conns = list(self._reader.connections)
        for conn, log_time, raw in self._reader.messages(connections=conns):
            if conn.msgtype not in self._ts.types:  # no definition known: msg is the raw CDR bytes
                yield Record(conn.topic, log_time, None, conn.msgtype, raw)
                continue
            msg = self._ts.deserialize_cdr(raw, conn.msgtype)
            yield self._typed(conn.topic, conn.msgtype, log_time, msg, decode_images, episode_topic)

    @staticmethod
    def _typed(topic: str, msgtype: str, log_time: int, msg, decode_images: bool,
               episode_topic: str = TOPIC_EPISODE):
        stamp = _stamp_ns(msg)
        if msgtype in (IMAGE, COMPRESSED_IMAGE) and decode_images:
            return ImageRecord(topic, log_time, stamp, msg.header.frame_id, msg_to_rgb(msg))
        if msgtype == JOINT_STATE:
            return JointStateRecord(topic, log_time, stamp, tuple(msg.name), np.asarray(msg.position, float),
                                    np.asarray(msg.velocity, float), np.asarray(msg.effort, float))
        if msgtype == CAMERA_INFO:
            return CameraInfoRecord(topic, log_time, stamp, int(msg.height), int(msg.width),
                                    np.asarray(msg.k, float).reshape(3, 3))
        if msgtype == STRING and topic == episode_topic:
            try:
                event = json.loads(msg.data)
            except json.JSONDecodeError:
                event = {"event": "invalid", "data": msg.data}
            return EpisodeEventRecord(topic, log_time, None, event)
        return Record(topic, log_time, stamp, msgtype, msg)


# ------------------------------------------------------------------------------------------------
# One demo -> arrays
# ------------------------------------------------------------------------------------------------
@dataclass
class Demo:
    """One demonstration, aligned per action: row k holds the latest frame of each camera and the
    latest joint state stamped at or before action k's stamp, and action k itself."""

    images: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8, resized to the requested size
    joint_state: np.ndarray  # (T, 8): q1..q7, gripper width
    actions: np.ndarray  # (T, A)
    action_names: tuple[str, ...]
    times: np.ndarray  # (T,) seconds since the first action
    events: list[dict]  # the /mail/episode JSON events, in order

    @property
    def success(self) -> bool | None:
        ends = [e for e in self.events if e.get("event") == "end"]
        return bool(ends[-1].get("success")) if ends and "success" in ends[-1] else None

    def __len__(self) -> int:
        return len(self.actions)


def joint_state_to_vector(names: Sequence[str], position: np.ndarray) -> np.ndarray:
    """JointState (fr3_joint1..7 + both fingers, any order) -> [q1..q7, width]."""
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in FR3_JOINT_NAMES + FR3_FINGER_NAMES if n not in index]
    if missing:
        raise ValueError(f"joint state lacks joints {missing}; it has {list(names)}")
    q = [position[index[n]] for n in FR3_JOINT_NAMES]
    width = sum(position[index[n]] for n in FR3_FINGER_NAMES)
    return np.array([*q, width], float)


ARM_ACTION_NAMES: tuple[str, ...] = FR3_JOINT_NAMES + (GRIPPER_NAME,)


def is_measured_arm_state(names: Sequence[str]) -> bool:
    """A JointState of the arm itself (fingers named), not a command (which names the gripper width)."""
    return all(n in names for n in FR3_FINGER_NAMES)


def recorded_action(rec: JointStateRecord, lead_s: float) -> tuple[int, tuple[str, ...], np.ndarray]:
    """(stamp [ns], names, values) of the action a recorded JointState stands for (module docstring):
    a command as it is; a measured arm state as [q1..q7, width] stamped ``lead_s`` earlier."""
    if is_measured_arm_state(rec.names):
        return (rec.stamp_ns - int(round(lead_s * 1e9)), ARM_ACTION_NAMES,
                joint_state_to_vector(rec.names, rec.position))
    return rec.stamp_ns, tuple(rec.names), np.asarray(rec.position, float)


def load_demo(
    path: str | Path,
    cameras: Sequence[str] = ("agentview", "wrist"),
    image_size: tuple[int, int] | None = (128, 128),
    topics: TopicMap | None = None,
) -> Demo:
    """Read one demo bag into aligned arrays (images resized by `data.images.resize_to_model` when
    ``image_size`` is given), its topics named by ``topics`` (`data.topics.TopicMap`; default the
    stack's). Raises MissingTopicError naming any missing topic, ValueError when an action has no
    earlier observation."""
    topics = topics or TopicMap()
    image_topics = {topics.camera_topic(c): c for c in cameras}
    joint_topic, action_topic, episode_topic = topics.joint_states, topics.action, topics.episode
    needed = list(dict.fromkeys([*image_topics, joint_topic, action_topic]))
    frames: dict[str, tuple[list, list]] = {c: ([], []) for c in cameras}  # camera -> (stamps, images)
    states: tuple[list, list] = ([], [])
    actions: tuple[list, list] = ([], [])
    events: list[dict] = []
    action_names: tuple[str, ...] = ()
    with BagReader(path) as bag:
        bag.require(needed)
        read = needed + ([episode_topic] if episode_topic in bag.topics else [])
        for rec in bag.records(read, episode_topic=episode_topic):
            if isinstance(rec, EpisodeEventRecord):
                events.append(rec.event)
            elif rec.topic in image_topics:
                img = rec.image if image_size is None else resize_to_model(rec.image, *image_size)
                frames[image_topics[rec.topic]][0].append(rec.stamp_ns)
                frames[image_topics[rec.topic]][1].append(img)
            elif rec.topic == joint_topic:
                states[0].append(rec.stamp_ns)
                states[1].append(joint_state_to_vector(rec.names, rec.position))
            if rec.topic == action_topic and not isinstance(rec, EpisodeEventRecord):
                action_names = action_names or rec.names
                actions[0].append(rec.stamp_ns)
                actions[1].append(rec.position)
    if not actions[0]:
        raise ValueError(f"{path}: no messages on {action_topic}")
    order = np.argsort(actions[0], kind="stable")
    action_stamps = np.asarray(actions[0], np.int64)[order]

    def latest(stamps: list, values: list, what: str) -> np.ndarray:
        # Latest value stamped at or before each action (header stamps, not bag order: an
        # observation and the action taken from it may share one stamp).
        s = np.asarray(stamps, np.int64)
        idx_sorted = np.argsort(s, kind="stable")
        pos = np.searchsorted(s[idx_sorted], action_stamps, side="right") - 1
        if len(s) == 0 or pos[0] < 0:
            raise ValueError(f"{path}: the first action comes before the first {what}")
        return np.stack([values[i] for i in idx_sorted[pos]])

    images = {c: latest(*frames[c], f"{c} image") for c in cameras}
    joint_state = latest(*states, "joint state")
    t = (action_stamps - action_stamps[0]) / 1e9
    return Demo(images, joint_state, np.stack([actions[1][i] for i in order]), tuple(action_names), t, events)
