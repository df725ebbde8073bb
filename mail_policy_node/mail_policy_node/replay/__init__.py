"""Offline rosbag replay: recorded observations through the policy node's logic and engine, predicted
chunks compared with the recorded actions (`mail-il replay`). No ROS needed."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Callable, Sequence

from .player import (
    BagReplay,
    EpisodeReplay,
    IncompatibleCheckpointError,
    Lane,
    ReplayConfig,
    load_lanes,
    replay_bag,
)
from .batch import replay_batched
from .report import summarise, write
from .topics import TopicMap

__all__ = ["BagReplay", "EpisodeReplay", "IncompatibleCheckpointError", "Lane", "ReplayConfig", "TopicMap",
           "load_lanes", "replay_bag", "replay_batched", "run_replay", "summarise", "write"]


def run_replay(bags: Sequence[str | Path], lanes: Sequence[Lane], topics: TopicMap = TopicMap(),
               config: ReplayConfig = ReplayConfig(), progress: Callable[[str], None] | None = None,
               batch: int = 1) -> tuple[list[BagReplay], dict]:
    """Replay every bag through every checkpoint, one at a time, or ``batch`` bags in lockstep as one engine
    batch per checkpoint (the same figures, faster: replay/batch.py); -> (per-bag results, the summary of
    `report.summarise`)."""
    t0 = time.perf_counter()
    if batch > 1 and len(bags) > 1:
        results = replay_batched(bags, lanes, topics, config, batch, progress)
    else:
        results = [replay_bag(b, lanes, topics, config, progress) for b in bags]
    return results, summarise(results, lanes, topics, config, time.perf_counter() - t0)
