"""Engine behaviour besides exactness over long episodes: time stamps, resets per row, goals, paths and
layouts compared on the same inputs, configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mail_policy_node.control.chunks import ActionChunk
from mail_policy_node.engine import EngineConfig, EngineError, InferenceEngine, Observation
from mail_policy_node.engine.reference import reference_stream_chunks, reference_window_chunks

from .helpers import Episode, run_episode, tiny_policy, tiny_spec

TOL = 1e-5


def test_due_times_latency_and_controller_chunk():
    policy = tiny_policy("d_ma", "bc")
    spec = policy.cfg.spec
    e = InferenceEngine(policy, EngineConfig(start_offset_s=0.05, path="cached"))
    o = Episode(spec, 1).observation(3)
    chunk = e.step(Observation(12.5, {k: v[0] for k, v in o.images.items()}, o.state[0], o.goal[0]))
    assert chunk.actions.shape == (1, spec.action_horizon, spec.action_dim)
    np.testing.assert_allclose(chunk.due[0], 12.5 + 0.05 + spec.dt * np.arange(spec.action_horizon))
    assert chunk.latency_s > 0 and chunk.timing["observe_s"] > 0 and chunk.timing["act_s"] > 0
    assert chunk.steps == 1 and chunk.names == spec.action_names
    ac = chunk.to_action_chunk(policy_id="p", sequence=7)
    assert isinstance(ac, ActionChunk) and ac.sequence == 7
    np.testing.assert_allclose(ac.due_times(), chunk.due[0])
    assert e.describe()["path"] == "cached"
    assert e.describe()["cuda_graphs"] is False  # CPU: same step functions, called eagerly


def test_reset_one_row_with_a_new_goal_mid_episode():
    """Row 1 restarts at step 5 with a new goal; row 0 goes on. Each row equals its own recompute."""
    policy = tiny_policy("ed_ma", "ddpm", history="stream")
    spec = policy.cfg.spec
    e = InferenceEngine(policy, EngineConfig(history="stream", batch=2))
    ep = Episode(spec, 2, seed=1)
    new_goal = np.linspace(-1, 1, spec.goal_embedding_dim)
    gen = torch.Generator().manual_seed(0)
    outs, noises, steps = [], [], []
    for i in range(9):
        if i == 5:
            e.reset(goal=new_goal, rows=[1])
        o = ep.observation(i, with_goal=i == 0)
        noise = torch.randn(e.noise_shape, generator=gen)
        outs.append(e.step(o, noise).actions)
        noises.append(noise)
        steps.append(o)
    from mail_policy_node.engine.inputs import check_observation
    from mail_policy_node.engine.reference import EpisodeLog

    def row_log(r, start, goal):
        log = EpisodeLog(goal=goal[None])
        for o in steps[start:]:
            c = check_observation(Observation(o.stamp, {k: v[r] for k, v in o.images.items()}, o.state[r]), spec, 1)
            log.add(c)
        return log

    for r, start, goal in ((0, 0, ep.goal[0]), (1, 5, new_goal)):
        log = row_log(r, start, goal)
        at = list(range(len(log.steps)))
        noise = torch.stack([noises[start + t][:, r:r + 1] for t in at])
        ref = reference_stream_chunks(policy, log, at, noise)[:, 0]
        got = torch.from_numpy(np.stack([outs[start + t][r] for t in at]))
        assert (got - ref).abs().max().item() < TOL


def test_goal_given_at_reset_and_refused_when_different():
    policy = tiny_policy("d_ma", "bc")
    spec = policy.cfg.spec
    e = InferenceEngine(policy)
    ep = Episode(spec, 1)
    e.reset(goal=ep.goal[0])
    o = ep.observation(0, with_goal=False)
    e.step(Observation(o.stamp, {k: v[0] for k, v in o.images.items()}, o.state[0]))
    o = ep.observation(1)
    with pytest.raises(EngineError) as err:
        e.observe(Observation(o.stamp, {k: v[0] for k, v in o.images.items()}, o.state[0], goal=ep.goal[0] + 1))
    assert err.value.reason == "goal_changed"


@pytest.mark.parametrize("variant,head", [("d_ma", "ddpm"), ("ed_ma", "bc"), ("d_tr", "ddpm"), ("ed_tr", "ddpm"),
                                          ("ed_ma", "ddpm")])
def test_paper_layouts_run_by_full_recompute(variant, head):
    policy = tiny_policy(variant, head, layout="paper", spec=tiny_spec(cameras=1))
    actions, noise, log = run_episode(policy, "window", 12)
    assert (actions - reference_window_chunks(policy, log, noise)).abs().max().item() < TOL


def test_streaming_layout_recompute_path_equals_cached_path():
    policy = tiny_policy("ed_ma", "ddpm", spec=tiny_spec(cameras=1))
    cached, noise, _ = run_episode(policy, "window", 12)
    full, noise2, _ = run_episode(policy, "window", 12, path="recompute")
    assert torch.equal(noise, noise2) and (cached - full).abs().max().item() < TOL


def test_ddim_sampler_stream():
    policy = tiny_policy("d_ma", "ddpm", history="stream", spec=tiny_spec(cameras=1))
    actions, noise, log = run_episode(policy, "stream", 30, sampler="ddim")
    at = [0, 1, 14, 29]
    ref = reference_stream_chunks(policy, log, at, noise[at], sampler="ddim")
    assert (actions[at] - ref).abs().max().item() < TOL


def test_bf16_weights_keep_fp32_states():
    policy = tiny_policy("d_ma", "ddpm", history="stream", spec=tiny_spec(cameras=1))
    e32 = InferenceEngine(policy, EngineConfig(history="stream"))
    e16 = InferenceEngine(policy, EngineConfig(history="stream", weights="bfloat16"))
    assert e16.policy.backbone.stack.layers[0].mixer.in_proj.weight.dtype == torch.bfloat16
    assert e16.policy.backbone.stack.layers[0].mixer.A_log.dtype == torch.float32
    assert all(t.dtype == torch.float32 for s in e16.stream_state.stacks for layer in s for t in layer)
    assert policy.action_out.weight.dtype == torch.float32  # the caller's policy is untouched
    ep = Episode(policy.cfg.spec, 1)
    for i in range(4):
        o = ep.observation(i)
        noise = torch.randn(e32.noise_shape)
        a, b = e32.step(o, noise).actions, e16.step(o, noise).actions
        assert np.isfinite(b).all() and np.abs(a - b).max() < 0.5


def test_configuration_errors():
    paper = tiny_policy("d_ma", "bc", layout="paper")
    with pytest.raises(ValueError, match="stream"):
        InferenceEngine(paper, EngineConfig(history="stream"))
    with pytest.raises(ValueError, match="cached"):
        InferenceEngine(paper, EngineConfig(path="cached"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            InferenceEngine(paper, EngineConfig(device="cuda"))
    with pytest.raises(ValueError):
        EngineConfig(batch=0)
    unnormalised = tiny_policy("d_ma", "bc")
    unnormalised.action_std.fill_(float("nan"))
    with pytest.raises(ValueError, match="normalisation"):
        InferenceEngine(unnormalised)


@pytest.mark.parametrize("history", ["window", "stream"])
def test_relative_actions_are_offsets_from_the_newest_joint_state(history):
    # Same weights, the spec's relative_actions on and off: the engine adds the newest observed joint
    # state to the arm joints' actions, and nothing else changes (the gripper stays absolute).
    import dataclasses

    spec = tiny_spec()
    absolute = tiny_policy(history=history, spec=spec)
    relative = tiny_policy(history=history, spec=dataclasses.replace(spec, relative_actions=True))
    engines = [InferenceEngine(p, EngineConfig(history=history, batch=2)) for p in (absolute, relative)]
    episode = Episode(spec, batch=2, seed=3)
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        obs = episode.observation(i)
        noise = torch.randn(engines[0].noise_shape, generator=gen)
        a, r = (e.step(obs, noise).actions for e in engines)
        np.testing.assert_allclose(r[..., :7] - a[..., :7], np.broadcast_to(obs.state[:, None, :7], a[..., :7].shape),
                                   atol=1e-5)
        np.testing.assert_array_equal(r[..., 7], a[..., 7])


def test_relative_actions_need_the_joint_state():
    import dataclasses

    with pytest.raises(ValueError, match="relative_actions"):
        dataclasses.replace(tiny_spec(joint=False), relative_actions=True)


@pytest.mark.parametrize("history", ["window", "stream"])
def test_rows_step_at_their_own_pace_in_one_batch(history):
    """observe / act with ``rows``: the rows left out keep their caches (an episode whose tick took no
    observation, a bag that ended), each row's chunks equal a one-row engine fed the same observations."""
    policy = tiny_policy("d_ma", "bc", history=history, spec=tiny_spec(goal=0))
    spec, b = policy.cfg.spec, 3
    batched = InferenceEngine(policy, EngineConfig(history=history, batch=b))
    alone = [InferenceEngine(policy, EngineConfig(history=history)) for _ in range(b)]
    ep, rng = Episode(spec, b, seed=4), np.random.default_rng(5)
    compared = 0
    for i in range(12):
        full = ep.observation(i)
        rows = sorted(rng.choice(b, size=int(rng.integers(1, b + 1)), replace=False).tolist())
        if i == 0:
            rows = list(range(b))  # every row has an observation before it acts
        sub = Observation(stamp=full.stamp, images={c: v[rows] for c, v in full.images.items()}, state=full.state[rows])
        batched.observe(sub, rows=rows)
        for r in rows:
            alone[r].observe(Observation(stamp=full.stamp, images={c: v[r] for c, v in full.images.items()},
                                         state=full.state[r]))
        acting = sorted(rng.choice(b, size=2, replace=False).tolist())
        got = batched.act(rows=acting)
        assert got.actions.shape[0] == 2 and got.stamp.shape == (2,)
        for k, r in enumerate(acting):
            np.testing.assert_allclose(got.actions[k], alone[r].act().actions[0], rtol=0, atol=1e-5)
            compared += 1
    assert compared == 24
    with pytest.raises(ValueError, match="distinct indices"):
        batched.act(rows=[0, 0])
    with pytest.raises(ValueError, match="distinct indices"):
        batched.observe(ep.observation(20), rows=[3])
    batched.reset(rows=[1])
    with pytest.raises(EngineError, match=r"rows \[1\] have no observation"):
        batched.act(rows=[0, 1])
