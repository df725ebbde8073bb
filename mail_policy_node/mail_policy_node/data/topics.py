"""Which bag topics hold what: the one topic map of everything that reads bags (`mail-il train`,
`mail-il replay`, `data.bags.load_demo`; `mail-il eval` runs the simulator and reads no bag).

Defaults are the stack's conventions (``spec``). A bag recorded with other names is read through a
small YAML map (every key optional; unlisted ones keep the stack's name):

    cameras:                      # camera name (as in the training config / checkpoint) -> topic
      agentview: /cam_high/color/image_raw/compressed
      wrist: /cam_wrist/color/image_raw
    joint_states: /franka/joint_states
    action: /mail/action_command  # sensor_msgs/JointState: commands (names = action names), or a
                                  # measured joint state (hand-guided demonstrations, `data.bags.recorded_action`)
    episode: /mail/episode        # std_msgs/String JSON events; absent from a bag: the bag is one episode

Camera topics may carry sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) or sensor_msgs/CompressedImage
(jpeg, png), decoded by `data.images` alike for training and replay. The joint-state topic is a
sensor_msgs/JointState naming fr3_joint1..7 and both fr3_finger_joint1/2 in any order (other joints are
ignored), at any rate: training and replay take the latest one stamped at or before each observation.

Where a map comes from:
- replay: ``mail-il replay ... --topics-map FILE``;
- training: ``data.topics_map: FILE`` and / or ``data.topics: {...}`` (the same keys inline, over the
  file's: cameras one by one, the other keys whole), in the config or on the command line
  (``data.topics_map=lab.yaml``, ``data.topics.action=/robot/command``); ``data.action_topic`` is
  shorthand for ``action`` (an error when both name different topics).
A FILE that is a training config (a YAML with a ``data`` section) gives that config's map: a checkpoint's
bags replay through the map they were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Sequence

import yaml

from ..spec import TOPIC_ACTION_COMMAND, TOPIC_EPISODE, TOPIC_JOINT_STATES, FeatureSpec, camera_image_topic

KEYS = ("cameras", "joint_states", "action", "episode")


@dataclass(frozen=True)
class TopicMap:
    cameras: dict[str, str] = field(default_factory=dict)  # camera -> topic; unlisted: /camera/<name>/image_raw
    joint_states: str = TOPIC_JOINT_STATES
    action: str = TOPIC_ACTION_COMMAND
    episode: str = TOPIC_EPISODE

    def camera_topic(self, camera: str) -> str:
        return self.cameras.get(camera, camera_image_topic(camera))

    def streams(self, cameras: Sequence[str], joint_state: bool = True) -> dict[str, str]:
        """The topics a reader of ``cameras`` (and the joint state) needs: topic -> what it is for."""
        out = {self.camera_topic(c): f"camera {c!r}" for c in cameras}
        if joint_state:
            out[self.joint_states] = "joint state"
        out[self.action] = "recorded actions"
        return out

    def needed(self, spec: FeatureSpec) -> dict[str, str]:
        """What a policy with ``spec`` needs from the bag: topic -> what it is for."""
        return self.streams(spec.camera_names, spec.use_joint_state)

    def resolved(self, cameras: Sequence[str]) -> dict:
        """Every topic ``cameras`` are read from, defaults filled in (for cache keys and run records)."""
        return dict(cameras={c: self.camera_topic(c) for c in cameras}, joint_states=self.joint_states,
                    action=self.action, episode=self.episode)

    def merged(self, d: dict | None) -> TopicMap:
        """This map with the keys of ``d`` (a map's dict) over it: cameras one by one, the others whole."""
        other = TopicMap.from_dict(d)
        kw = {k: getattr(other, k) for k in ("joint_states", "action", "episode") if (d or {}).get(k)}
        return replace(self, cameras={**self.cameras, **other.cameras}, **kw)

    @classmethod
    def from_dict(cls, d: dict | None) -> TopicMap:
        d = d or {}
        if not isinstance(d, dict):
            raise ValueError(f"a topic map is a mapping with keys {KEYS}, got {type(d).__name__}")
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown topic map keys {unknown}; known: {list(KEYS)}")
        cams = d.get("cameras") or {}
        if not isinstance(cams, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cams.items()):
            raise ValueError(f"topic map 'cameras' must map camera names to topics, got {cams!r}")
        kw = {k: str(d[k]) for k in ("joint_states", "action", "episode") if d.get(k)}
        for key, topic in [*kw.items(), *cams.items()]:
            if not topic.startswith("/"):
                raise ValueError(f"topic map: {key} topic {topic!r} must start with '/'")
        return cls(cameras=dict(cams), **kw)

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> TopicMap:
        """A map's YAML file, or a training config's map (a YAML with a ``data`` section)."""
        if path is None:
            return cls()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"topic map {path} does not exist")
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"topic map {path} is not YAML: {e}") from None
        try:
            if isinstance(d, dict) and "data" in d:
                data = d["data"] if isinstance(d["data"], dict) else {}
                return cls.resolve(data.get("topics"), data.get("topics_map"), data.get("action_topic"))
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"topic map {path}: {e}") from None

    @classmethod
    def resolve(cls, topics: dict | None = None, topics_map: str | Path | None = None,
                action_topic: str | None = None) -> TopicMap:
        """A training config's map: the file ``topics_map``, then the inline keys ``topics`` over it, then
        ``action_topic`` (when not the stack's default) as ``action``."""
        m = (cls.from_yaml(topics_map) if topics_map else cls()).merged(topics)
        if action_topic and action_topic != TOPIC_ACTION_COMMAND:
            if m.action not in (TOPIC_ACTION_COMMAND, action_topic):
                raise ValueError(f"data.action_topic {action_topic!r} and the topic map's action {m.action!r} "
                                 "name different topics; set one of them")
            m = replace(m, action=str(action_topic))
        return m

    def to_dict(self) -> dict:
        return dict(cameras=dict(self.cameras), joint_states=self.joint_states, action=self.action,
                    episode=self.episode)
