"""Play recorded bags through the policy node's own logic (`runtime.PolicyRuntime`), without ROS.

Every checkpoint gets a `PolicyRuntime` whose clock is the bag's clock, so observation sets are built
exactly as on the robot: messages go into the same `ObservationSynchronizer` (cameras + joint state,
header stamps, sync tolerance, max age), a control tick runs every dt of the checkpoint, and the engine
sees every complete set. Time moves through the bag in log-time order:

- a tick at bag time t sees every message logged at or before t; ticks sit on the grid
  episode start + k * dt + ``tick_phase`` (a frame stamped on the grid is in; rate 0: a tick after every
  image, as the node's ``rate_hz: 0``);
- /mail/episode "start" resets every runtime (engine caches and synchroniser) and starts a new tick
  grid; a multi-task checkpoint without ``ReplayConfig.task`` is asked for the task the event names;
  "end" at t closes the episode after the ticks up to t + ``tick_phase`` (frames logged with the end
  event still count). A bag without start events is one episode (or, with "end" events, split
  at them); an episode in which nothing was recorded or observed is left out;
- /mail/action_command messages are kept per episode as the recorded actions, reordered to each
  checkpoint's action names, and scored at their due time (stamp + one dt). A topic map whose
  ``action`` is the arm's measured joint state (/joint_states of a hand-guided demonstration) scores
  against where the arm was: each measurement is due when it was measured (`data.bags.recorded_action`).

Images stay encoded until a tick uses them, as in the node (raw ones as read; compressed ones, which
the live node does not take, likewise). A frame the tick cannot decode is a "bad_image" drop; a
compressed frame without a readable header is counted per stream. Neither stops the replay.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from collections.abc import Callable, Sequence

import numpy as np

from ..data.bags import (COMPRESSED_IMAGE, IMAGE, BagReader, EpisodeEventRecord, JointStateRecord, MissingTopicError,
                         is_measured_arm_state, recorded_action)
from ..data.images import ImageDecodeError
from .frames import CompressedFrame
from ..engine.engine import EngineConfig
from ..model.checkpoint import read_config
from ..runtime import LoadedPolicy, PolicyRuntime, RuntimeConfig, joint_state_vector, load_policy
from .topics import TopicMap

NS = 1_000_000_000


class IncompatibleCheckpointError(ValueError):
    """A checkpoint that cannot be replayed on a bag (action names, joint names), with the reason."""


def seconds(ns: int) -> float:
    """Nanoseconds -> seconds exactly as the node converts a header stamp (sec + nanosec * 1e-9)."""
    return (ns // NS) + (ns % NS) * 1e-9


@dataclass(frozen=True)
class ReplayConfig:
    execution_horizon: int = 1  # ticks between chunks; 1: a chunk every control step (overlaps for the
    #                             consistency metric); 0: the checkpoint's J, the live node's default
    sync_tolerance: float = 0.03  # [s] as the policy node's parameter
    max_age: float = 0.25  # [s] as the policy node's parameter
    rate_hz: float | None = None  # control ticks per second; None: 1 / dt of each checkpoint; 0: per image
    tick_phase: float = 0.002  # [s] ticks fall this long after the grid, so frames stamped on it are in
    realtime: bool = False  # pace the replay to the recorded timing instead of as fast as possible
    match_tolerance: float | None = None  # [s] a recorded action matches a due time this close; None: dt / 2
    gap_factor: float = 1.5  # an interval longer than this many median periods of a stream is a gap
    history: str | None = None  # engine history override; None: the checkpoint's
    sampler: str | None = None  # DDPM sampler override
    device: str = "cpu"
    seed: int = 0  # DDPM noise: every bag starts from it, so a bag's figures do not depend on the bags before it
    task: str = ""  # what a multi-task checkpoint is asked for, as the policy node's task parameter; '': each
    #                 episode's own, its /mail/episode start event's "task" (what training read)
    real_time_chunking: bool = False  # DDPM heads: each chunk keeps its overlap with the one it replaces, as the
    #                                   policy node's parameter (a BC head has nothing to keep: no effect)
    compute_time: float = 0.0  # [s] real-time chunking: a chunk reaches the robot this long after its tick (the
    #                            actions due before then are kept). The bag's clock stands still while the
    #                            replay computes, so 0 by default; the node measures it (RuntimeConfig.compute_time)

    def __post_init__(self):
        if self.execution_horizon < 0:
            raise ValueError(f"execution_horizon must be >= 0, got {self.execution_horizon}")
        RuntimeConfig(compute_time=float(self.compute_time))  # its bounds (ValueError), checked before any bag
        if self.tick_phase < 0 or self.gap_factor <= 1:
            raise ValueError(f"need tick_phase >= 0 and gap_factor > 1, got {self.tick_phase}, {self.gap_factor}")

    def engine_config(self) -> EngineConfig:
        return EngineConfig(history=self.history, sampler=self.sampler, device=self.device, seed=self.seed,
                            real_time_chunking=self.real_time_chunking)


@dataclass
class EpisodeReplay:
    """One checkpoint on one episode of one bag: its chunks and the actions recorded meanwhile."""

    bag: str
    index: int  # episode index within the bag (order of appearance)
    info: dict  # merged "start" / "end" event fields
    start_s: float  # bag time the episode opened / closed [s]
    end_s: float
    action_names: tuple[str, ...]
    chunk_stamp: np.ndarray  # (N,) newest observation stamp of each chunk [s]
    chunk_due: np.ndarray  # (N, J) [s]
    chunk_actions: np.ndarray  # (N, J, A) robot units
    latency_s: np.ndarray  # (N,) engine time frames in -> chunk out
    recorded_t: np.ndarray  # (M,) recorded actions' due times [s]: stamp + FeatureSpec.action_lead_s
    recorded: np.ndarray  # (M, A) recorded actions in the checkpoint's order
    ticks: int = 0
    observations: int = 0  # observation sets the engine took
    tick_s: float = 0.0  # wall time spent in ticks (decode + engine)
    drops: dict = field(default_factory=dict)  # runtime drops and synchroniser outcomes in this episode


@dataclass
class StreamLog:
    """Stamps of one input stream, per episode, for gap reporting."""

    topic: str
    stamps: list[list[float]] = field(default_factory=list)
    bad_frames: int = 0


@dataclass
class BagReplay:
    path: str
    storage: str
    duration_s: float  # first to last message of the replayed topics
    wall_s: float
    episodes: dict[str, list[EpisodeReplay]]  # checkpoint label -> episodes
    streams: dict[str, StreamLog]  # topic -> stamps


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Lane:
    """One checkpoint in a replay."""

    label: str
    path: str
    loaded: LoadedPolicy
    episode_tasks: bool = False  # a multi-task checkpoint asked for each episode's own task (ReplayConfig.task '')

    @property
    def spec(self):
        return self.loaded.spec


def load_lanes(checkpoints: Sequence[str | Path], config: ReplayConfig) -> list[Lane]:
    """Load each checkpoint folder (validated and warmed up as the policy node does); labels are the
    folder names, made unique."""
    lanes, used = [], set()
    for ck in checkpoints:
        folder = Path(ck).resolve()
        tasks = () if config.task else read_config(folder)[0].spec.task_names
        # asked per episode: loaded (and warmed up) with its first task, each episode's asked at its start
        loaded = load_policy(str(folder.parent), folder.name, config.engine_config(),
                             task=config.task or (tasks[0] if tasks else ""))
        label = folder.name if folder.name not in ("final", "checkpoint") else f"{folder.parent.name}/{folder.name}"
        base, n = label, 2
        while label in used:
            label, n = f"{base}#{n}", n + 1
        used.add(label)
        lanes.append(Lane(label, str(folder), loaded, episode_tasks=bool(tasks)))
    return lanes


# ------------------------------------------------------------------------------------------------
def check_bag(bag: BagReader, lanes: Sequence[Lane], topics: TopicMap, starts: list[dict]) -> list[str]:
    """Raise MissingTopicError / IncompatibleCheckpointError before replaying; returns the topics to read.
    ``starts``: the bag's episode start events (`_start_events`)."""
    wanted: dict[str, str] = {}
    for lane in lanes:
        needed = topics.needed(lane.spec)
        missing = [t for t in needed if t not in bag.topics]
        if missing:
            what = ", ".join(f"{t} ({needed[t]})" for t in missing)
            raise MissingTopicError(f"bag {bag.path} lacks topic(s) {missing} that checkpoint {lane.label!r} needs: "
                                    f"{what}; the bag has {sorted(bag.topics)}")
        for cam in lane.spec.camera_names:
            t = topics.camera_topic(cam)
            if bag.topics[t] not in (IMAGE, COMPRESSED_IMAGE):
                raise IncompatibleCheckpointError(f"{t} (camera {cam!r} of checkpoint {lane.label!r}) carries "
                                                  f"{bag.topics[t]}, not sensor_msgs/Image or CompressedImage")
        wanted.update(needed)
    first_action = next(iter(bag.records([topics.action])), None)
    if first_action is None or not isinstance(first_action, JointStateRecord):
        raise MissingTopicError(f"bag {bag.path} has no sensor_msgs/JointState messages on {topics.action} "
                                "(the recorded actions)")
    try:
        recorded_names = recorded_action(first_action, 0.0)[1]
    except ValueError as e:
        raise IncompatibleCheckpointError(f"bag {bag.path}: {topics.action}: {e}") from None
    for lane in lanes:
        lacking = [n for n in lane.spec.action_names if n not in recorded_names]
        if lacking:
            raise IncompatibleCheckpointError(
                f"checkpoint {lane.label!r} predicts actions {list(lane.spec.action_names)} "
                f"({lane.spec.action_space}); the bag's {topics.action} has {list(recorded_names)} "
                f"(missing {lacking})")
    joint_lanes = [lane for lane in lanes if lane.spec.use_joint_state]
    if joint_lanes:
        first_joint = next(iter(bag.records([topics.joint_states])), None)
        if not isinstance(first_joint, JointStateRecord):
            raise MissingTopicError(f"bag {bag.path} has no sensor_msgs/JointState messages on {topics.joint_states} "
                                    f"(the joint state that checkpoint {joint_lanes[0].label!r} takes)")
        for lane in joint_lanes:
            try:
                joint_state_vector(SimpleNamespace(name=first_joint.names, position=first_joint.position), lane.spec)
            except ValueError as e:
                raise IncompatibleCheckpointError(f"checkpoint {lane.label!r}: {topics.joint_states}: {e}") from None
    for lane in [x for x in lanes if x.episode_tasks]:  # asked for each episode's own task
        known = list(lane.spec.task_names)
        ask = f"multi-task checkpoint {lane.label!r} (tasks {known}) is asked for each episode's own: pass --task"
        if not starts:
            raise IncompatibleCheckpointError(f"bag {bag.path} has no {topics.episode} start event to name its "
                                              f"episodes' task, and {ask}")
        for k, ev in enumerate(starts):
            if ev.get("task") not in known:
                what = "names no task" if ev.get("task") is None else f"names task {ev.get('task')!r}"
                raise IncompatibleCheckpointError(f"bag {bag.path}, episode {k}: its {topics.episode} start "
                                                  f"event {what}, and {ask}")
    return list(wanted) + ([topics.episode] if topics.episode in bag.topics else [])


