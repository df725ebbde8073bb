"""The cached engine equals the same model run without any cache (full recompute of the same layout, the
same inputs and the same DDPM noise), step by step over long episodes, in fp32 on the CPU.

The engine runs its own copy of the policy (scan "auto": the sequential loop on the CPU); the reference
runs the full sequences with the parallel-prefix scan, so the two sides share no code path in the scan."""

from __future__ import annotations

import pytest

from mail_policy_node.engine.reference import reference_stream_chunks, reference_window_chunks

from .helpers import run_episode, tiny_policy, tiny_spec

TOL = 1e-5
STEPS = 200
STREAM_CHECKS = [0, 1, 2, 3, 17, 64, 128, 199]  # steps recomputed from the episode start (cost ~ T^2)
# The long episodes use one camera to stay fast; cameras are handled per frame, tested with two elsewhere.
LONG = tiny_spec(cameras=1)


@pytest.mark.parametrize("variant", ["d_ma", "ed_ma"])
@pytest.mark.parametrize("head", ["bc", "ddpm"])
def test_window_cached_equals_recompute(variant, head):
    policy = tiny_policy(variant, head, spec=LONG)
    actions, noise, log = run_episode(policy, "window", STEPS, path="cached")
    policy.backbone.set_runtime(scan_impl="parallel")
    ref = reference_window_chunks(policy, log, noise)
    assert actions.shape == ref.shape == (STEPS, 2, 4, 8)
    assert (actions - ref).abs().max().item() < TOL


@pytest.mark.parametrize("variant", ["d_ma", "ed_ma"])
@pytest.mark.parametrize("head", ["bc", "ddpm"])
def test_stream_cached_equals_recompute(variant, head):
    policy = tiny_policy(variant, head, spec=LONG, history="stream")
    actions, noise, log = run_episode(policy, "stream", STEPS)
    policy.backbone.set_runtime(scan_impl="parallel")
    ref = reference_stream_chunks(policy, log, STREAM_CHECKS, None if noise is None else noise[STREAM_CHECKS])
    assert (actions[STREAM_CHECKS] - ref).abs().max().item() < TOL
