"""The policy node's logic without ROS: synchronised observations in, action chunks out, at a rate.

`PolicyRuntime` owns the synchroniser and the running `InferenceEngine`. Every tick (1 / rate) it
takes the newest complete observation set, feeds it to the engine (every tick: a `stream` policy must
see every control step) and returns a chunk every `execution_horizon` ticks. A checkpoint swap is
prepared elsewhere (`load_policy`: resolve under the root, validate, warm up) and applied at the next
chunk boundary with the caches reset, so the old policy runs until then and no chunk is missed.
Every dropped input and refused step is counted by cause, for PolicyStatus.

A time base change in the inputs (a clock step, a camera reset: see data/sync.py) restarts the
synchroniser's history; the first set of the new epoch also restarts the engine's history (its window
or stream state holds observations stamped in the old base, and its stamps must increase), so the
policy never acts on a mix of the two and goes on by itself once the stamps move forward again.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import numpy as np

from .checkpoint_root import resolve_checkpoint
from .control.chunks import ActionChunk
from .data.images import ImageDecodeError, check_layout, msg_to_rgb
from .data.sync import ObservationSynchronizer
from .engine.engine import EngineConfig, InferenceEngine
from .engine.errors import EngineError
from .engine.inputs import Observation
from .spec import FeatureSpec

JOINT_STREAM = "joint_state"


@dataclass(frozen=True)
class RuntimeConfig:
    rate_hz: float = 10.0  # control ticks per second (= 1 / spec.dt); 0: a tick per new observation set
    execution_horizon: int = 0  # ticks between published chunks (0: the policy's J, as in the paper)
    sync_tolerance: float = 0.03  # [s] largest stamp difference inside one observation set
    max_age: float = 0.25  # [s] older observation sets are not used
    max_future: float = 0.5  # [s] messages stamped further ahead of this clock are dropped

    def __post_init__(self):
        if not (self.rate_hz == 0 or 0.5 <= self.rate_hz <= 200):
            raise ValueError(f"rate_hz must be 0 (every observation set) or in [0.5, 200], got {self.rate_hz}")
        if self.execution_horizon < 0:
            raise ValueError(f"execution_horizon must be >= 0, got {self.execution_horizon}")


@dataclass
class LoadedPolicy:
    engine: InferenceEngine
    name: str  # as given in the checkpoint parameter
    path: str
    policy_id: str

    @property
    def spec(self) -> FeatureSpec:
        return self.engine.spec


def load_policy(root: str, name: str, engine_config: EngineConfig) -> LoadedPolicy:
    """Resolve `name` under `root`, load and validate the checkpoint, warm the engine up and reset it.
    Raises CheckpointRefused / CheckpointError / ValueError with the reason; nothing else changes."""
    from .model.checkpoint import policy_id

    folder = resolve_checkpoint(root, name)
    engine = InferenceEngine.from_checkpoint(folder, engine_config)
    spec = engine.spec
    # Warm-up: one full step on blank inputs (allocations, CUDA graph capture), then a clean reset.
    blank = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in spec.cameras}
    state = np.zeros(spec.state_dim, np.float32) if spec.use_joint_state else None
    goal = np.zeros(spec.goal_embedding_dim, np.float32) if spec.goal_embedding_dim else None
    engine.step(Observation(stamp=1.0, images=blank, state=state, goal=goal))
    engine.reset()
    return LoadedPolicy(engine, name, str(folder), policy_id(folder))


def joint_state_vector(msg, spec: FeatureSpec) -> np.ndarray:
    """sensor_msgs/JointState -> the spec's state vector (7 joints + gripper width = sum of fingers)."""
    from .spec import FR3_FINGER_NAMES, GRIPPER_NAME

    pos = dict(zip(msg.name, msg.position))
    out = []
    for n in spec.state_names:
        if n == GRIPPER_NAME:
            if not all(f in pos for f in FR3_FINGER_NAMES):
                raise ValueError(f"joint state has no {FR3_FINGER_NAMES} for the gripper width")
            out.append(pos[FR3_FINGER_NAMES[0]] + pos[FR3_FINGER_NAMES[1]])
        elif n in pos:
            out.append(pos[n])
        else:
            raise ValueError(f"joint state has no joint {n!r}")
    v = np.asarray(out, dtype=np.float32)
    if not np.all(np.isfinite(v)):
        raise ValueError("joint state holds NaN or inf")
    return v


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

    def reset_episode(self) -> None:
        with self._lock:
            self.policy.engine.reset()
            self.sync.reset()
            self.episode_steps = 0

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
            if self._pending is not None and self.episode_steps % self.horizon == 0:
                self._install(self._pending)
                self._pending = None
            now = self.clock()
            synced = self.sync.latest(now)
            if synced is None:
                return None
            if synced.epoch != self._epoch:
                # a new time base: what the engine holds was stamped in the old one
                self.policy.engine.reset()
                self.episode_steps = 0
                self._epoch = synced.epoch
                self.time_base_restarts += 1
            try:
                images = {cam: msg_to_rgb(synced.items[cam]) for cam in self.spec.camera_names}
            except ImageDecodeError:
                self.drops["bad_image"] += 1
                return None
            obs = Observation(stamp=synced.newest_stamp, images=images,
                              state=synced.items.get(JOINT_STREAM))
            engine = self.policy.engine
            try:
                engine.observe(obs)
                self.observations += 1
                self.episode_steps += 1
                if self.paused or (self.episode_steps - 1) % self.horizon:
                    return None
                out = engine.act()
            except EngineError as exc:
                self.drops[exc.reason] += 1
                return None
            chunk = out.to_action_chunk(0, policy_id=self.policy.policy_id, sequence=self.sequence)
            chunk.execute_horizon = self.horizon
            self.sequence += 1
            self.chunks += 1
            done = self.clock()
            self.latency.append(done - synced.newest_stamp)
            self.inference.append(out.latency_s)
            self.chunk_times.append(done)
            return chunk

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
            return dict(policy_id=self.policy.policy_id, checkpoint=self.policy.name,
                        history=self.policy.engine.history, device=str(self.policy.engine.device),
                        observations=self.observations, chunks=self.chunks, episode_steps=self.episode_steps,
                        drops=drops, rate_hz=rate, latency_p50_ms=pct(self.latency, 50),
                        latency_p99_ms=pct(self.latency, 99), inference_p50_ms=pct(self.inference, 50),
                        inference_p99_ms=pct(self.inference, 99), missing=self.sync.missing(),
                        paused=self.paused, time_event=self.sync.last_event,
                        time_base_restarts=self.time_base_restarts)
