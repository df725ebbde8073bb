"""D-Tr and ED-Tr with a KV cache: the engine's cached path on their streaming layouts equals the same
model run without any cache (full recompute of the same layout: D-Tr [goal, obs ..., time, actions] through
the whole stack, ED-Tr enc [goal, obs ..., time] and dec [actions], with PyTorch's attention, once per
denoising step), on the same observations and DDPM noise, in fp32 on the CPU. The engine side runs
kv_cache.attend over the cached keys and values with masks; the reference side runs
F.scaled_dot_product_attention on whole sequences (is_causal): the two share no masking code."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mail_policy_node.engine import EngineConfig, InferenceEngine
from mail_policy_node.engine.errors import EngineError
from mail_policy_node.engine.inputs import check_observation
from mail_policy_node.engine.reference import (EpisodeLog, reference_stream_chunks, reference_window_chunks)
from mail_policy_node.model.kv_cache import KVCache, KVCacheFull
from mail_policy_node.model.policy import MailPolicy, PolicyConfig
from mail_policy_node.model.transformer import transformer_streaming_config

from .helpers import DIFFUSION, Episode, run_episode, tiny_policy, tiny_spec

TOL = 1e-5


def tiny_dtr_policy(head: str = "ddpm", spec=None, history: str = "window", seed: int = 0,
                    variant: str = "d_tr") -> MailPolicy:
    """A random tiny D-Tr (or ED-Tr) policy in the streaming layout (every parameter perturbed, as
    helpers.tiny_policy)."""
    torch.manual_seed(seed)
    spec = spec or tiny_spec()
    depth = dict(n_layers=2) if variant == "d_tr" else dict(n_layers=2, n_enc_layers=2)
    cfg = PolicyConfig.make(spec, f"{variant}_{head}", diffusion=DIFFUSION, **depth,
                            encoder=dict(base_width=16, camera_features=8, d_model=16, keypoints=4))
    cfg = replace(cfg, backbone=transformer_streaming_config(cfg.backbone), history=history)
    policy = MailPolicy(cfg)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    a, s = spec.action_dim, spec.state_dim
    policy.set_normalization(torch.linspace(-1, 1, a), torch.full((a,), 0.5), torch.full((a,), -2.0),
                             torch.full((a,), 2.0), torch.linspace(-0.5, 0.5, s), torch.full((s,), 0.8))
    return policy.eval()


@pytest.mark.parametrize("variant", ["d_tr", "ed_tr"])
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("head", ["ddpm", "bc"])
def test_window_kv_equals_recompute(k, head, variant):
    policy = tiny_dtr_policy(head, spec=tiny_spec(k=k, cameras=1), variant=variant)
    engine = InferenceEngine(policy, EngineConfig(history="window", batch=2, path="cached"))
    assert engine.describe()["path"] == "cached"
    actions, noise, log = run_episode(policy, "window", 12, path="cached")
    ref = reference_window_chunks(policy, log, noise)
    assert actions.shape == ref.shape == (12, 2, 4, 8)
    assert (actions - ref).abs().max().item() < TOL


@pytest.mark.parametrize("variant", ["d_tr", "ed_tr"])
@pytest.mark.parametrize("head", ["ddpm", "bc"])
def test_stream_kv_equals_recompute(head, variant):
    policy = tiny_dtr_policy(head, spec=tiny_spec(cameras=1), history="stream", variant=variant)
    actions, noise, log = run_episode(policy, "stream", 24)
    checks = [0, 1, 2, 5, 11, 17, 23]
    ref = reference_stream_chunks(policy, log, checks, None if noise is None else noise[checks])
    assert (actions[checks] - ref).abs().max().item() < TOL


def _row_log(log: EpisodeLog, row: int, start: int = 0) -> EpisodeLog:
    """One row of ``log`` from step ``start`` on, as a batch-1 log."""
    out = EpisodeLog()
    for s in log.steps[start:]:
        out.add(replace(s, stamps=s.stamps[row:row + 1], images={c: v[row:row + 1] for c, v in s.images.items()},
                        state=None if s.state is None else s.state[row:row + 1],
                        goal=None if s.goal is None else s.goal[row:row + 1]))
    return out


@pytest.mark.parametrize("variant", ["d_tr", "ed_tr"])
def test_stream_rows_reset_and_partial_steps(variant):
    """Batch 2, history stream: row 1 is reset mid-way (row 0 goes on), then row 0 alone takes a step;
    each row's chunks equal the recompute of its own episode."""
    spec = tiny_spec(cameras=1)
    policy = tiny_dtr_policy("ddpm", spec=spec, history="stream", variant=variant)
    engine = InferenceEngine(policy, EngineConfig(history="stream", batch=2, max_stream_steps=40))
    episode, gen = Episode(spec, 2, seed=3), torch.Generator().manual_seed(3)
    log, reset_at, alone = EpisodeLog(), 9, 15
    row1_from = reset_at
    got = {0: [], 1: []}  # (step index in log, chunk row, noise row)
    for i in range(22):
        obs = episode.observation(i)
        if i == reset_at:
            engine.reset(rows=[1])
        if i == alone:  # row 0 only: row 1's cache must not move
            single = replace(obs, images={c: v[:1] for c, v in obs.images.items()}, state=obs.state[:1],
                             goal=obs.goal[:1])
            engine.observe(single, rows=[0])
            checked = check_observation(obs, spec, 2)
            log.add(checked)
            skipped = len(log.steps) - 1  # row 1 did not see this step
        else:
            engine.observe(obs)
            log.add(check_observation(obs, spec, 2))
        noise = torch.randn(engine.noise_shape, generator=gen)
        chunk = torch.from_numpy(engine.act(noise).actions)
        for r in (0, 1):
            got[r].append((len(log.steps), chunk[r], noise[:, r:r + 1]))
    for r in (0, 1):
        start = row1_from if r == 1 else 0
        row_log = _row_log(log, r, start)
        if r == 1:
            del row_log.steps[skipped - start]
        for n_steps, chunk, noise in got[r]:
            if n_steps <= start or (r == 1 and n_steps - 1 == skipped):
                continue  # row 1 before its reset; row 1's chunk of the step it skipped is its previous one
            t = n_steps - start - (1 if r == 1 and n_steps - 1 > skipped else 0)
            ref = reference_stream_chunks(policy, row_log, [t - 1], noise[None])[0, 0]
            assert (chunk - ref).abs().max().item() < TOL, (r, n_steps)


