"""Action chunks and their scheduling in time (latency compensation and blending across chunks).

Times are plain float seconds on one clock (the ROS node converts ``builtin_interfaces`` stamps).
Action i of a chunk is due at ``stamp + start_offset + i * dt``; the target at time t interpolates
linearly between the two due actions around t and holds the first/last action outside them.

Blending when a new chunk arrives while an older one still has actions:
- ``replace``: the new chunk takes over at once; the safety filter keeps the command smooth.
- ``crossfade``: target = (1 - w) * old(t) + w * new(t), w rising linearly from 0 to 1 over
  ``crossfade_duration`` seconds after the new chunk is accepted.
- ``temporal_ensemble``: ACT-style average over every kept chunk whose due-time span covers t, with
  weights exp(-m * i), i = 0 for the oldest prediction (ACT's convention: older predictions weigh more
  for m > 0; m < 0 favours newer ones).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from ..spec import ACTION_SPACE_JOINT_POSITION, ACTION_SPACES, ROBOT_ACTION_SPACES


class ChunkRejection(str, enum.Enum):
    """Reason a chunk was not accepted (the value is what the node logs and publishes)."""

    MALFORMED = "malformed"  # shape/horizon/dimension inconsistent, empty, unknown action space
    NON_FINITE = "non_finite"  # NaN or inf in actions or times
    WRONG_NAMES = "wrong_names"  # dimension names differ from the configured robot
    WRONG_ACTION_SPACE = "wrong_action_space"  # not the configured space, or one no FR3 executes (simulation's)
    BAD_DT = "bad_dt"  # dt <= 0 or absurd
    TOO_FAR_IN_FUTURE = "too_far_in_future"
    OLD_SEQUENCE = "old_sequence"  # sequence not newer than the one being executed (same policy)
    ALL_STALE = "all_stale"  # every action's due time has passed
    IK_FAILED = "ik_failed"  # ee_delta_pose chunk could not be converted to joint targets
    STAMP_IN_FUTURE = "stamp_in_future"  # observed later than now: the two hosts' clocks disagree
    SEQUENCE_JUMP = "sequence_jump"  # sequence far ahead of the one being executed (same policy)
    OUT_OF_RANGE = "out_of_range"  # a target outside the FR3's joint range or the Hand's width: garbage
    TOO_FAST = "too_fast"  # consecutive actions further apart than the FR3 can move in dt
    FAR_FROM_ARM = "far_from_arm"  # the first action to run is too far from where the arm is
    OTHER_POLICY = "other_policy"  # not the policy that was enabled: switching needs an enable
    AMBIGUOUS_SOURCE = "ambiguous_source"  # more than one publisher of chunks (checked by the node)


def not_for_robot(action_space: str) -> str:
    """Why a chunk in ``action_space``, a space of spec.ACTION_SPACES outside ROBOT_ACTION_SPACES, is never run."""
    return (f"action space {action_space} is a simulated benchmark's (Meta-World's Sawyer: hand steps and grip "
            f"effort normalised to [-1, 1]), not an FR3 command: never executed on the arm")


@dataclass
class ActionChunk:
    """ROS-free twin of mail_msgs/ActionChunk (row-major actions reshaped to (horizon, dim))."""

    stamp: float  # [s] acquisition time of the newest observation used
    start_offset: float  # [s] due time of action 0 relative to stamp
    dt: float  # [s] between consecutive actions
    actions: np.ndarray  # (H, D)
    names: tuple[str, ...]  # D dimension names
    action_space: str = ACTION_SPACE_JOINT_POSITION
    policy_id: str = ""
    sequence: int = 0
    execute_horizon: int = 0  # actions run before the policy replans (the watchdog's deadline); 0 = not said
    task: str = ""  # the task a multi-task checkpoint was asked for; "" for a checkpoint without tasks

    @property
    def source(self) -> tuple[str, str]:
        """The policy this chunk comes from: its checkpoint and the task it was asked for. Another task is
        another policy to the controller (its chunks drive the arm only after an enable)."""
        return self.policy_id, self.task

    def due_times(self) -> np.ndarray:
        return self.stamp + self.start_offset + self.dt * np.arange(len(self.actions))

    def replan_period(self) -> float:
        """[s] how long after this chunk its policy sends the next: ``execute_horizon`` actions of ``dt``, at
        most the chunk's own length (a chunk cannot promise more than it carries); 0 when it does not say."""
        return min(max(int(self.execute_horizon), 0), len(self.actions)) * float(self.dt)

    @classmethod
    def from_flat(cls, stamp: float, start_offset: float, dt: float, horizon: int, dimension: int, actions,
                  names, action_space: str, policy_id: str = "", sequence: int = 0,
                  execute_horizon: int = 0, task: str = "") -> ActionChunk:
        """From mail_msgs/ActionChunk fields (times already in seconds). Never raises on inconsistent
        sizes: the chunk then carries an empty (0, D) array and is rejected as MALFORMED."""
        flat = np.asarray(actions, dtype=float).ravel()
        names = tuple(names)
        if horizon * dimension == flat.size and dimension == len(names) and dimension > 0:
            rows = flat.reshape(horizon, dimension)
        else:
            rows = np.zeros((0, len(names)))
        return cls(float(stamp), float(start_offset), float(dt), rows, names, str(action_space), str(policy_id),
                   int(sequence), int(execute_horizon), str(task))


