"""Batched replay: several bags advance in lockstep as the rows of one engine batch per checkpoint.

One bag's replay is a generator (`player.play_bag`) that yields each control tick when it is due. Here
every bag of a group gets its own runtimes, clock and row of each checkpoint's batched `InferenceEngine`;
a round takes the next due tick of every bag, steps each checkpoint's engine once for all bags whose tick
it is (`InferenceEngine.observe/act` with ``rows``: the other rows' caches do not move), then lets each
runtime finish its tick as it would alone. The runtimes' logic is not repeated here: their engine is an
`EngineRow`, which hands the runtime the results the batch left for it, and runs the row alone when there
are none (a refused step, a retry after one). So the figures are those of replaying the bags one at a
time, with each bag starting from the same DDPM noise seed (`ReplayConfig.seed`), only computed in fewer,
larger engine steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..control.chunks import stack_committed
from ..engine.engine import EngineChunk, InferenceEngine
from ..engine.errors import EngineError
from ..engine.inputs import Observation
from ..runtime import LoadedPolicy, TakenObservation
from .player import BagReplay, Lane, ReplayConfig, _Clock, _Run, play_bag
from .topics import TopicMap


class EngineRow:
    """Row ``row`` of a batched engine, with the interface `PolicyRuntime` uses (spec, reset, observe,
    act). Results a batch step left for this row (`leave_observed`, `leave_chunk`) are handed out by the
    next observe / act of the same observation; otherwise the row is stepped alone. The row draws its
    DDPM noise from its own generator, as a one-row engine draws from its own, so a bag sees the same
    noise in a batch as alone."""

    def __init__(self, engine: InferenceEngine, row: int, seed: int):
        self.engine, self.row = engine, row
        self._gen = torch.Generator(device=engine.device)
        self._gen.manual_seed(seed)
        self._observed: tuple[Observation, EngineError | None] | None = None
        self._chunk: tuple[EngineChunk, object] | None = None  # and the committed actions it was sampled with
        self._noise: torch.Tensor | None = None  # drawn for a batch step whose act failed: the row's retry uses it

    spec = property(lambda self: self.engine.spec)
    policy = property(lambda self: self.engine.policy)
    history = property(lambda self: self.engine.history)
    device = property(lambda self: self.engine.device)

    def reset(self, goal=None, rows=None, seed: int | None = None) -> None:
        self.engine.reset(goal, rows=[self.row])
        if seed is not None:
            self._gen.manual_seed(int(seed))
        self._observed = self._chunk = self._noise = None

    # ---- what a batch step leaves for this row ----
    def leave_observed(self, obs: Observation) -> None:
        self._observed = (obs, None)

    def leave_chunk(self, chunk: EngineChunk, committed=None) -> None:
        self._chunk = (chunk, committed)

    def draw_noise(self) -> torch.Tensor | None:
        """This row's next noise draw, (S, 1, J, A) (None: the policy draws none)."""
        shape = self.engine.noise_shape
        if shape is None:
            return None
        if self._noise is None:
            self._noise = torch.empty((shape[0], 1, *shape[2:]), device=self.engine.device).normal_(generator=self._gen)
        return self._noise

    # ---- the engine interface ----
    def observe(self, obs: Observation) -> None:
        left, self._observed = self._observed, None
        if left is not None and left[0] is obs:
            return
        self.engine.observe(obs, rows=[self.row])

    real_time_chunking = property(lambda self: self.engine.real_time_chunking)

    def due_times(self, rows=None) -> np.ndarray:
        return self.engine.due_times([self.row])

    def act(self, committed=None) -> EngineChunk:
        left, self._chunk = self._chunk, None
        if left is not None and _same_committed(left[1], committed):
            self._noise = None
            return left[0]
        noise = self.draw_noise()
        full = None
        if noise is not None:
            full = torch.zeros(self.engine.noise_shape, device=self.engine.device)
            full[:, self.row] = noise[:, 0]
        chunk = self.engine.act(full, rows=[self.row], committed=committed)  # an EngineError keeps the noise
        self._noise = None
        return chunk


