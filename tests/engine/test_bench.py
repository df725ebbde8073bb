"""The benchmark's pieces on a tiny engine (no timing is asserted)."""

from __future__ import annotations

import torch

from mail_policy_node.engine import EngineConfig, InferenceEngine
from mail_policy_node.engine.bench import advance_stream, summarise, time_engine

from .helpers import tiny_policy, tiny_spec


def test_time_engine_and_advance_stream():
    policy = tiny_policy("d_ma", "bc", history="stream", spec=tiny_spec(cameras=1, goal=0, joint=False))
    engine = InferenceEngine(policy, EngineConfig(history="stream"))
    stats = time_engine(engine, steps=2, warmup=1, skip=30)
    assert stats["n"] == 2 and stats["p99_ms"] >= stats["p50_ms"] > 0
    before = [t.clone() for s in engine.stream_state.stacks for layer in s for t in layer]
    advance_stream(engine, 5, chunk=2)
    after = [t for s in engine.stream_state.stacks for layer in s for t in layer]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_summary_ratios():
    rows = [dict(variant="d_ma", head="ddpm", K=5, mode=m, p50_ms=v, p99_ms=v) for m, v in
            (("reference", 100.0), ("paper", 50.0), ("window", 10.0), ("stream", 5.0))]
    flat = [dict(variant="d_ma", head="ddpm", episode_step=n, p50_ms=v) for n, v in ((10, 5.0), (1000, 5.25))]
    s = summarise(rows, flat, torch.device("cpu"))
    assert s["targets"]["ddpm_k5_streaming_speedup_min"] == 10.0
    assert abs(s["targets"]["stream_flat_ratio_max"] - 1.05) < 1e-9
