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
from .report import summarise, write
from .topics import TopicMap

__all__ = ["BagReplay", "EpisodeReplay", "IncompatibleCheckpointError", "Lane", "ReplayConfig", "TopicMap",
           "load_lanes", "replay_bag", "run_replay", "summarise", "write"]


def run_replay(bags: Sequence[str | Path], lanes: Sequence[Lane], topics: TopicMap = TopicMap(),
               config: ReplayConfig = ReplayConfig(),
               progress: Callable[[str], None] | None = None) -> tuple[list[BagReplay], dict]:
    """Replay every bag through every checkpoint; -> (per-bag results, the summary of `report.summarise`)."""
    t0 = time.perf_counter()
    results = [replay_bag(b, lanes, topics, config, progress) for b in bags]
    return results, summarise(results, lanes, topics, config, time.perf_counter() - t0)