def _same_committed(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _row_of(chunk: EngineChunk, k: int) -> EngineChunk:
    return dataclasses.replace(chunk, actions=chunk.actions[k:k + 1], due=chunk.due[k:k + 1],
                               stamp=chunk.stamp[k:k + 1])


def _stack(observations: list[Observation]) -> Observation:
    """One batch observation from one-row observations (ValueError: they do not stack)."""
    first = observations[0]
    return Observation(stamp=np.asarray([o.stamp for o in observations], np.float64),
                       images={c: np.stack([o.images[c] for o in observations]) for c in first.images},
                       state=None if first.state is None else np.stack([o.state for o in observations]),
                       goal=None if first.goal is None else np.stack([o.goal for o in observations]))


def _tick_lane(engine: InferenceEngine, runs: list[_Run]) -> None:
    """One tick of each of ``runs`` (one checkpoint, different bags), their engine steps as one batch."""
    t0 = time.perf_counter()
    taken: list[TakenObservation | None] = [r.runtime.take_observation() for r in runs]
    ready = [(r, t) for r, t in zip(runs, taken) if t is not None]
    if ready:
        rows: list[EngineRow] = [r.runtime.policy.engine for r, _ in ready]
        try:
            engine.observe(_stack([t.observation for _, t in ready]), rows=[row.row for row in rows])
        except (EngineError, ValueError):
            ready = []  # each runtime steps its row alone below and counts what the engine refuses
        for (_, t), row in zip(ready, rows):
            row.leave_observed(t.observation)
        acting = [(r, r.runtime.policy.engine) for r, _ in ready if r.runtime.acts_on_next_observation]
        if acting:
            noise = None
            if engine.noise_shape is not None:
                noise = torch.zeros(engine.noise_shape, device=engine.device)
                for _, row in acting:
                    noise[:, row.row] = row.draw_noise()[:, 0]
            # real-time chunking: what each row's runtime will commit when it acts (its clock and computation
            # times do not move before then)
            committed = [r.runtime.committed(row) for r, row in acting]  # each a batch of one row, or None
            stacked = stack_committed([None if c is None else (c[0][0], c[1][0]) for c in committed],
                                      engine.spec.action_horizon, engine.spec.action_dim)
            try:
                chunk = engine.act(noise, rows=[row.row for _, row in acting], committed=stacked)
            except EngineError:
                chunk = None  # each row acts alone (with the noise it drew) and the runtime counts the refusal
            if chunk is not None:
                for k, (_, row) in enumerate(acting):
                    row.leave_chunk(_row_of(chunk, k), committed[k])
    share = (time.perf_counter() - t0) / len(runs)
    for r, t in zip(runs, taken):
        t1 = time.perf_counter()
        r.ticked(None if t is None else r.runtime.act_on(t), share + time.perf_counter() - t1)


def replay_group(paths: Sequence[str | Path], lanes: Sequence[Lane], engines: dict[str, InferenceEngine],
                 topics: TopicMap, config: ReplayConfig,
                 progress: Callable[[str], None] | None = None) -> list[BagReplay]:
    """Replay ``paths`` (at most the engines' batch) in lockstep; -> their results, in order."""
    plays, results = {}, {}
    for i, path in enumerate(paths):
        clock = _Clock()
        runs = [_Run(Lane(lane.label, lane.path, LoadedPolicy(EngineRow(engines[lane.label], i, config.seed),
                                                              lane.loaded.name, lane.loaded.path,
                                                              lane.loaded.policy_id, lane.loaded.task,
                                                              lane.loaded.goal), lane.episode_tasks), config, clock)
                for lane in lanes]
        plays[i] = play_bag(path, runs, clock, topics, config, progress)
    due: dict[int, _Run] = {}

    def advance(i: int) -> None:
        try:
            due[i] = next(plays[i])
        except StopIteration as done:
            results[i] = done.value
            due.pop(i, None)

    for i in list(plays):
        advance(i)
    while due:
        by_lane: dict[str, list[_Run]] = {}
        for run in due.values():
            by_lane.setdefault(run.lane.label, []).append(run)
        for label, runs in by_lane.items():
            _tick_lane(engines[label], runs)
        for i in list(due):
            advance(i)
    return [results[i] for i in range(len(paths))]


def replay_batched(paths: Sequence[str | Path], lanes: Sequence[Lane], topics: TopicMap, config: ReplayConfig,
                   batch: int, progress: Callable[[str], None] | None = None) -> list[BagReplay]:
    """Every bag through every lane, ``batch`` bags at a time in lockstep (see the module doc)."""
    if config.realtime:
        raise ValueError("a batched replay runs as fast as it can: replay one bag at a time (batch 1) to pace it "
                         "in recorded time")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    size = min(batch, len(paths))
    engine_config = dataclasses.replace(config.engine_config(), batch=size)
    engines = {lane.label: InferenceEngine.from_checkpoint(lane.path, engine_config) for lane in lanes}
    results: list[BagReplay] = []
    for start in range(0, len(paths), size):
        results += replay_group(paths[start:start + size], lanes, engines, topics, config, progress)
    return results
