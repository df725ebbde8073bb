"""The one feature specification shared by data, model, engine and robot loop.

A `FeatureSpec` says which cameras (and at what size), which joint state, which action space and
dimensions, the observation history K, the chunk length J and the action time step. It is stored in
every checkpoint and checked against the robot's topics, so a policy can never be run on inputs it was
not trained on. Topic names and message conventions of the stack are defined here too, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# --- names and topics (the stack's conventions; a real robot's bag must follow the same) ---
FR3_JOINT_NAMES: tuple[str, ...] = tuple(f"fr3_joint{i}" for i in range(1, 8))
FR3_FINGER_NAMES: tuple[str, ...] = ("fr3_finger_joint1", "fr3_finger_joint2")  # each = half the width [m]
GRIPPER_NAME = "gripper"  # gripper opening width [m], 0 (closed) .. 0.08 (open)

ACTION_SPACE_JOINT_POSITION = "joint_position"  # absolute joint targets [rad] + gripper width [m]
ACTION_SPACE_EE_DELTA_POSE = "ee_delta_pose"  # [dx dy dz drx dry drz] base frame [m, rad] + gripper width
# Meta-World's action (benchmarks.metaworld, a simulated Sawyer): the hand's position step and the grip effort,
# each normalised to [-1, 1] (a hand step of 1 = 1 cm of the mocap target; effort -1 open .. 1 close). No
# unit an FR3 can execute: the controller refuses it (ROBOT_ACTION_SPACES), it is for simulation only.
ACTION_SPACE_EE_DELTA_POSITION = "ee_delta_position"
ACTION_SPACES = (ACTION_SPACE_JOINT_POSITION, ACTION_SPACE_EE_DELTA_POSE, ACTION_SPACE_EE_DELTA_POSITION)
# what the arm controller (control.chunks, control.controller) executes on an FR3: every other space is refused
ROBOT_ACTION_SPACES = (ACTION_SPACE_JOINT_POSITION, ACTION_SPACE_EE_DELTA_POSE)
EE_DELTA_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "drx", "dry", "drz")
EE_DELTA_POSITION_NAMES: tuple[str, ...] = ("hand_dx", "hand_dy", "hand_dz", "grip_effort")  # each in [-1, 1]

TOPIC_JOINT_STATES = "/joint_states"  # sensor_msgs/JointState: FR3_JOINT_NAMES + FR3_FINGER_NAMES
TOPIC_ACTION_COMMAND = "/mail/action_command"  # sensor_msgs/JointState: names = action names, position = command
TOPIC_ACTION_CHUNK = "/mail/action_chunk"  # mail_msgs/ActionChunk
TOPIC_POLICY_STATUS = "/mail/policy_status"  # mail_msgs/PolicyStatus
TOPIC_CONTROLLER_STATUS = "/mail/controller_status"  # mail_msgs/ControllerStatus
TOPIC_ESTOP = "/mail/estop"  # std_msgs/Bool: true = hold and refuse enable, false = release
TOPIC_EPISODE = "/mail/episode"  # std_msgs/String, JSON {"event": "start"|"end", "episode": n, "task": ..., ...}
MAX_TASK_NAME_CHARS = 64  # a task name in FeatureSpec.task_names (training: the episode events' "task")


def relative(topic: str) -> str:
    """The name a node uses for one of the topics above: relative, so it resolves in the node's namespace
    (``/joint_states`` without one, ``/arm1/joint_states`` in ``arm1``: two arms share one graph). The
    absolute names above are those of a graph without a namespace, and of the topics in recorded bags."""
    return topic.lstrip("/")


def camera_image_topic(camera: str) -> str:
    """sensor_msgs/Image (rgb8 preferred; bgr8, mono8 accepted) stamped with acquisition time."""
    return f"/camera/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    return f"/camera/{camera}/camera_info"


@dataclass(frozen=True)
class CameraSpec:
    name: str  # e.g. "agentview", "wrist"
    height: int = 128  # model input size; frames of another size are resized (see data.images)
    width: int = 128

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"camera name must be a non-empty name without '/', got {self.name!r}")
        if not (16 <= self.height <= 1024 and 16 <= self.width <= 1024):
            raise ValueError(f"camera {self.name!r}: image size {self.height}x{self.width} outside 16..1024")


def action_space_of(action_names) -> str:
    """The action space that action names mean: the FR3's end-effector delta pose when they start with
    `EE_DELTA_NAMES`, Meta-World's hand steps when they are `EE_DELTA_POSITION_NAMES`, else joint positions."""
    names = tuple(action_names)
    if names[:len(EE_DELTA_NAMES)] == EE_DELTA_NAMES:
        return ACTION_SPACE_EE_DELTA_POSE
    if names == EE_DELTA_POSITION_NAMES:
        return ACTION_SPACE_EE_DELTA_POSITION
    return ACTION_SPACE_JOINT_POSITION


