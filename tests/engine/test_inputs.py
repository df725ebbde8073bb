"""Bad input is refused with a reason code and changes nothing; frames of another size are resized by the
stack's one rule; a NaN chunk is never returned."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mail_policy_node.engine import REASONS, EngineConfig, EngineError, InferenceEngine, Observation

from .helpers import SIZE, Episode, tiny_policy


@pytest.fixture(scope="module")
def policy():
    return tiny_policy("d_ma", "ddpm", history="stream")


def make(policy, batch=1, history="stream", **kw):
    return InferenceEngine(policy, EngineConfig(history=history, batch=batch, **kw))


def obs(policy, batch=1, i=0, seed=0, **over):
    o = Episode(policy.cfg.spec, batch, seed).observation(i)
    if batch == 1:
        o = Observation(stamp=o.stamp, images={k: v[0] for k, v in o.images.items()}, state=o.state[0], goal=o.goal[0])
    for k, v in over.items():
        setattr(o, k, v)
    return o


def refused(engine, o, reason):
    with pytest.raises(EngineError) as e:
        engine.observe(o)
    assert e.value.reason == reason, str(e.value)
    assert reason in REASONS


def test_bad_inputs_are_refused_with_a_reason(policy):
    e = make(policy)
    good = obs(policy)
    img = good.images
    refused(e, obs(policy, images={"agentview": img["agentview"]}), "missing_camera")
    refused(e, obs(policy, images={**img, "depth": img["wrist"]}), "unknown_camera")
    refused(e, obs(policy, images={**img, "wrist": img["wrist"].astype(np.float32)}), "bad_image")
    refused(e, obs(policy, images={**img, "wrist": np.zeros((SIZE, SIZE, 4), np.uint8)}), "bad_image")  # rgba
    refused(e, obs(policy, images={**img, "wrist": np.zeros((SIZE, SIZE), np.uint8)}), "bad_image")  # mono
    refused(e, obs(policy, images={**img, "wrist": np.zeros((0, SIZE, 3), np.uint8)}), "bad_image")
    refused(e, obs(policy, images={**img, "wrist": np.zeros((2, SIZE, SIZE, 3), np.uint8)}), "bad_image")  # batch
    refused(e, obs(policy, state=None), "missing_state")
    refused(e, obs(policy, state=np.zeros(3)), "bad_state")
    refused(e, obs(policy, state=np.full(8, np.nan)), "nan_input")
    refused(e, obs(policy, goal=np.full(6, np.inf)), "nan_input")
    refused(e, obs(policy, goal=np.zeros(5)), "bad_goal")
    refused(e, obs(policy, goal=None), "missing_goal")
    refused(e, obs(policy, stamp=float("nan")), "nan_input")
    with pytest.raises(EngineError) as err:
        e.act()
    assert err.value.reason == "no_observation"
    e.observe(good)
    refused(e, obs(policy, i=0, seed=1), "bad_stamp")  # same stamp again
    refused(e, obs(policy, i=1, goal=np.ones(6)), "goal_changed")
    with pytest.raises(EngineError) as err:
        e.act(noise=torch.zeros(3))
    assert err.value.reason == "bad_noise"


def test_a_refused_observation_changes_nothing(policy):
    noise = torch.randn(make(policy).noise_shape)
    a, b = make(policy), make(policy)
    for e in (a, b):
        e.observe(obs(policy, i=0))
    bad = obs(policy, i=1, seed=5)
    bad.images = {**bad.images, "wrist": bad.images["wrist"][:, :, :2]}
    refused(a, bad, "bad_image")
    refused(a, obs(policy, i=1, state=np.full(8, np.inf)), "nan_input")
    for e in (a, b):
        e.observe(obs(policy, i=1, seed=2))
    assert np.array_equal(a.act(noise).actions, b.act(noise).actions)


def test_other_frame_sizes_are_resized_with_inter_area_no_crop(policy):
    big = obs(policy)
    big.images = {k: cv2.resize(v, (3 * SIZE, 2 * SIZE), interpolation=cv2.INTER_LINEAR) for k, v in big.images.items()}
    small = obs(policy)
    small.images = {k: cv2.resize(v, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for k, v in big.images.items()}
    noise = torch.randn(make(policy).noise_shape)
    a, b = make(policy), make(policy)
    assert np.array_equal(a.step(big, noise).actions, b.step(small, noise).actions)


def test_a_nan_chunk_is_never_returned(policy):
    broken = tiny_policy("d_ma", "bc")
    with torch.no_grad():
        broken.action_out.bias[0] = float("nan")
    e = make(broken, history="window")
    with pytest.raises(EngineError) as err:
        e.step(obs(broken))
    assert err.value.reason == "nan_output"


def test_batch_rows_are_independent_and_accept_lists_of_frames(policy):
    """Row r of a batch-2 engine equals a batch-1 engine fed row r (frames given as a list per camera)."""
    ep = Episode(policy.cfg.spec, 2, seed=3)
    both = make(policy, batch=2)
    rows = [make(policy), make(policy)]
    gen = torch.Generator().manual_seed(0)
    for i in range(6):
        o = ep.observation(i)
        noise = torch.randn(both.noise_shape, generator=gen)
        lists = Observation(o.stamp, {k: [v[0], v[1]] for k, v in o.images.items()}, o.state, o.goal)
        out = both.step(lists, noise).actions
        for r, e in enumerate(rows):
            single = Observation(o.stamp, {k: v[r] for k, v in o.images.items()}, o.state[r], o.goal[r])
            np.testing.assert_allclose(e.step(single, noise[:, r:r + 1]).actions[0], out[r], atol=1e-5, rtol=0)