class _Run:
    """The state of one lane while a bag plays."""

    def __init__(self, lane: Lane, config: ReplayConfig, clock: _Clock):
        spec = lane.spec
        rate = 1.0 / spec.dt if config.rate_hz is None else config.rate_hz
        self.lane = lane
        self.period_ns = int(round(NS / rate)) if rate > 0 else 0
        self.phase_ns = int(round(config.tick_phase * NS))
        self.runtime = PolicyRuntime(lane.loaded, RuntimeConfig(
            rate_hz=rate, execution_horizon=config.execution_horizon, sync_tolerance=config.sync_tolerance,
            max_age=config.max_age, compute_time=config.compute_time), clock=clock)
        self.next_tick_ns: int | None = None
        self.chunks: list = []
        self.ticks = 0
        self.tick_s = 0.0
        self._counts0: dict = {}
        self._obs0 = 0

    def _counts(self) -> dict:
        c = dict(self.runtime.drops)
        c.update({f"sync_{k}": v for k, v in self.runtime.sync.counts.items()})
        return c

    def open(self, t_ns: int, info: dict) -> None:
        """A new episode at ``t_ns``; ``info`` its start event (check_bag made sure it names a task where the
        checkpoint is asked for each episode's own)."""
        if self.lane.episode_tasks:
            self.runtime.set_task(info["task"])
        self.runtime.reset_episode()
        self.next_tick_ns = t_ns + self.phase_ns if self.period_ns else None
        self.chunks, self.ticks, self.tick_s = [], 0, 0.0
        self._counts0, self._obs0 = self._counts(), self.runtime.observations

    def observed(self) -> bool:
        """Whether the engine took an observation since the episode opened."""
        return self.runtime.observations > self._obs0

    def tick(self) -> None:
        t0 = time.perf_counter()
        self.ticked(self.runtime.tick(), time.perf_counter() - t0)

    def ticked(self, chunk, seconds: float) -> None:
        """A tick of this run happened (here, or in a batch with other bags' runs) and took ``seconds``."""
        self.tick_s += seconds
        self.ticks += 1
        if chunk is not None:
            self.chunks.append((chunk, self.runtime.inference[-1]))

    def close(self) -> dict:
        now = self._counts()
        drops = {k: v - self._counts0.get(k, 0) for k, v in now.items() if v - self._counts0.get(k, 0)}
        return dict(ticks=self.ticks, observations=self.runtime.observations - self._obs0, tick_s=self.tick_s,
                    drops=drops)