def committed_actions(running: ActionChunk, due: np.ndarray, ready: float) -> tuple[np.ndarray, np.ndarray]:
    """Real-time chunking: what a new chunk whose actions are due at ``due`` (J,) keeps of ``running``, the
    chunk the arm executes now. -> (actions (J, D): ``running`` interpolated at each due time, weight (J,)).
    The overlap is the new chunk's actions due within running's span. Those due before ``ready`` (when the
    new chunk can take over: now plus the policy's compute time) run from ``running`` whatever the new chunk
    says: weight 1. The rest of the overlap is guided with weights falling to 0 towards its end (Black et al.'s
    soft mask: c (e^c - 1) / (e - 1), c = (m - i) / (m - d + 1) for the i-th of m overlapping actions, d of
    them frozen), so the new chunk bends away from the old plan smoothly; actions past the overlap are free."""
    due = np.asarray(due, dtype=float)
    times = running.due_times()
    actions = np.stack([np.interp(due, times, running.actions[:, k]) for k in range(running.actions.shape[1])], 1)
    inside = (due >= times[0] - 1e-9) & (due <= times[-1] + 1e-9)  # float due times on one grid
    m = int(np.argmin(inside)) if not inside.all() else len(due)  # the overlap: the leading actions inside
    d = int(np.sum(due[:m] < ready))
    i = np.arange(len(due))
    c = (m - i) / (m - d + 1)
    weight = np.where(i < d, 1.0, np.where(i < m, c * np.expm1(c) / np.expm1(1.0), 0.0))
    return actions, weight



