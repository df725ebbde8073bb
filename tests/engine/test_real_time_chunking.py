"""Real-time chunking: a DDPM chunk sampled with the actions of the running chunk it overlaps committed
(model.diffusion.CommittedActions, the engine's act(committed=...), control.chunks.committed_actions, and
the policy runtime that ties them together). Real tiny policies and checkpoints, every sampling path that
takes committed actions (the fused CUDA DDPM loop does not: an engine with real-time chunking samples
through the prefix sampler instead, which runs here)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mail_policy_node.control.chunks import ActionChunk, committed_actions
from mail_policy_node.engine import EngineConfig, InferenceEngine
from mail_policy_node.engine.errors import EngineError
from mail_policy_node.spec import FR3_JOINT_NAMES, GRIPPER_NAME
from tests.engine.helpers import Episode, tiny_policy, tiny_spec

# (variant, layout, engine path, history): the prefix sampler (Mamba, both histories), the full recompute
# (paper layouts: D-Ma and the Transformer baseline)
PATHS = [("d_ma", "streaming", "cached", "window"), ("d_ma", "streaming", "cached", "stream"),
         ("ed_ma", "streaming", "cached", "window"), ("d_ma", "paper", "recompute", "window"),
         ("d_tr", "paper", "recompute", "window")]


def engine_after_steps(policy, rtc: bool, path: str, history: str, sampler: str, steps: int = 3, batch: int = 2):
    engine = InferenceEngine(policy, EngineConfig(history=history, batch=batch, path=path, sampler=sampler,
                                                  real_time_chunking=rtc))
    episode = Episode(policy.cfg.spec, batch, seed=4)
    for i in range(steps):
        engine.observe(episode.observation(i))
    return engine


def noise_for(engine, seed=7):
    return torch.randn(engine.noise_shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("variant,layout,path,history", PATHS)
def test_nothing_committed_samples_exactly_as_without(variant, layout, path, history, sampler):
    """Weight 0 everywhere (committed=None, or explicit zeros) leaves every number as an engine without
    real-time chunking computes it, on every sampling path."""
    policy = tiny_policy(variant, history=history, layout=layout)
    plain = engine_after_steps(policy, False, path, history, sampler)
    rtc = engine_after_steps(policy, True, path, history, sampler)
    assert rtc.real_time_chunking and not plain.real_time_chunking and rtc.describe()["real_time_chunking"]
    noise = noise_for(plain)
    want = plain.act(noise).actions
    assert np.array_equal(rtc.act(noise).actions, want)
    j, a = want.shape[1:]
    zeros = (np.full((2, j, a), 5.0), np.zeros((2, j)))
    assert np.array_equal(rtc.act(noise, committed=zeros).actions, want)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("variant,layout,path,history", PATHS)
def test_committed_actions_are_kept_and_the_rest_follows_them(variant, layout, path, history, sampler):
    """Weight 1 on the first two actions: the chunk starts exactly with them (robot units, through the
    normalisation), and the free actions after them change too (the network saw them at every step: it
    is inpainting, not an overwrite of the result)."""
    policy = tiny_policy(variant, history=history, layout=layout)
    engine = engine_after_steps(policy, True, path, history, sampler)
    noise = noise_for(engine)
    free = engine.act(noise).actions
    j, a = free.shape[1:]
    target = free + np.linspace(0.3, 0.6, a)  # a plan the free sample would not have made
    weight = np.zeros((2, j))
    weight[:, :2] = 1.0
    out = engine.act(noise, committed=(target, weight)).actions
    np.testing.assert_allclose(out[:, :2], target[:, :2], atol=1e-5)
    assert np.abs(out[:, 2:] - free[:, 2:]).max() > 1e-5  # an overwrite would leave them bit for bit
    # rows: only the rows acted on take committed actions, in the chunk's row order
    one = engine.act(noise, rows=[1], committed=(target[1:], weight[1:])).actions
    np.testing.assert_allclose(one[0, :2], target[1, :2], atol=1e-5)


def test_relative_actions_are_committed_as_absolute_targets():
    """A policy predicting offsets from the newest joint state: committed actions are absolute targets, as
    chunks are, and the engine subtracts the state before the sampler sees them."""
    spec = dataclasses.replace(tiny_spec(), relative_actions=True)
    policy = tiny_policy("d_ma", spec=spec)
    engine = engine_after_steps(policy, True, "cached", "window", "ddpm")
    assert engine._relative[0]
    noise = noise_for(engine)
    free = engine.act(noise).actions
    target = free + 0.25
    weight = np.zeros(free.shape[:2])
    weight[:, :3] = 1.0
    np.testing.assert_allclose(engine.act(noise, committed=(target, weight)).actions[:, :3], target[:, :3],
                               atol=1e-5)


def test_bad_committed_actions_are_refused_and_change_nothing():
    policy = tiny_policy("d_ma")
    engine = engine_after_steps(policy, True, "cached", "window", "ddpm")
    noise = noise_for(engine)
    want = engine.act(noise).actions
    j, a = want.shape[1:]
    ok = (np.zeros((2, j, a)), np.zeros((2, j)))
    bad = {"shape": (np.zeros((2, j - 1, a)), np.zeros((2, j - 1))), "rows": (ok[0][:1], ok[1][:1]),
           "nan": (np.full((2, j, a), np.nan), np.ones((2, j))), "weight": (ok[0], np.full((2, j), 1.5)),
           "negative": (ok[0], np.full((2, j), -0.1))}
    for name, committed in bad.items():
        with pytest.raises(EngineError) as e:
            engine.act(noise, committed=committed)
        assert e.value.reason == "bad_committed", name
    assert np.array_equal(engine.act(noise).actions, want)
    plain = engine_after_steps(policy, False, "cached", "window", "ddpm")
    with pytest.raises(EngineError) as e:
        plain.act(noise, committed=ok)
    assert e.value.reason == "bad_committed" and "without them" in str(e.value)


def test_a_bc_head_has_nothing_to_guide():
    engine = engine_after_steps(tiny_policy("d_ma", head="bc"), True, "auto", "window", None)
    assert not engine.real_time_chunking and engine.describe()["real_time_chunking"] is False
    j, a = engine.spec.action_horizon, engine.spec.action_dim
    with pytest.raises(EngineError):
        engine.act(committed=(np.zeros((2, j, a)), np.ones((2, j))))
    with pytest.raises(ValueError, match="DDPM"):
        engine.policy.sample_with(lambda x, t: None, 1, committed=object())


# ---- which actions are committed ------------------------------------------------------------------
def chunk(stamp=0.0, n=16, dt=0.1, offset=0.1):
    names = FR3_JOINT_NAMES + (GRIPPER_NAME,)
    actions = np.arange(n)[:, None] * np.linspace(0.1, 0.8, len(names))[None]
    return ActionChunk(stamp=stamp, start_offset=offset, dt=dt, actions=actions, names=names)


def test_committed_actions_freeze_what_runs_before_the_new_chunk_and_fade_the_rest():
    running = chunk()  # due 0.1 .. 1.6
    due = 0.8 + 0.1 + 0.1 * np.arange(16)  # replanned after 8 actions: the new one's 0.9 .. 2.4
    actions, weight = committed_actions(running, due, ready=1.15)  # 0.9, 1.0 and 1.1 run before it arrives
    np.testing.assert_allclose(actions[:8], running.actions[8:])  # the overlap: running's own actions
    np.testing.assert_allclose(actions[8:], np.repeat(running.actions[-1:], 8, 0))  # past it: held, weight 0
    assert (weight[:3] == 1).all()
    assert 0 < weight[3] < 1 and (np.diff(weight[3:8]) < 0).all() and weight[7] > 0
    assert (weight[8:] == 0).all()
    # nothing frozen (the simulated evaluation: time stands still while the policy computes)
    _, w0 = committed_actions(running, due, ready=0.9)
    assert w0[0] < 1 and (np.diff(w0[:8]) < 0).all() and (w0[8:] == 0).all()
    # due between two of running's actions: interpolated
    a, _ = committed_actions(running, due + 0.05, ready=0.0)
    np.testing.assert_allclose(a[0], 0.5 * (running.actions[8] + running.actions[9]))
    # no overlap (a new chunk past the running one's end): nothing committed
    _, none = committed_actions(running, 1.7 + 0.1 * np.arange(16), ready=5.0)
    assert (none == 0).all()
    # everything due before ready and inside running's span: all of the overlap frozen
    _, late = committed_actions(running, due, ready=9.0)
    assert (late[:8] == 1).all() and (late[8:] == 0).all()


# ---- the policy runtime (the policy node's logic) ------------------------------------------------------
@pytest.mark.parametrize("rtc", [True, False])
def test_runtime_keeps_what_runs_before_its_next_chunk_arrives(tmp_path, rtc):
    """Replanning every tick (execution_horizon 1) with the clock 0.15 s past each observation: the next
    chunk's first action (due 0.1 s after its observation) runs before that chunk can arrive, so with
    real-time chunking it is the running chunk's action at that time, exactly; without, the policy samples
    its own. A new episode forgets the running chunk."""
    from mail_policy_node.runtime import PolicyRuntime, RuntimeConfig, load_policy
    from tests.policy.ckpts import make_checkpoint
    from tests.policy.test_runtime import Clock, image, joints

    make_checkpoint(tmp_path / "ddpm", preset="d_ma_ddpm", j=6)
    loaded = load_policy(str(tmp_path), "ddpm", EngineConfig(real_time_chunking=rtc))
    assert loaded.engine.real_time_chunking == rtc
    clock = Clock()
    rt = PolicyRuntime(loaded, RuntimeConfig(rate_hz=10, execution_horizon=1), clock=clock)
    chunks = []
    for step in range(4):
        if step == 3:
            rt.reset_episode()
        stamp = 1000.0 + 0.1 * step
        clock.t = stamp + 0.15  # observed 0.15 s ago
        for cam in ("agentview", "wrist"):
            rt.add_image(cam, stamp, image(40 * step))
        rt.add_joint_state(stamp, joints(np.full(7, 0.01 * step)))
        chunks.append(rt.tick())
    c0, c1, c2, c3 = chunks
    np.testing.assert_allclose(c1.due_times()[:-1], c0.due_times()[1:], atol=1e-9)  # a tick later, an action on
    for old, new in ((c0, c1), (c1, c2)):
        kept = committed_actions(old, new.due_times(), new.stamp + 0.15)[0][0]
        assert (np.abs(new.actions[0] - kept).max() < 1e-5) == rtc
    after_reset = committed_actions(c2, c3.due_times(), c3.stamp + 0.15)[0][0]
    assert np.abs(c3.actions[0] - after_reset).max() > 1e-5  # a new episode keeps nothing of the last one
    assert rt._running is c3 and rt.drops.total() == 0