@pytest.mark.parametrize("variant", ["d_tr", "ed_tr"])
def test_window_rows_reset(variant):
    """Batch 2, history window K = 5: row 1 is reset mid-way; each row equals the recompute of its own
    windows (row 1's first windows repeat its first step after the reset)."""
    spec = tiny_spec(k=5, cameras=1)
    policy = tiny_dtr_policy("ddpm", spec=spec, variant=variant)
    engine = InferenceEngine(policy, EngineConfig(history="window", batch=2))
    episode, gen = Episode(spec, 2, seed=4), torch.Generator().manual_seed(4)
    log, chunks, noises, reset_at = EpisodeLog(), [], [], 7
    for i in range(14):
        if i == reset_at:
            engine.reset(rows=[1])
        obs = episode.observation(i)
        log.add(check_observation(obs, spec, 2))
        noises.append(torch.randn(engine.noise_shape, generator=gen))
        chunks.append(torch.from_numpy(engine.step(obs, noises[-1]).actions))
    chunks, noises = torch.stack(chunks), torch.stack(noises)  # (T, B, J, A), (T, n, B, J, A)
    for r, start in ((0, 0), (1, reset_at)):
        ref = reference_window_chunks(policy, _row_log(log, r, start), noises[start:, :, r:r + 1])
        assert (chunks[start:, r] - ref[:, 0]).abs().max().item() < TOL


def test_stream_history_limit():
    """max_stream_steps fills the preallocated cache: the next observe() is refused, nothing changes,
    and a reset row starts again."""
    spec = tiny_spec(cameras=1)
    policy = tiny_dtr_policy("bc", spec=spec, history="stream")
    engine = InferenceEngine(policy, EngineConfig(history="stream", batch=2, max_stream_steps=3))
    cache = engine.stream_state.stacks[0]
    assert isinstance(cache, KVCache) and cache.capacity == 1 + 3 * 2  # goal + 3 steps of 2 tokens
    episode = Episode(spec, 2)
    for i in range(3):
        engine.observe(episode.observation(i))
    before = engine.act().actions
    held = [t.clone() for t in (*cache.keys, *cache.values)]
    with pytest.raises(EngineError, match="history_full: .*max_stream_steps=3"):
        engine.observe(episode.observation(3))
    assert np.array_equal(engine.act().actions, before)
    assert all(torch.equal(a, b) for a, b in zip(held, (*cache.keys, *cache.values)))
    engine.reset(rows=[1])
    with pytest.raises(EngineError, match=r"history_full: rows \[0\]"):
        engine.observe(episode.observation(4))
    engine.reset()
    engine.observe(episode.observation(5))
    assert engine.stream_state.stacks[0].length.tolist() == [3, 3]


def test_act_keeps_the_cache_and_chunked_observe_equals_one_call():
    policy = tiny_dtr_policy("ddpm", spec=tiny_spec(cameras=1), history="stream")
    bb = policy.backbone
    bb.set_runtime(cache_tokens=30)
    tokens = torch.randn(2, 21, 16)
    with torch.no_grad():
        whole = bb.observe(tokens, bb.init_state(2)).stacks[0]
        state = bb.init_state(2)
        for a, b in ((0, 1), (1, 8), (8, 21)):
            state = bb.observe(tokens[:, a:b], state)
        parts = state.stacks[0]
        held = [t.clone() for t in (*parts.keys, *parts.values, parts.length)]
        x, t = torch.randn(2, 4, 16), torch.randn(2, 16)
        out = bb.act(state, x, t)
        ref = bb(tokens, x, t)
    assert parts.length.tolist() == [21, 21]
    for a, b in zip((*whole.keys, *whole.values), (*parts.keys, *parts.values)):
        assert (a[:, :, :21] - b[:, :, :21]).abs().max().item() < 1e-6
    assert all(torch.equal(a, b) for a, b in zip(held, (*parts.keys, *parts.values, parts.length)))
    assert (out - ref).abs().max().item() < 1e-6
    with pytest.raises(KVCacheFull):
        bb.observe(torch.randn(2, 10, 16), state)


@pytest.mark.parametrize("variant", ["d_tr", "ed_tr"])
def test_paper_layout_still_recomputes(variant):
    """A D-Tr / ED-Tr of the paper layout keeps the recompute path (its time token opens the sequence, so
    there is no step-independent prefix to cache) and refuses the cached one."""
    policy = tiny_policy(variant, "ddpm", layout="paper", spec=tiny_spec(cameras=1))
    assert InferenceEngine(policy, EngineConfig()).describe()["path"] == "recompute"
    with pytest.raises(ValueError, match="streaming layout"):
        InferenceEngine(policy, EngineConfig(path="cached"))
    with pytest.raises(ValueError, match="layout 'streaming'"):
        policy.backbone.init_state(1)
