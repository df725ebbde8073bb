"""The policy node's logic without ROS: synchronised observations in, action chunks out, at a rate.

`PolicyRuntime` owns the synchroniser and the running `InferenceEngine`. Every tick (1 / rate) it
takes the newest complete observation set, feeds it to the engine (every tick: a `stream` policy must
see every control step) and returns a chunk every `execution_horizon` ticks. A checkpoint swap is
prepared elsewhere (`load_policy`: resolve under the root, validate, warm up) and applied at the next
chunk boundary with the caches reset, so the old policy runs until then and no chunk is missed.
Every dropped input and refused step is counted by cause, for PolicyStatus.

A multi-task checkpoint (FeatureSpec.task_names) is told its task by its goal: the one-hot of the task
named at load time (`load_policy(..., task=)`, the node's `task` parameter), given with every observation
so that every episode (reset, time base restart, swap) opens with it. Without a task, or with one the
checkpoint was not trained on, it is refused at load: it never runs on a zero goal.

A time base change in the inputs (a clock step, a camera reset: see data/sync.py) restarts the
synchroniser's history; the first set of the new epoch also restarts the engine's history (its window
or stream state holds observations stamped in the old base, and its stamps must increase), so the
policy never acts on a mix of the two and goes on by itself once the stamps move forward again.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from .checkpoint_root import resolve_checkpoint
from .control.chunks import ActionChunk, SchedulerConfig, committed_actions
from .data.images import ImageDecodeError, check_layout, msg_to_rgb
from .data.sync import ObservationSynchronizer
from .engine.engine import HISTORIES, EngineConfig, InferenceEngine
from .engine.errors import EngineError
from .engine.inputs import Observation
from .model.diffusion import SAMPLERS
from .parameters import Parameter, default_of
from .spec import FeatureSpec, named_state

JOINT_STREAM = "joint_state"


@dataclass(frozen=True)
class RuntimeConfig:
    rate_hz: float = 10.0  # control ticks per second (= 1 / spec.dt); 0: a tick per new observation set
    execution_horizon: int = 0  # ticks between published chunks (0: the policy's J, as in the paper)
    sync_tolerance: float = 0.03  # [s] largest stamp difference inside one observation set
    max_age: float = 0.25  # [s] older observation sets are not used
    max_future: float = 0.5  # [s] messages stamped further ahead of this clock are dropped
    # a checkpoint whose first chunks are all refused (NaN / inf) this many times in a row is undone: the
    # one it replaced runs again (at start-up, with none to go back to, the status says ERROR)
    failed_chunks: int = 3
    # real-time chunking: how long a chunk takes from the observation set to the robot [s], which decides the
    # actions it cannot change; None: the median of the policy's last 20 computations (the node). Replay gives
    # a number: its clock does not move while it computes, and measured times would make its figures depend
    # on the host and its load
    compute_time: float | None = None

    def __post_init__(self):
        if not (self.rate_hz == 0 or 0.5 <= self.rate_hz <= 200):
            raise ValueError(f"rate_hz must be 0 (every observation set) or in [0.5, 200], got {self.rate_hz}")
        if self.execution_horizon < 0:
            raise ValueError(f"execution_horizon must be >= 0, got {self.execution_horizon}")
        if self.failed_chunks < 1:
            raise ValueError(f"failed_chunks must be >= 1, got {self.failed_chunks}")
        if self.compute_time is not None and not 0 <= self.compute_time < 10:
            raise ValueError(f"compute_time must be None or in [0, 10) s, got {self.compute_time}")


# The policy node's parameters (nodes/policy_node.py declares exactly these). "" stands for None (ROS
# has no None): the checkpoint's own history and sampler.
POLICY_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("checkpoint_root", "", "the only folder checkpoints load from; a checkpoint is a folder under it"),
    Parameter("checkpoint", "", "checkpoint folder under checkpoint_root ('' = none: the policy waits); setting it "
              "at run time loads, validates and warms it up, then swaps it in at the next chunk boundary",
              read_only=False),
    Parameter("device", default_of(EngineConfig, "device"), "where the policy runs: cpu, cuda or cuda:N"),
    Parameter("task", "", "the task a multi-task checkpoint is asked for (one of the tasks it was trained on; its "
              "goal is that task's one-hot); '' = none, which refuses a multi-task checkpoint. A single-task "
              "checkpoint does not use it. Setting it at run time starts a new episode on that task; its chunks "
              "drive the arm only after the controller is enabled again (another task is another policy to it)",
              read_only=False),
    Parameter("history_mode", "", "the policy's observation history; '' = the checkpoint's own",
              choices=("",) + HISTORIES),
    Parameter("sampler", "", "the DDPM head's sampler; '' = the checkpoint's own (ddpm, as in the paper)",
              choices=("",) + SAMPLERS),
    Parameter("real_time_chunking", default_of(EngineConfig, "real_time_chunking"), "DDPM head: each chunk keeps "
              "the actions of the previous one that run before it can take over (due within the policy's compute "
              "time) and bends away from the rest of their overlap smoothly (real-time chunking, by inpainting); "
              "matters when execution_horizon is shorter than the chunk. No effect on a BC head"),
    # RuntimeConfig refuses rates in (0, 0.5)
    Parameter("rate_hz", default_of(RuntimeConfig, "rate_hz"), "[Hz] control ticks per second (1 / the policy's "
              "dt); 0: a tick per new observation set; otherwise at least 0.5", 0.0, 200.0),
    # a chunk holds at most the controller's max_horizon actions: a longer gap leaves the arm without one
    Parameter("execution_horizon", default_of(RuntimeConfig, "execution_horizon"), "ticks between published "
              "chunks; 0: the policy's action horizon J (as in the paper)",
              0, default_of(SchedulerConfig, "max_horizon")),
    Parameter("sync_tolerance", default_of(RuntimeConfig, "sync_tolerance"),
              "[s] largest stamp difference inside one observation set", 0.001, 1.0),
    # the synchroniser keeps 2 s of messages: the age limit must stay below that
    Parameter("max_age", default_of(RuntimeConfig, "max_age"), "[s] older observation sets are not used", 0.001, 1.0),
    Parameter("failed_chunks", default_of(RuntimeConfig, "failed_chunks"), "a newly loaded checkpoint whose chunks "
              "are refused (NaN or inf) this many times in a row before its first valid one is undone: the "
              "checkpoint it replaced runs again (at start-up: status ERROR)", 1, 100),
    Parameter("publish_trajectory", False, "also publish each chunk as a trajectory_msgs/JointTrajectory on "
              "<chunk topic>_trajectory, for visualisation tools"),
    # one thread by default: on a loaded 2-core machine torch's default (all cores, spin-waiting) was
    # measured 20x slower per step
    Parameter("cpu_threads", 1, "torch CPU inference threads; 0: torch's default (every core)", 0, 256),
)


@dataclass
class LoadedPolicy:
    engine: InferenceEngine
    name: str  # as given in the checkpoint parameter
    path: str
    policy_id: str
    task: str = ""  # the task its goal asks for ('' for a checkpoint without task names)
    goal: np.ndarray | None = None  # (G,) float32: the task's one-hot, given with every observation

    @property
    def spec(self) -> FeatureSpec:
        return self.engine.spec


def load_policy(root: str, name: str, engine_config: EngineConfig, task: str = "") -> LoadedPolicy:
    """Resolve `name` under `root`, load and validate the checkpoint, warm the engine up and reset it.
    ``task``: what a multi-task checkpoint is asked for (its goal, module docstring); not used by others.
    Raises CheckpointError (CheckpointRefused is one) with the reason; nothing else changes."""
    from .checkpoint_limits import CheckpointError

    folder = resolve_checkpoint(root, name)
    engine = InferenceEngine.from_checkpoint(folder, engine_config)
    spec = engine.spec
    goal = task_goal(spec, task)
    # Warm-up: one full step on blank inputs (allocations, CUDA graph capture), then a clean reset.
    blank = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in spec.cameras}
    state = np.zeros(spec.state_dim, np.float32) if spec.use_joint_state else None
    try:
        engine.step(Observation(stamp=1.0, images=blank, state=state, goal=goal))
    except (EngineError, RuntimeError, MemoryError) as exc:  # e.g. NaN on blank inputs, out of memory
        raise CheckpointError(f"warm-up failed: {exc}") from None
    engine.reset()
    # the id of the bytes that were loaded (not of what the folder holds by now)
    return LoadedPolicy(engine, name, str(folder), engine.policy.metadata["policy_id"],
                        task if goal is not None else "", goal)


def task_goal(spec: FeatureSpec, task: str) -> np.ndarray | None:
    """The goal a checkpoint of ``spec`` runs with: ``task``'s one-hot for a multi-task one, None for one
    without a goal input. CheckpointError (naming its tasks) for a multi-task checkpoint given no task or
    another one, and for a goal embedding that is no task's: the policy node has none to give."""
    from .checkpoint_limits import CheckpointError

    try:
        goal = spec.task_goal(task)
    except ValueError as e:
        raise CheckpointError(f"multi-task checkpoint: {e} (the policy node's task parameter)") from None
    if goal is None and spec.goal_embedding_dim:
        raise CheckpointError(f"the checkpoint takes a goal embedding of size {spec.goal_embedding_dim} that names "
                              "no tasks (FeatureSpec.task_names); the policy node has no goal to give it")
    return None if goal is None else np.asarray(goal, np.float32)