def _start_events(bag: BagReader, topic: str) -> list[dict]:
    """The bag's /mail/episode "start" events, in order."""
    if topic not in bag.topics:
        return []
    return [r.event for r in bag.records([topic], episode_topic=topic)
            if isinstance(r, EpisodeEventRecord) and r.event.get("event") == "start"]


def replay_bag(path: str | Path, lanes: Sequence[Lane], topics: TopicMap = TopicMap(),
               config: ReplayConfig = ReplayConfig(), progress: Callable[[str], None] | None = None) -> BagReplay:
    """Replay one bag through every lane; see the module doc for the timing rules."""
    clock = _Clock()
    play = play_bag(path, [_Run(lane, config, clock) for lane in lanes], clock, topics, config, progress)
    try:
        while True:
            next(play).tick()
    except StopIteration as done:
        return done.value


def play_bag(path: str | Path, runs: list[_Run], clock: _Clock, topics: TopicMap, config: ReplayConfig,
             progress: Callable[[str], None] | None = None):
    """The replay of one bag as a generator: it yields each `_Run` whose tick is due, in time order, and
    goes on when resumed (the caller has ticked it: at once, or together with other bags' runs as one
    engine batch, replay/batch.py); returns the `BagReplay` (StopIteration.value)."""
    lanes = [r.lane for r in runs]
    for r in runs:  # the bag's noise starts from the seed, whichever bags this engine replayed before
        r.runtime.policy.engine.reset(seed=config.seed)
    cams = {topics.camera_topic(c): c for lane in lanes for c in lane.spec.camera_names}
    episodes: dict[str, list[EpisodeReplay]] = {lane.label: [] for lane in lanes}
    with BagReader(path) as bag:
        starts = _start_events(bag, topics.episode)
        read = check_bag(bag, lanes, topics, starts)
        storage = "sqlite3" if any(Path(bag.path).glob("*.db3")) else "mcap"
        has_starts = bool(starts)
        streams = {t: StreamLog(t) for t in read if t != topics.episode}
        state = SimpleNamespace(open=False, close_at=None, info={}, start_ns=0, index=0, rec_t=[], rec=[],
                                names=None, measured=False)
        first_ns = last_ns = None
        phase_ns = int(round(config.tick_phase * NS))
        wall0 = time.perf_counter()

        def pace(t_ns: int) -> None:
            if config.realtime:
                delay = (t_ns - first_ns) / NS - (time.perf_counter() - wall0)
                if delay > 0:
                    time.sleep(delay)

        def run_ticks(limit_ns: int, inclusive: bool):
            """Every lane's ticks before ``limit_ns`` (or at it), in time order across lanes (yielded)."""
            while True:
                due = [r for r in runs if r.next_tick_ns is not None
                       and (r.next_tick_ns <= limit_ns if inclusive else r.next_tick_ns < limit_ns)]
                if not due:
                    return
                r = min(due, key=lambda run: run.next_tick_ns)
                pace(r.next_tick_ns)
                clock.now = seconds(r.next_tick_ns)
                yield r
                r.next_tick_ns += r.period_ns

        def open_episode(t_ns: int, info: dict) -> None:
            state.open, state.close_at, state.info, state.start_ns = True, None, dict(info), t_ns
            state.rec_t, state.rec = [], []
            for log in streams.values():
                log.stamps.append([])
            for r in runs:
                r.open(t_ns, info)

        def close_episode(t_ns: int) -> None:
            state.open, state.close_at = False, None
            if not state.rec and not any(r.observed() for r in runs):
                for r in runs:  # nothing recorded, nothing observed (e.g. a tail after the last "end")
                    r.next_tick_ns = None
                return
            for r in runs:
                stats = r.close()
                names = r.lane.spec.action_names
                order = [state.names.index(n) for n in names] if state.names else []
                rec = np.asarray([p[order] for p in state.rec], float).reshape(-1, len(names))
                j, a = r.lane.spec.action_horizon, len(names)
                ch = [c for c, _ in r.chunks]
                episodes[r.lane.label].append(EpisodeReplay(
                    bag=str(path), index=state.index, info={k: v for k, v in state.info.items() if k != "event"},
                    start_s=seconds(state.start_ns), end_s=seconds(t_ns), action_names=tuple(names),
                    chunk_stamp=np.asarray([c.stamp for c in ch], float),
                    chunk_due=np.asarray([[c.stamp + c.start_offset + i * c.dt for i in range(j)] for c in ch],
                                         float).reshape(-1, j),
                    chunk_actions=np.asarray([c.actions for c in ch], float).reshape(-1, j, a),
                    latency_s=np.asarray([lat for _, lat in r.chunks], float),
                    recorded_t=np.asarray(state.rec_t, float) + (0.0 if state.measured else r.lane.spec.action_lead_s),
                    recorded=rec, **stats))
                r.next_tick_ns = None
            state.index += 1
            if progress:
                progress(f"{path}: episode {state.index - 1} done")

        records = bag.records(read, decode_images=False, episode_topic=topics.episode)
        for t_ns, group in itertools.groupby(records, key=lambda rec: rec.log_time_ns):
            group = list(group)
            if first_ns is None:
                first_ns = t_ns
            last_ns = t_ns
            if state.open and state.close_at is not None:
                end_tick = state.close_at + phase_ns  # the tick for frames logged with the end event
                if end_tick < t_ns:  # messages logged up to that tick (a 1 kHz joint state) still count
                    yield from run_ticks(end_tick, inclusive=True)
                    close_episode(state.close_at)
            if not has_starts and not state.open:  # without start events, an "end" splits the bag
                open_episode(t_ns, {})
            if state.open:
                yield from run_ticks(t_ns, inclusive=False)
            pace(t_ns)
            clock.now = seconds(t_ns)
            events = [r.event for r in group if isinstance(r, EpisodeEventRecord)]
            for ev in events:
                if ev.get("event") == "start":
                    if state.open:
                        close_episode(t_ns if state.close_at is None else state.close_at)
                    open_episode(t_ns, ev)
            if state.open:
                took_image: set[int] = set()
                for rec in group:
                    if not isinstance(rec, EpisodeEventRecord):
                        took_image |= _feed(rec, runs, cams, topics, streams, state)
                # rate 0: the node ticks on every image it takes, once the messages published with it
                # (same log time: the other camera, the joint state) are in, as they are by the time
                # its tick thread runs
                for i in sorted(took_image):
                    if runs[i].period_ns == 0:
                        yield runs[i]
            for ev in events:
                if ev.get("event") == "end" and state.open:
                    state.info.update(ev)
                    state.close_at = t_ns
        if state.open:
            end = state.close_at if state.close_at is not None else last_ns
            yield from run_ticks(end + phase_ns, inclusive=True)
            close_episode(end)
        wall = time.perf_counter() - wall0
    duration = 0.0 if first_ns is None else (last_ns - first_ns) / NS
    return BagReplay(str(path), storage, duration, wall, episodes, streams)


