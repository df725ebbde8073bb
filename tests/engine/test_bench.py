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


def test_cache_bytes_and_advance_stream_on_a_kv_cache():
    """The D-Tr KV-cached stream engine through the benchmark's pieces: advance_stream fills the cache,
    cache_bytes counts the preallocated buffers and the positions held."""
    from mail_policy_node.engine.bench import cache_bytes

    from .test_kv_cache import tiny_dtr_policy

    spec = tiny_spec(cameras=1, goal=0, joint=False)  # one token per step
    engine = InferenceEngine(tiny_dtr_policy("ddpm", spec=spec, history="stream"),
                             EngineConfig(history="stream", max_stream_steps=40))
    stats = time_engine(engine, steps=2, warmup=1, skip=30)
    assert stats["n"] == 2
    cache = engine.stream_state.stacks[0]
    assert cache.length.tolist() == [30 + 1 + 2]  # 1 observed, 29 advanced, then warm-up and timed steps
    per_pos = 2 * 2 * 16 * 4  # layers x (keys, values) x d_model x fp32
    got = cache_bytes(engine)
    assert got["state"] == 40 * per_pos + 8 and got["held"] == 33 * per_pos
    window = InferenceEngine(tiny_dtr_policy("ddpm", spec=spec), EngineConfig(history="window"))
    got = cache_bytes(window)
    assert got["state"] == got["held"] == spec.obs_horizon * per_pos + 8 and got["ring"] == spec.obs_horizon * 16 * 4


def test_versus_dtr_times_dp_unet_beside_the_backbones(tmp_path, capsys):
    """`mail-il bench engine --versus-dtr` at paper depths, cut to one K, one stream position and one timed
    step on 32x32 frames: each runner on its path, DP-UNet (the Diffusion Policy baseline) recomputing its
    chunk beside D-Ma's cached one, and both ratios in the JSON (values not asserted: no timing in tests)."""
    import json

    from mail_policy_node.cli import main

    out = tmp_path / "versus.json"
    assert main(["bench", "engine", "--versus-dtr", "--heads", "ddpm", "--ks", "1", "--lengths", "2", "--steps", "1",
                 "--warmup", "1", "--image-size", "32", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    paths = {(r["history"], r["runner"]): r["path"] for r in result["rows"]}
    assert paths == {("window", "d_ma"): "cached", ("window", "d_tr_kv"): "cached",
                     ("window", "d_tr_recompute"): "recompute", ("window", "dp_unet"): "recompute",
                     ("stream", "d_ma"): "cached", ("stream", "d_tr_kv"): "cached"}
    window, stream = result["ratios"]
    assert window["dp_unet_over_dma_p50"] > 0 and "dp_unet_over_dma_p50" not in stream  # no stream for a UNet
    assert "DP-UNet p50 x" in capsys.readouterr().out