def joint_state_vector(msg, spec: FeatureSpec) -> np.ndarray:
    """sensor_msgs/JointState -> the spec's state vector (7 joints + gripper width = sum of fingers), read as
    training reads it (spec.named_state)."""
    v = np.asarray(named_state(msg.name, msg.position, spec.state_names, "the checkpoint's state"), np.float32)
    if not np.all(np.isfinite(v)):
        raise ValueError("joint state holds NaN or inf")
    return v


@dataclass(frozen=True)
class TakenObservation:
    """An observation set a tick took from the synchroniser, decoded, for the engine."""

    observation: Observation
    newest_stamp: float  # [s] the newest acquisition stamp in the set (latency is measured from it)


class PolicyRuntime:
    def __init__(self, loaded: LoadedPolicy, config: RuntimeConfig, clock=time.time):
        self.config = config
        self.clock = clock
        self.drops: collections.Counter[str] = collections.Counter()
        self.observations = 0
        self.chunks = 0
        self.sequence = 0
        self.paused = False
        self.latency = collections.deque(maxlen=500)  # newest acquisition stamp -> chunk out [s]
        self.inference = collections.deque(maxlen=500)  # engine time [s]
        self.chunk_times = collections.deque(maxlen=50)
        self._lock = threading.Lock()
        self._pending: LoadedPolicy | None = None
        self._epoch = 0  # the synchroniser's time base that the engine's history was built in
        self.time_base_restarts = 0  # engine histories restarted for a new time base
        # A checkpoint is on probation until its first valid chunk: `_previous` (the one a swap replaced)
        # is kept until then, and `failed_chunks` refused chunks in a row undo the swap.
        self._previous: LoadedPolicy | None = None
        self._proven = False
        self._refused_in_a_row = 0
        self._retry = False  # the last chunk was refused: act on the next observation, not the next boundary
        self.error: str | None = None  # the running checkpoint fails (start-up, nothing to go back to)
        self.last_revert: str | None = None  # the last swap undone: which checkpoint, why, what runs now
        self.reverts = 0
        self._revert_events: list[tuple[str, str]] = []  # (failed, restored) names, for the node
        self._running: ActionChunk | None = None  # this episode's last chunk (real-time chunking keeps its overlap)
        self._install(loaded)

    # ---- policy ---------------------------------------------------------------------------------
    def _install(self, loaded: LoadedPolicy) -> None:
        self.policy = loaded
        spec = loaded.spec
        streams = tuple(spec.camera_names) + ((JOINT_STREAM,) if spec.use_joint_state else ())
        if getattr(self, "sync", None) is None or self.sync.streams != streams:
            # a compatible swap keeps the buffered inputs, so the boundary tick still has its observation
            self.sync = ObservationSynchronizer(streams, self.config.sync_tolerance, self.config.max_age)
            self._epoch = self.sync.epoch
        self.horizon = self.config.execution_horizon or spec.action_horizon
        self.episode_steps = 0
        self._running = None

    @property
    def spec(self) -> FeatureSpec:
        return self.policy.spec

    def incompatibilities(self, candidate: LoadedPolicy) -> list[str]:
        return candidate.spec.incompatibilities(self.spec)

    def request_swap(self, candidate: LoadedPolicy) -> None:
        """Install `candidate` at the next chunk boundary (caller checked compatibility)."""
        with self._lock:
            self._pending = candidate

    @property
    def swap_pending(self) -> bool:
        return self._pending is not None

    @property
    def swapping(self) -> bool:
        """A swap is pending, or the checkpoint it installed is on probation (the one it replaced kept)."""
        return self._pending is not None or self._previous is not None

    def set_task(self, task: str) -> None:
        """Ask the running multi-task checkpoint for ``task`` (its goal, `task_goal`) from the next observation
        on. Another task than the running one opens a new episode (a history built under the old goal is not
        carried into the new one), and its chunks say the task (ActionChunk.task): to the controller, another
        policy. A task it was not trained on is a CheckpointError and changes nothing. The replay asks each
        recorded episode's task; the policy node its `task` parameter's."""
        goal = task_goal(self.spec, task)
        task = task if goal is not None else ""
        with self._lock:
            changed = task != self.policy.task
            self.policy = replace(self.policy, task=task, goal=goal)
            if changed:
                self._reset_episode()

    def reset_episode(self) -> None:
        with self._lock:
            self._reset_episode()

    def _reset_episode(self) -> None:
        self.policy.engine.reset()
        self.sync.reset()
        self.episode_steps = 0
        self._running = None

    # ---- inputs (called from subscription callbacks) ---------------------------------------------
    def _stamp_ok(self, stamp: float) -> float | None:
        """The clock's time now if `stamp` is plausible, else None (the drop counted)."""
        now = self.clock()
        if stamp > now + self.config.max_future:
            self.drops["future_stamp"] += 1
            return None
        if stamp < now - 10.0:
            self.drops["old_stamp"] += 1
            return None
        return now

    def add_image(self, camera: str, stamp: float, msg) -> None:
        """Keep the message itself: only frames the policy uses get decoded."""
        if len(msg.data) == 0 or getattr(msg, "width", 1) * getattr(msg, "height", 1) == 0:  # Compressed: no sizes
            self.drops["empty_image"] += 1
            return
        try:
            check_layout(msg)
        except ImageDecodeError:
            self.drops["bad_image"] += 1
            return
        now = self._stamp_ok(stamp)
        if now is not None:
            with self._lock:
                self.sync.add(camera, stamp, msg, now)

    def add_joint_state(self, stamp: float, msg) -> None:
        if not self.spec.use_joint_state:
            return
        try:
            v = joint_state_vector(msg, self.spec)
        except ValueError:
            self.drops["bad_joint_state"] += 1
            return
        now = self._stamp_ok(stamp)
        if now is not None:
            with self._lock:
                self.sync.add(JOINT_STREAM, stamp, v, now)

    # ---- the control tick -------------------------------------------------------------------------
    def tick(self) -> ActionChunk | None:
        with self._lock:
            taken = self._take_observation()
            return None if taken is None else self._act_on(taken)

    # The tick in its two halves, for a caller that steps several runtimes' engines as one batch (batched
    # replay: replay/batch.py): take each runtime's observation set, compute the batch, then act on each.
    def take_observation(self) -> TakenObservation | None:
        """The first half of a tick: a pending swap installed, the newest synchronised set decoded."""
        with self._lock:
            return self._take_observation()

    def act_on(self, taken: TakenObservation) -> ActionChunk | None:
        """The second half of a tick: ``taken`` through the engine, a chunk when one is due."""
        with self._lock:
            return self._act_on(taken)

    @property
    def acts_on_next_observation(self) -> bool:
        """Whether the next observation the engine takes ends in a chunk (every `horizon`-th of the
        episode, or the one after a refused chunk), unless the engine refuses it."""
        return not self.paused and (self._retry or self.episode_steps % self.horizon == 0)

    def _take_observation(self) -> TakenObservation | None:
        if self._pending is not None and self.episode_steps % self.horizon == 0:
            # the replaced checkpoint stays loaded until the new one has proven itself
            self._previous = self.policy if self._proven else self._previous
            self._install(self._pending)
            self._pending = None
            self._proven, self._refused_in_a_row, self.last_revert = False, 0, None
        now = self.clock()
        synced = self.sync.latest(now)
        if synced is None:
            return None
        if synced.epoch != self._epoch:
            # a new time base: what the engine holds was stamped in the old one
            self.policy.engine.reset()
            self.episode_steps, self._running = 0, None
            self._epoch = synced.epoch
            self.time_base_restarts += 1
        try:
            images = {cam: msg_to_rgb(synced.items[cam]) for cam in self.spec.camera_names}
        except ImageDecodeError:
            self.drops["bad_image"] += 1
            return None
        return TakenObservation(Observation(stamp=synced.newest_stamp, images=images,
                                            state=synced.items.get(JOINT_STREAM), goal=self.policy.goal),
                                synced.newest_stamp)

    def _act_on(self, taken: TakenObservation) -> ActionChunk | None:
        obs, engine = taken.observation, self.policy.engine
        try:
            acts = self.acts_on_next_observation
            engine.observe(obs)
            self.observations += 1
            self.episode_steps += 1
            if not acts:
                return None
            out = engine.act(committed=self.committed(engine))
        except EngineError as exc:
            self.drops[exc.reason] += 1
            if exc.reason != "nan_output":
                return None
            self._retry = True  # no chunk this time: try again on the next observation
            if self._proven or not self._refused_chunk(exc):
                return None
            try:  # the swap was undone: the checkpoint that runs again acts on this observation at once
                engine = self.policy.engine
                engine.observe(obs)
                self.episode_steps = 1
                out = engine.act()
            except EngineError as again:
                self.drops[again.reason] += 1
                return None
        self._retry = False
        if not self._proven:
            self._proven, self._refused_in_a_row, self._previous, self.error = True, 0, None, None
        chunk = out.to_action_chunk(0, policy_id=self.policy.policy_id, sequence=self.sequence, task=self.policy.task)
        chunk.execute_horizon = self.horizon
        self._running = chunk
        self.sequence += 1
        self.chunks += 1
        done = self.clock()
        self.latency.append(done - taken.newest_stamp)
        self.inference.append(out.latency_s)
        self.chunk_times.append(done)
        return chunk

    def committed(self, engine: InferenceEngine):
        """What the next chunk (from the observation the engine took last) keeps of the running one, for an
        engine with real-time chunking: the overlap's actions due before it can take over (now plus the
        compute time: `RuntimeConfig.compute_time`, or the median of the last 20 computations) frozen, the
        rest guided (control.chunks.committed_actions); None: nothing. The batched replay asks before its
        batch step, the runtime when it acts alone."""
        if not engine.real_time_chunking or self._running is None:
            return None
        compute = self.config.compute_time
        if compute is None:
            recent = list(itertools.islice(reversed(self.inference), 20))
            compute = float(np.median(recent)) if recent else 0.0
        ready = self.clock() + compute
        actions, weight = committed_actions(self._running, engine.due_times()[0], ready)
        return actions[None], weight[None]

    def _refused_chunk(self, exc: EngineError) -> bool:
        """A chunk of a checkpoint on probation was refused (lock held): after `failed_chunks` in a row,
        go back to the checkpoint it replaced (returns True), or, with none, report the failure."""
        self._refused_in_a_row += 1
        if self._refused_in_a_row < self.config.failed_chunks:
            return False
        failed = self.policy
        why = f"checkpoint {failed.name!r} ({failed.policy_id}): {self._refused_in_a_row} chunks in a row refused, " \
              f"none valid ({exc.detail})"
        if self._previous is None:
            self.error = why
            return False
        restored, self._previous = self._previous, None
        self._install(restored)
        restored.engine.reset()  # its history stopped at the swap: start afresh on the next observations
        self._proven, self._refused_in_a_row = True, 0
        self.reverts += 1
        self.last_revert = f"{why}; undone, {restored.name!r} runs again"
        self._revert_events.append((failed.name, restored.name))
        return True

    def take_reverts(self) -> list[tuple[str, str]]:
        """The swaps undone since the last call: (failed checkpoint, restored checkpoint) names."""
        with self._lock:
            events, self._revert_events = self._revert_events, []
        return events

    # ---- status ----------------------------------------------------------------------------------
    def status(self) -> dict:
        def pct(values, q):
            return float(np.percentile(values, q) * 1e3) if values else 0.0

        with self._lock:
            t = list(self.chunk_times)
            rate = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
            drops = dict(self.drops)
            drops.update({f"sync_{k}": v for k, v in self.sync.counts.items()
                          if k in ("stale", "no_match", "duplicate", "backward_stamp", "time_base_restart")})
            return dict(policy_id=self.policy.policy_id, checkpoint=self.policy.name, task=self.policy.task,
                        history=self.policy.engine.history, device=str(self.policy.engine.device),
                        observations=self.observations, chunks=self.chunks, episode_steps=self.episode_steps,
                        drops=drops, rate_hz=rate, latency_p50_ms=pct(self.latency, 50),
                        latency_p99_ms=pct(self.latency, 99), inference_p50_ms=pct(self.inference, 50),
                        inference_p99_ms=pct(self.inference, 99), missing=self.sync.missing(),
                        paused=self.paused, time_event=self.sync.last_event,
                        time_base_restarts=self.time_base_restarts, error=self.error,
                        last_revert=self.last_revert, reverts=self.reverts)