def _feed(rec, runs: list[_Run], cams: dict, topics: TopicMap, streams: dict, state) -> set[int]:
    """Hand one message to every runtime, as the node's subscription callbacks do; returns the indices
    of the runs that took it as a camera frame."""
    topic = rec.topic
    if topic == topics.action and isinstance(rec, JointStateRecord):
        t = seconds(rec.stamp_ns) if rec.stamp_ns else seconds(rec.log_time_ns)
        try:
            _, names, value = recorded_action(rec, 0.0)
        except ValueError:  # a joint state without the arm's joints
            names, value = (), np.zeros(0)
        if state.names is None and names:
            state.names, state.measured = list(names), is_measured_arm_state(rec.names)
        if list(names) != state.names or len(value) != len(state.names):
            streams[topic].bad_frames += 1  # an action message with other dimensions: not comparable
        else:
            state.rec_t.append(t)
            state.rec.append(value)
            streams[topic].stamps[-1].append(t)
        if topic != topics.joint_states:
            return set()
    stamp = seconds(rec.stamp_ns) if rec.stamp_ns is not None else seconds(rec.log_time_ns)
    if topic in cams:
        msg = rec.msg
        if rec.msgtype == COMPRESSED_IMAGE:
            try:
                msg = CompressedFrame(msg)
            except ImageDecodeError:
                streams[topic].bad_frames += 1
                return set()
        streams[topic].stamps[-1].append(stamp)
        took = set()
        for i, r in enumerate(runs):
            for cam in [cam for cam in r.lane.spec.camera_names if topics.camera_topic(cam) == topic]:
                r.runtime.add_image(cam, stamp, msg)
                took.add(i)
        return took
    if topic == topics.joint_states and isinstance(rec, JointStateRecord):
        if topic != topics.action:  # logged above
            streams[topic].stamps[-1].append(stamp)
        msg = SimpleNamespace(name=rec.names, position=rec.position)
        for r in runs:
            r.runtime.add_joint_state(stamp, msg)
    return set()
