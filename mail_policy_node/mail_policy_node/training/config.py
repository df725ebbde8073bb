"""Training configuration: one YAML file, three sections, validated dataclasses.

    data:    {bags: [runs/demos/reach], image_size: [64, 64], use_joint_state: true, fraction: 1.0, tasks: [], ...}
    policy:  {backbone: D-Ma, layout: paper, head: BC, history: window, size: small, obs_horizon: 1, ...}
    train:   {steps: 3000, batch_size: 256, lr: 5.0e-4, seed: 0, device: cpu, ...}
    out: runs/train/reach_dma_bc

Command-line overrides are ``section.key=value`` (the value is parsed as YAML), e.g.
``train.steps=200 policy.head=DDPM data.fraction=0.2``. Unknown keys are errors naming the key. Bags
recorded under other topic names: ``data.topics_map=lab.yaml`` (the format of `data.topics`).
Defaults are the paper's (Adam 5e-4, batch 256, EMA 0.995 with warm-up for DDPM, 50 epochs).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..data.topics import TopicMap
from ..model.backbone_registry import BackboneFamily, backbone_by_name, backbone_families
from ..checkpoint_limits import MAX_NAME_CHARS, MAX_STATE_DIM
from ..spec import FR3_JOINT_NAMES, MAX_TASK_NAME_CHARS

HEADS = {"bc": "bc", "ddpm": "ddpm"}


# Model sizes beyond the paper's: encoder widths here; each backbone's depths of a size are its registry
# entry's (BackboneFamily.size_depths; a size it does not list, such as "paper", keeps the preset depths of
# backbone_preset). "paper" has width 128 and a full ResNet-18 per camera.
SIZE_PRESETS = {
    "paper": dict(encoder=dict(d_model=128, base_width=64, keypoints=32, camera_features=128)),
    "small": dict(encoder=dict(d_model=64, base_width=16, keypoints=16, camera_features=64)),
    "tiny": dict(encoder=dict(d_model=32, base_width=16, keypoints=8, camera_features=16)),
}
SIZES = tuple(SIZE_PRESETS)


class ConfigError(ValueError):
    """A training config that cannot be used, naming the key and the bad value."""


@dataclass
class DataConfig:
    bags: list[str] = field(default_factory=list)  # rosbag2 folders, or folders searched for them
    cameras: list[str] = field(default_factory=lambda: ["agentview", "wrist"])
    image_size: list[int] = field(default_factory=lambda: [128, 128])  # model input (H, W)
    use_joint_state: bool = False  # joint state (7 joints + gripper width) as an extra observation token
    # which /joint_states entries the joint state is, in this order (FeatureSpec.state_names). Empty: the FR3's
    # 7 joints + gripper width (the fingers' sum), as always. Another robot's or a benchmark's names, e.g.
    # Meta-World's [hand_x, hand_y, hand_z, gripper_opening]: a bag lacking one is a DatasetError. The arm
    # joints pair with actions for policy.relative_actions only under the FR3's names
    state_names: list[str] = field(default_factory=list)
    dt: float = 0.1  # control period the actions are aligned to [s]
    # what the actions are: commands (/mail/action_command), or /joint_states for hand-guided demos (the
    # arm's joints and gripper width measured dt after each observation; training.episodes). Shorthand for
    # data.topics.action: when not this default, it is the topic map's action
    action_topic: str = "/mail/action_command"
    # which bag topics hold the cameras, joint state, actions and episode events (data.topics, the map
    # `mail-il replay --topics-map` takes): topics_map names a map's YAML file, topics holds the same keys
    # inline (over the file's), e.g. {cameras: {wrist: /cam_wrist/image_raw/compressed}, joint_states: ...}
    topics: dict = field(default_factory=dict)
    topics_map: str = ""
    skip_still_start: bool = False  # start episodes where the arm first moves (hand-guided demos: true)
    # multi-task training: the tasks, in the order of the goal's one-hot (goal i = tasks[i]; stored in the
    # checkpoint as FeatureSpec.task_names). Each episode's task is the "task" of its /mail/episode start
    # event (`mail-il demos` writes it); one without a task, or with a task not listed, is a DatasetError
    # naming its bag, and so is a listed task without episodes. Empty: one task, no goal input (as before)
    tasks: list[str] = field(default_factory=list)
    # use the first fraction of demonstrations (sorted by path): 0.2 = first 10 of 50. With tasks: the first
    # fraction of each task's demonstrations (the paper's "20 %" per LIBERO task), not of all of them
    fraction: float = 1.0
    # last episodes of the used ones held out for validation (at least 1 if > 0); with tasks, per task
    val_fraction: float = 0.1
    window_padding: bool = True  # windows at episode start repeat the first frame; chunks past the end
    #                              repeat the last action. False: only full windows.
    cache_dir: str = "runs/cache/datasets"  # decoded, resized frames (one folder per bag and settings)

    def validate(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"data.fraction must be in (0, 1], got {self.fraction}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if len(self.image_size) != 2 or min(self.image_size) < 32:
            raise ConfigError(f"data.image_size must be [H, W] with H, W >= 32, got {self.image_size}")
        if not self.cameras:
            raise ConfigError("data.cameras must name at least one camera")
        if not isinstance(self.tasks, list) or not all(isinstance(t, str) and 1 <= len(t) <= MAX_TASK_NAME_CHARS
                                                       for t in self.tasks):
            raise ConfigError(f"data.tasks must be a list of task names (1..{MAX_TASK_NAME_CHARS} characters), "
                              f"got {self.tasks!r}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"data.tasks names a task twice: {self.tasks}")
        if not isinstance(self.state_names, list) or not all(
                isinstance(n, str) and 1 <= len(n) <= MAX_NAME_CHARS for n in self.state_names):
            raise ConfigError(f"data.state_names must be a list of /joint_states names (1..{MAX_NAME_CHARS} "
                              f"characters), got {self.state_names!r}")
        if len(set(self.state_names)) != len(self.state_names):
            raise ConfigError(f"data.state_names names an entry twice: {self.state_names}")
        if len(self.state_names) > MAX_STATE_DIM:
            raise ConfigError(f"data.state_names: {len(self.state_names)} entries, at most {MAX_STATE_DIM}")
        if self.state_names and self.skip_still_start:
            raise ConfigError("data.skip_still_start looks for the FR3's joints and gripper width moving: it needs "
                              "data.state_names empty (the FR3 layout)")
        if not str(self.action_topic).startswith("/"):
            raise ConfigError(f"data.action_topic must be a topic name starting with '/', got {self.action_topic!r}")
        self.topic_map()

    def topic_map(self) -> TopicMap:
        """The bags' topic map: data.topics_map's file, data.topics over it, data.action_topic (data.topics)."""
        try:
            return TopicMap.resolve(self.topics or None, self.topics_map or None, self.action_topic)
        except ValueError as e:
            raise ConfigError(f"data.topics / data.topics_map: {e}") from None


@dataclass
class PolicySection:
    backbone: str = "D-Ma"  # a registered backbone's name: D-Ma, ED-Ma, D-Tr, ED-Tr (model/backbone_registry.py)
    layout: str = "paper"  # paper | streaming (Mamba only)
    head: str = "DDPM"  # BC | DDPM
    history: str = "window"  # window (K frames per step) | stream (state carried over the episode)
    size: str = "paper"  # paper | small | tiny: depths and encoder widths; then the overrides below
    obs_horizon: int = 5  # K
    action_horizon: int = 5  # J
    init: str = "paper"  # paper | mamba (Mamba's dt initialisation)
    relative_actions: bool = False  # arm-joint actions learnt as offsets from the current joint state
    backbone_overrides: dict = field(default_factory=dict)  # any BackboneConfig field
    encoder_overrides: dict = field(default_factory=dict)  # any ObsEncoderConfig field (d_model, base_width..)
    diffusion: dict = field(default_factory=dict)  # any DiffusionConfig field

    def validate(self) -> None:
        try:
            backbone_by_name(self.backbone)
        except ValueError:
            names = ", ".join(f.name for f in backbone_families())
            raise ConfigError(f"policy.backbone must be one of {names}, got {self.backbone!r}") from None
        if self.head.lower() not in HEADS:
            raise ConfigError(f"policy.head must be BC or DDPM, got {self.head!r}")
        if self.layout not in ("paper", "streaming"):
            raise ConfigError(f"policy.layout must be paper or streaming, got {self.layout!r}")
        if self.history not in ("window", "stream"):
            raise ConfigError(f"policy.history must be window or stream, got {self.history!r}")
        if self.history == "stream" and self.layout != "streaming":
            raise ConfigError("policy.history 'stream' needs policy.layout 'streaming'")
        if self.size not in SIZES:
            raise ConfigError(f"policy.size must be one of {SIZES}, got {self.size!r}")

    @property
    def family(self) -> BackboneFamily:
        """The registered backbone policy.backbone names (ValueError when none is)."""
        return backbone_by_name(self.backbone)

    @property
    def variant(self) -> str:
        return self.family.variant

    @property
    def head_name(self) -> str:
        return HEADS[self.head.lower()]


@dataclass
class TrainSection:
    epochs: float = 50  # passes over the training windows (episodes in stream mode); ignored if steps > 0
    steps: int = 0  # optimiser steps; > 0 overrides epochs
    batch_size: int = 256  # windows per step (paper)
    episodes_per_batch: int = 8  # episodes per step in history "stream"
    lr: float = 5e-4  # Adam, no weight decay, no scheduler, no clipping (paper)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 = none (paper)
    augment_shift: int = 0  # random image shift of up to this many pixels per sample and camera (0 = none,
    #                         the paper's); see training/augment.py. With fixed cameras the pixel position
    #                         is the target's position: 4 px at 64x64 took reach from 76 % to 58 %
    #                         (docs/results/train_recipes_h200.json)
    ema: str = "auto"  # auto (on for DDPM) | on | off
    ema_decay: float = 0.995  # max decay; warm-up min(decay, (1+n)/(10+n))
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 autocast on CUDA) | bf16 | off
    kernels: str = "auto"  # auto (mamba-ssm kernels on CUDA when installed) | off
    scan: str = "auto"  # Mamba scan without kernels: auto (sequential on CPU: ~8x faster for the short
    #                     sequences here; parallel on CUDA), parallel, sequential
    threads: int = 0  # torch CPU threads, 0 = torch's default
    val_every: int = 200  # steps between validation losses (and at the end)
    val_batches: int = 4  # validation batches per evaluation
    ckpt_every: int = 1000  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2  # most recent step checkpoints kept
    log_every: int = 10  # steps between progress-bar updates

    def validate(self) -> None:
        if self.steps < 0 or (self.steps == 0 and self.epochs <= 0):
            raise ConfigError(f"train needs steps > 0 or epochs > 0, got steps={self.steps} epochs={self.epochs}")
        if self.batch_size < 1 or self.episodes_per_batch < 1:
            raise ConfigError("train.batch_size and train.episodes_per_batch must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.augment_shift < 0:
            raise ConfigError(f"train.augment_shift must be >= 0 pixels, got {self.augment_shift}")
        if self.ema not in ("auto", "on", "off"):
            raise ConfigError(f"train.ema must be auto, on or off, got {self.ema!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"train.amp must be auto, bf16 or off, got {self.amp!r}")
        if self.kernels not in ("auto", "off"):
            raise ConfigError(f"train.kernels must be auto or off, got {self.kernels!r}")
        if self.scan not in ("auto", "parallel", "sequential"):
            raise ConfigError(f"train.scan must be auto, parallel or sequential, got {self.scan!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"train.device must be cpu or cuda[:N], got {self.device!r}")
        for name in ("val_every", "ckpt_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicySection = field(default_factory=PolicySection)
    train: TrainSection = field(default_factory=TrainSection)
    out: str = "runs/train/run"  # output folder: checkpoints/, final/, summary.json

    def validate(self) -> TrainConfig:
        self.data.validate()
        self.policy.validate()
        if self.policy.relative_actions and not self.data.use_joint_state:
            raise ConfigError("policy.relative_actions needs data.use_joint_state: true (the offsets are from it)")
        if self.policy.relative_actions and self.data.state_names and not set(self.data.state_names) & set(
                FR3_JOINT_NAMES):
            raise ConfigError(f"policy.relative_actions offsets the FR3's arm joints from their state, and "
                              f"data.state_names {self.data.state_names} names none of them")
        self.train.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a training config is a mapping, got {type(d).__name__}")
        sections = {"data": DataConfig, "policy": PolicySection, "train": TrainSection}
        unknown = set(d) - set(sections) - {"out"}
        if unknown:
            raise ConfigError(f"unknown top-level config keys {sorted(unknown)}; known: data, policy, train, out")
        kw = {}
        for name, klass in sections.items():
            sub = d.get(name) or {}
            if not isinstance(sub, dict):
                raise ConfigError(f"config section {name!r} must be a mapping")
            known = {f.name for f in fields(klass)}
            bad = set(sub) - known
            if bad:
                raise ConfigError(f"unknown keys in {name}: {sorted(bad)}; known: {sorted(known)}")
            kw[name] = klass(**_yaml_values(klass, name, sub))
        if "out" in d:
            kw["out"] = str(d["out"])
        return cls(**kw).validate()


def _yaml_values(klass, section: str, sub: dict) -> dict:
    """What YAML 1.1 reads differently from what a user means. ``off`` / ``on`` (and no / yes) are booleans:
    a boolean given for a text setting such as ``train.amp: off`` means that word. ``1e-3`` (no dot) is a
    string: text given for a number setting such as ``train.lr=1e-3`` is read as that number, and text that
    is no number is refused naming the key (not a TypeError inside validation)."""
    out = {}
    for f in fields(klass):
        if f.name not in sub:
            continue
        v = sub[f.name]
        if isinstance(f.default, str) and isinstance(v, bool):
            v = "on" if v else "off"
        elif isinstance(f.default, (int, float)) and not isinstance(f.default, bool) and isinstance(v, str):
            try:
                v = float(v) if isinstance(f.default, float) else int(v)
            except ValueError:
                kind = "a number" if isinstance(f.default, float) else "an integer"
                raise ConfigError(f"{section}.{f.name} must be {kind}, got {v!r}") from None
        out[f.name] = v
    return out


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """``["train.steps=10", "policy.head=BC"]`` applied to a config dict (copied)."""
    d = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.steps=100)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(text)
    return d


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    d = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        d = yaml.safe_load(path.read_text()) or {}
    return TrainConfig.from_dict(apply_overrides(d, list(overrides)))