def stack_committed(rows: list, horizon: int, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Several rows' committed actions as one engine batch (InferenceEngine.act's ``committed``): each row's
    (actions (J, A), weight (J,)) from `committed_actions`, or None for a row that keeps nothing (weight 0).
    -> (actions (R, J, A), weight (R, J)); None when no row keeps anything."""
    if all(r is None for r in rows):
        return None
    actions, weight = np.zeros((len(rows), horizon, dim), np.float32), np.zeros((len(rows), horizon), np.float32)
    for k, r in enumerate(rows):
        if r is not None:
            actions[k], weight[k] = r
    return actions, weight

@dataclass(frozen=True)
class SchedulerConfig:
    names: tuple[str, ...]  # the robot's action dimension names, in order
    action_space: str = ACTION_SPACE_JOINT_POSITION
    blend: str = "replace"  # "replace" | "crossfade" | "temporal_ensemble"
    crossfade_duration: float = 0.1  # [s]
    ensemble_decay: float = 0.01  # m in exp(-m * i), i = 0 oldest
    ensemble_max_chunks: int = 8  # older chunks are forgotten
    stale_tolerance: float = 0.0  # [s] an action is stale when due < now - tolerance
    max_future: float = 0.5  # [s] reject chunks whose first kept action is due later than now + this
    max_clock_offset: float = 0.05  # [s] a stamp (observation time) later than now + this is refused
    max_dt: float = 1.0  # [s]
    max_horizon: int = 64  # actions per chunk
    max_sequence_jump: int = 1000  # a sequence this far ahead of the running chunk's is refused
    max_abs_value: float = 1e3  # values beyond this are garbage, not targets

    def __post_init__(self):
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"SchedulerConfig.names must be non-empty and unique, got {self.names}")
        if self.action_space not in ROBOT_ACTION_SPACES:
            raise ValueError(f"action_space must be one the FR3 controller executes, {ROBOT_ACTION_SPACES}, got "
                             f"{self.action_space!r}" + (f" ({not_for_robot(self.action_space)})"
                                                         if self.action_space in ACTION_SPACES else ""))
        if self.blend not in ("replace", "crossfade", "temporal_ensemble"):
            raise ValueError(f"blend must be replace, crossfade or temporal_ensemble, got {self.blend!r}")
        if not 0.0 < self.crossfade_duration <= 5.0:
            raise ValueError(f"crossfade_duration must be in (0, 5] s, got {self.crossfade_duration}")
        if not -1.0 <= self.ensemble_decay <= 1.0 or not math.isfinite(self.ensemble_decay):
            raise ValueError(f"ensemble_decay must be in [-1, 1], got {self.ensemble_decay}")
        if not 1 <= self.ensemble_max_chunks <= 64:
            raise ValueError(f"ensemble_max_chunks must be in [1, 64], got {self.ensemble_max_chunks}")
        if not 0.0 <= self.stale_tolerance <= 1.0:
            raise ValueError(f"stale_tolerance must be in [0, 1] s, got {self.stale_tolerance}")
        if not 0.0 < self.max_future <= 10.0:
            raise ValueError(f"max_future must be in (0, 10] s, got {self.max_future}")
        if not 0.0 < self.max_dt <= 10.0:
            raise ValueError(f"max_dt must be in (0, 10] s, got {self.max_dt}")
        if not 0.0 <= self.max_clock_offset <= 1.0:
            raise ValueError(f"max_clock_offset must be in [0, 1] s, got {self.max_clock_offset}")
        if not 1 <= self.max_horizon <= 1000:
            raise ValueError(f"max_horizon must be in [1, 1000], got {self.max_horizon}")
        if not 1 <= self.max_sequence_jump:
            raise ValueError(f"max_sequence_jump must be >= 1, got {self.max_sequence_jump}")


@dataclass
class Accepted:
    """Outcome of ``ChunkScheduler.accept``."""

    ok: bool
    reason: ChunkRejection | None = None
    dropped_stale: int = 0  # actions of this chunk already in the past
    detail: str = ""


@dataclass
class _Scheduled:
    times: np.ndarray  # (K,) due times of the kept actions
    actions: np.ndarray  # (K, D)
    accepted_at: float
    policy_id: str
    sequence: int

    def value(self, t: float) -> np.ndarray:
        if len(self.times) == 1 or t <= self.times[0]:
            return self.actions[0]
        if t >= self.times[-1]:
            return self.actions[-1]
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        w = (t - self.times[i]) / (self.times[i + 1] - self.times[i])
        return (1.0 - w) * self.actions[i] + w * self.actions[i + 1]

    def rate(self, t: float) -> np.ndarray:
        """d value / dt at t: the slope of the segment around t, zero outside the due-time span."""
        if len(self.times) == 1 or t < self.times[0] or t >= self.times[-1]:
            return np.zeros(self.actions.shape[1])
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return (self.actions[i + 1] - self.actions[i]) / (self.times[i + 1] - self.times[i])

    def covers(self, t: float) -> bool:
        return self.times[0] <= t <= self.times[-1]


class _Crossfade:
    """Target function fading from ``old`` (a chunk or an earlier, unfinished crossfade) to ``new``."""

    def __init__(self, old, new: _Scheduled, start: float, duration: float):
        self.old, self.new, self.start, self.duration = old, new, start, duration
        # an unfinished fade nested deeper than a few levels is frozen to its newest chunk
        if isinstance(old, _Crossfade) and old.depth() > 3:
            self.old = old.new

    def depth(self) -> int:
        return 1 + (self.old.depth() if isinstance(self.old, _Crossfade) else 0)

    def weight(self, t: float) -> float:
        return min(max((t - self.start) / self.duration, 0.0), 1.0)

    def value(self, t: float) -> np.ndarray:
        w = self.weight(t)
        if w >= 1.0:
            return self.new.value(t)
        return (1.0 - w) * self.old.value(t) + w * self.new.value(t)

    def rate(self, t: float) -> np.ndarray:
        w = self.weight(t)
        if w >= 1.0:
            return self.new.rate(t)
        fade = (self.new.value(t) - self.old.value(t)) / self.duration
        return (1.0 - w) * self.old.rate(t) + w * self.new.rate(t) + fade


class ChunkScheduler:
    """Holds the accepted chunks and answers "what is the target at time t"."""

    def __init__(self, config: SchedulerConfig):
        self.config = config
        self._chunks: list[_Scheduled] = []  # oldest first; last = active
        self._fade: _Crossfade | None = None  # crossfade in progress

    # ------------------------------------------------------------ accepting
    def validate(self, chunk: ActionChunk, now: float) -> Accepted:
        """All checks of ``accept`` without changing state."""
        c = self.config
        try:
            actions = np.asarray(chunk.actions, dtype=float)
            stamp, offset, dt = float(chunk.stamp), float(chunk.start_offset), float(chunk.dt)
            names = tuple(chunk.names)
            seq = int(chunk.sequence)
        except (TypeError, ValueError, OverflowError) as exc:
            return Accepted(False, ChunkRejection.MALFORMED, detail=str(exc))
        if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] != len(names):
            return Accepted(False, ChunkRejection.MALFORMED,
                            detail=f"actions shape {actions.shape} vs {len(names)} names")
        if actions.shape[0] > c.max_horizon:
            return Accepted(False, ChunkRejection.MALFORMED, detail=f"{actions.shape[0]} actions > {c.max_horizon}")
        if chunk.action_space not in ACTION_SPACES:
            return Accepted(False, ChunkRejection.MALFORMED, detail=f"action space {chunk.action_space!r}")
        if chunk.action_space not in ROBOT_ACTION_SPACES:
            return Accepted(False, ChunkRejection.WRONG_ACTION_SPACE, detail=not_for_robot(chunk.action_space))
        if chunk.action_space != c.action_space:
            return Accepted(False, ChunkRejection.WRONG_ACTION_SPACE,
                            detail=f"{chunk.action_space} != {c.action_space}")
        if names != tuple(c.names):
            return Accepted(False, ChunkRejection.WRONG_NAMES, detail=f"{list(names)} != {list(c.names)}")
        if not (math.isfinite(stamp) and math.isfinite(offset) and math.isfinite(dt) and math.isfinite(now)):
            return Accepted(False, ChunkRejection.NON_FINITE, detail="non-finite time")
        if not np.all(np.isfinite(actions)) or np.any(np.abs(actions) > c.max_abs_value):
            return Accepted(False, ChunkRejection.NON_FINITE, detail="non-finite or absurd action values")
        if not 0.0 < dt <= c.max_dt:
            return Accepted(False, ChunkRejection.BAD_DT, detail=f"dt {dt}")
        if stamp > now + c.max_clock_offset:
            return Accepted(False, ChunkRejection.STAMP_IN_FUTURE,
                            detail=f"observed {stamp - now:+.3f} s from now (clock offset between the hosts?)")
        active = self._chunks[-1] if self._chunks else None
        if active is not None and chunk.policy_id == active.policy_id:
            if seq <= active.sequence:
                return Accepted(False, ChunkRejection.OLD_SEQUENCE, detail=f"{seq} <= {active.sequence}")
            if seq > active.sequence + c.max_sequence_jump:
                return Accepted(False, ChunkRejection.SEQUENCE_JUMP, detail=f"{seq} after {active.sequence}")
        times = chunk.due_times()
        keep = times >= now - c.stale_tolerance
        dropped = int(np.count_nonzero(~keep))
        if not np.any(keep):
            return Accepted(False, ChunkRejection.ALL_STALE, dropped_stale=dropped,
                            detail=f"last action due {times[-1] - now:+.3f} s from now")
        first = times[keep][0]
        if first > now + c.max_future:
            return Accepted(False, ChunkRejection.TOO_FAR_IN_FUTURE, detail=f"first due {first - now:+.3f} s")
        return Accepted(True, dropped_stale=dropped)

    def accept(self, chunk: ActionChunk, now: float, actions: np.ndarray | None = None) -> Accepted:
        """Validate and schedule ``chunk`` at time ``now``. ``actions`` overrides the chunk's actions
        (the controller passes joint targets converted from ``ee_delta_pose`` chunks)."""
        verdict = self.validate(chunk, now)
        if not verdict.ok:
            return verdict
        values = np.array(chunk.actions if actions is None else actions, dtype=float)
        times = chunk.due_times()
        keep = times >= now - self.config.stale_tolerance
        entry = _Scheduled(times[keep], values[keep], now, str(chunk.policy_id), int(chunk.sequence))
        if self.config.blend == "replace":
            self._chunks = [entry]
        elif self.config.blend == "crossfade":
            if self._chunks:
                old = self._fade if self._fade is not None else self._chunks[-1]
                self._fade = _Crossfade(old, entry, now, self.config.crossfade_duration)
            self._chunks = [entry]
        else:
            self._chunks.append(entry)
            self._chunks = self._chunks[-self.config.ensemble_max_chunks:]
        return verdict

    def clear(self) -> None:
        self._chunks = []
        self._fade = None

    # ------------------------------------------------------------- querying
    @property
    def active(self) -> _Scheduled | None:
        return self._chunks[-1] if self._chunks else None

    def has_target(self) -> bool:
        return bool(self._chunks)

    def consumed(self, t: float) -> bool:
        """True when there is nothing (left) to execute at time t: no chunk, or the active chunk's last
        action is past. A consumed scheduler still returns the last action from ``target``."""
        return not self._chunks or t > self._chunks[-1].times[-1]

    def target(self, t: float) -> np.ndarray | None:
        """Target (D,) for time t, or None when no chunk has been accepted."""
        if not self._chunks:
            return None
        new = self._chunks[-1]
        blend = self.config.blend
        if blend == "crossfade" and self._fade is not None:
            if self._fade.weight(t) >= 1.0:
                self._fade = None
            else:
                return self._fade.value(t)
        if blend != "temporal_ensemble" or len(self._chunks) == 1:
            return new.value(t)
        # temporal ensemble: every kept chunk whose span covers t, plus the newest one always
        self._chunks = [ch for ch in self._chunks if ch is new or t <= ch.times[-1]]
        members = [ch for ch in self._chunks if ch is new or ch.covers(t)]
        m = self.config.ensemble_decay
        weights = np.exp(-m * np.arange(len(members)))
        values = np.stack([ch.value(t) for ch in members])
        return weights @ values / weights.sum()

    def target_rate(self, t: float) -> np.ndarray | None:
        """Time derivative (D,) of ``target`` at t (velocity feed-forward); call after ``target(t)``.
        Zero outside due-time spans; the jump when a ``replace`` chunk takes over is not a rate."""
        if not self._chunks:
            return None
        new = self._chunks[-1]
        if self.config.blend == "crossfade" and self._fade is not None:
            return self._fade.rate(t)
        if self.config.blend != "temporal_ensemble" or len(self._chunks) == 1:
            return new.rate(t)
        members = [ch for ch in self._chunks if ch is new or ch.covers(t)]
        weights = np.exp(-self.config.ensemble_decay * np.arange(len(members)))
        return weights @ np.stack([ch.rate(t) for ch in members]) / weights.sum()