def relative_action_index(action_names, state_names) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The FR3 arm joints named in both: (their action indices, their state indices). Nothing else pairs: no
    other state (another robot's joints, a hand position) is an offset base for relative actions."""
    pairs = [(i, list(state_names).index(n)) for i, n in enumerate(action_names)
             if n in FR3_JOINT_NAMES and n in state_names]
    return tuple(a for a, _ in pairs), tuple(s for _, s in pairs)


def named_state(names, position, state_names, what: str) -> list[float]:
    """The ``state_names`` entries of a JointState (``names``, ``position``), in that order (``gripper``: the FR3
    fingers' sum when the message has no entry of that name): how the policy node (runtime.joint_state_vector)
    and training (data.state_names) read a joint state. ValueError naming what is missing, of ``what``, and
    what the message has."""
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in state_names if n not in index and not (n == GRIPPER_NAME and all(
        f in index for f in FR3_FINGER_NAMES))]
    if missing:
        raise ValueError(f"joint state lacks {missing} of {what} {list(state_names)}; it has {list(names)}")
    return [position[index[n]] if n in index else sum(position[index[f]] for f in FR3_FINGER_NAMES)
            for n in state_names]


@dataclass(frozen=True)
class FeatureSpec:
    cameras: tuple[CameraSpec, ...] = (CameraSpec("agentview"), CameraSpec("wrist"))
    use_joint_state: bool = False  # add the joint state (state_names: 7 joints + gripper width) as a token
    action_space: str = ACTION_SPACE_JOINT_POSITION
    action_names: tuple[str, ...] = FR3_JOINT_NAMES + (GRIPPER_NAME,)
    obs_horizon: int = 5  # K: observations per window
    action_horizon: int = 5  # J: actions per chunk
    dt: float = 0.1  # seconds between consecutive actions (and observations at training time)
    goal_embedding_dim: int = 0  # >0: a precomputed goal (language) embedding of this size is an input
    # the joint state's entries: the FR3's 7 joints + gripper width, or another robot's /joint_states names
    # (training: data.state_names; Meta-World: the hand's position and gripper opening)
    state_names: tuple[str, ...] = field(default=FR3_JOINT_NAMES + (GRIPPER_NAME,))
    # the arm joints' actions are learnt as offsets from the newest observed joint state, and the engine
    # adds that state back (chunks are absolute targets either way; the gripper stays absolute). A push
    # moves the hand ~6 mm per step: absolute targets normalised over the workspace left the policy's
    # error several times that step, relative ones are normalised over a chunk's motion.
    relative_actions: bool = False
    # a multi-task policy's tasks: its goal input is the one-hot of the task's index here (goal i asks for
    # task_names[i]; goal_embedding_dim = their number). Empty: no task goal (a single-task policy, or a
    # goal embedding that is no task one-hot)
    task_names: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.cameras:
            raise ValueError("FeatureSpec needs at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate camera names: {names}")
        if self.action_space not in ACTION_SPACES:
            raise ValueError(f"action_space must be one of {ACTION_SPACES}, got {self.action_space!r}")
        if not self.action_names or len(set(self.action_names)) != len(self.action_names):
            raise ValueError(f"action_names must be non-empty and unique, got {self.action_names}")
        if self.action_space == ACTION_SPACE_EE_DELTA_POSITION and self.action_names != EE_DELTA_POSITION_NAMES:
            raise ValueError(f"action space {ACTION_SPACE_EE_DELTA_POSITION} has the actions "
                             f"{list(EE_DELTA_POSITION_NAMES)}, got {list(self.action_names)}")
        if len(set(self.state_names)) != len(self.state_names):
            raise ValueError(f"state_names must be unique, got {list(self.state_names)}")
        if self.obs_horizon < 1 or self.action_horizon < 1:
            raise ValueError(f"K and J must be >= 1, got K={self.obs_horizon} J={self.action_horizon}")
        if not 0.001 <= self.dt <= 10.0:
            raise ValueError(f"dt must be in [0.001, 10] s, got {self.dt}")
        if self.goal_embedding_dim < 0:
            raise ValueError(f"goal_embedding_dim must be >= 0, got {self.goal_embedding_dim}")
        if self.relative_actions and not (self.use_joint_state and self.action_space == ACTION_SPACE_JOINT_POSITION
                                          and relative_action_index(self.action_names, self.state_names)[0]):
            raise ValueError("relative_actions needs joint_position actions, use_joint_state and arm joints "
                             "named in both action_names and state_names")
        if self.task_names:
            bad = [n for n in self.task_names if not isinstance(n, str) or not 1 <= len(n) <= MAX_TASK_NAME_CHARS]
            if bad:
                raise ValueError(f"task_names must be names of 1..{MAX_TASK_NAME_CHARS} characters, got {bad[:4]}")
            if len(set(self.task_names)) != len(self.task_names):
                raise ValueError(f"duplicate task names: {list(self.task_names)}")
            if self.goal_embedding_dim != len(self.task_names):
                raise ValueError(f"{len(self.task_names)} task names need goal_embedding_dim {len(self.task_names)} "
                                 f"(one-hot goals), got {self.goal_embedding_dim}")

    @property
    def action_lead_s(self) -> float:
        """When a recorded action is due after the observation it was recorded with: one dt. The demos
        record the joint target the arm reaches one step later (sim.env ramps to it over dt), so the
        engine stamps action i due at stamp + (i + 1) * dt and replay scores recorded actions there."""
        return self.dt

    @property
    def relative_index(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(action indices, state indices) that relative_actions offsets; empty when it is off."""
        return relative_action_index(self.action_names, self.state_names) if self.relative_actions else ((), ())

    def task_goal(self, task: str | None) -> tuple[float, ...] | None:
        """The goal input that asks this policy for ``task``: the one-hot of its index in task_names; None
        for a policy without task names (``task`` is then not used). ValueError, naming the tasks, when a
        multi-task policy is given no task or one it was not trained on."""
        if not self.task_names:
            return None
        if not task:
            raise ValueError(f"this policy was trained on the tasks {list(self.task_names)}: name the one to do")
        if task not in self.task_names:
            raise ValueError(f"task {task!r} is not one this policy was trained on: {list(self.task_names)}")
        return tuple(float(n == task) for n in self.task_names)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cameras"] = [asdict(c) for c in self.cameras]
        d["action_names"] = list(self.action_names)
        d["state_names"] = list(self.state_names)
        if self.task_names:
            d["task_names"] = list(self.task_names)
        else:  # a single-task policy's config.json is what it was before task names existed
            del d["task_names"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FeatureSpec fields: {sorted(unknown)}")
        d = dict(d)
        if "cameras" in d:
            d["cameras"] = tuple(CameraSpec(**c) for c in d["cameras"])
        if "task_names" in d and not isinstance(d["task_names"], (list, tuple)):
            raise ValueError(f"FeatureSpec.task_names must be a list of names, got {type(d['task_names']).__name__}")
        for key in ("action_names", "state_names", "task_names"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def incompatibilities(self, other: FeatureSpec) -> list[str]:
        """Reasons why a policy trained on ``self`` cannot replace one trained on ``other`` on the same
        robot (hot swap): cameras, action space and dimensions must match. Empty list = compatible."""
        reasons = []
        if self.camera_names != other.camera_names:
            reasons.append(f"cameras {list(self.camera_names)} != {list(other.camera_names)}")
        if self.action_space != other.action_space:
            reasons.append(f"action space {self.action_space} != {other.action_space}")
        if self.action_names != other.action_names:
            reasons.append(f"action dimensions {list(self.action_names)} != {list(other.action_names)}")
        if self.use_joint_state != other.use_joint_state:
            reasons.append(f"use_joint_state {self.use_joint_state} != {other.use_joint_state}")
        return reasons
