"""Which bag topics feed a replay: camera name -> image topic, joint state, recorded actions, episodes.

Defaults are the stack's conventions (``spec``); a real robot's bag with other names is mapped by a
small YAML file (every key optional):

    cameras:                      # camera name (as in the checkpoint) -> topic
      agentview: /cam_high/color/image_raw/compressed
      wrist: /cam_wrist/color/image_raw
    joint_states: /franka/joint_states
    action: /mail/action_command  # sensor_msgs/JointState, names = action names
    episode: /mail/episode        # std_msgs/String JSON events; absent: the bag is one episode

Image topics may carry sensor_msgs/Image (rgb8, bgr8, mono8, ...) or sensor_msgs/CompressedImage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..spec import TOPIC_ACTION_COMMAND, TOPIC_EPISODE, TOPIC_JOINT_STATES, FeatureSpec, camera_image_topic

_KEYS = ("cameras", "joint_states", "action", "episode")


@dataclass(frozen=True)
class TopicMap:
    cameras: dict[str, str] = field(default_factory=dict)  # camera -> topic; unlisted: /camera/<name>/image_raw
    joint_states: str = TOPIC_JOINT_STATES
    action: str = TOPIC_ACTION_COMMAND
    episode: str = TOPIC_EPISODE

    def camera_topic(self, camera: str) -> str:
        return self.cameras.get(camera, camera_image_topic(camera))

    def needed(self, spec: FeatureSpec) -> dict[str, str]:
        """What a policy with ``spec`` needs from the bag: topic -> what it is for."""
        out = {self.camera_topic(c): f"camera {c!r}" for c in spec.camera_names}
        if spec.use_joint_state:
            out[self.joint_states] = "joint state"
        out[self.action] = "recorded actions"
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> "TopicMap":
        d = d or {}
        if not isinstance(d, dict):
            raise ValueError(f"a topic map is a mapping with keys {_KEYS}, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_KEYS))
        if unknown:
            raise ValueError(f"unknown topic map keys {unknown}; known: {list(_KEYS)}")
        cams = d.get("cameras") or {}
        if not isinstance(cams, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cams.items()):
            raise ValueError(f"topic map 'cameras' must map camera names to topics, got {cams!r}")
        kw = {k: str(d[k]) for k in ("joint_states", "action", "episode") if d.get(k)}
        for key, topic in [*kw.items(), *cams.items()]:
            if not topic.startswith("/"):
                raise ValueError(f"topic map: {key} topic {topic!r} must start with '/'")
        return cls(cameras=dict(cams), **kw)

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> "TopicMap":
        if path is None:
            return cls()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"topic map {path} does not exist")
        return cls.from_dict(yaml.safe_load(path.read_text()))

    def to_dict(self) -> dict:
        return dict(cameras=dict(self.cameras), joint_states=self.joint_states, action=self.action,
                    episode=self.episode)
