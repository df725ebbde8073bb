"""Chunk validation, latency compensation (stale actions) and blending across chunk boundaries."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mail_policy_node.control.chunks import ActionChunk, ChunkRejection, ChunkScheduler, SchedulerConfig
from mail_policy_node.spec import ACTION_SPACE_EE_DELTA_POSE, FR3_JOINT_NAMES, GRIPPER_NAME

NAMES = FR3_JOINT_NAMES + (GRIPPER_NAME,)


def chunk(stamp, values, dt=0.1, offset=0.0, seq=0, policy="p", names=NAMES, space="joint_position"):
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:  # one scalar per action -> broadcast over all dimensions
        values = np.repeat(values[:, None], len(names), axis=1)
    return ActionChunk(stamp=stamp, start_offset=offset, dt=dt, actions=values, names=names, action_space=space,
                       policy_id=policy, sequence=seq)


def sched(**kw):
    return ChunkScheduler(SchedulerConfig(names=NAMES, **kw))


def test_due_times_and_linear_interpolation():
    s = sched()
    v = s.accept(chunk(1.0, [0.0, 1.0, 3.0], dt=0.1, offset=0.05), now=1.0)
    assert v.ok and v.dropped_stale == 0
    np.testing.assert_allclose(s.active.times, [1.05, 1.15, 1.25])
    assert s.target(1.0)[0] == 0.0  # before the first due time: first action
    assert s.target(1.10)[0] == pytest.approx(0.5)
    assert s.target(1.20)[0] == pytest.approx(2.0)
    assert s.target(9.0)[0] == 3.0  # after the last: last action (and consumed)
    assert not s.consumed(1.25) and s.consumed(1.2501)


def test_stale_actions_are_dropped_and_counted():
    s = sched()
    v = s.accept(chunk(1.0, [0, 1, 2, 3, 4]), now=1.25)  # due 1.0 1.1 1.2 | 1.3 1.4
    assert v.ok and v.dropped_stale == 3
    np.testing.assert_allclose(s.active.times, [1.3, 1.4])
    assert s.target(1.25)[0] == 3.0


def test_stale_tolerance_keeps_recent_actions():
    s = sched(stale_tolerance=0.06)
    v = s.accept(chunk(1.0, [0, 1, 2, 3, 4]), now=1.25)
    assert v.dropped_stale == 2  # 1.2 is within 60 ms


def test_all_stale_chunk_is_never_executed():
    s = sched()
    v = s.accept(chunk(1.0, [0, 1, 2]), now=2.0)
    assert not v.ok and v.reason == ChunkRejection.ALL_STALE and v.dropped_stale == 3
    assert s.target(2.0) is None


@pytest.mark.parametrize("make, reason", [
    (lambda: chunk(1.0, np.zeros((0, 8))), ChunkRejection.MALFORMED),
    (lambda: chunk(1.0, np.zeros((3, 7)), names=NAMES), ChunkRejection.MALFORMED),
    (lambda: chunk(1.0, [0, 1], names=tuple(reversed(NAMES))), ChunkRejection.WRONG_NAMES),
    (lambda: chunk(1.0, [0, 1], names=NAMES[:-1]), ChunkRejection.WRONG_NAMES),
    (lambda: chunk(1.0, [0, math.nan]), ChunkRejection.NON_FINITE),
    (lambda: chunk(1.0, [0, math.inf]), ChunkRejection.NON_FINITE),
    (lambda: chunk(1.0, [0, 1e6]), ChunkRejection.NON_FINITE),
    (lambda: chunk(math.nan, [0, 1]), ChunkRejection.NON_FINITE),
    (lambda: chunk(1.0, [0, 1], dt=0.0), ChunkRejection.BAD_DT),
    (lambda: chunk(1.0, [0, 1], dt=-0.1), ChunkRejection.BAD_DT),
    (lambda: chunk(1.0, [0, 1], dt=math.inf), ChunkRejection.NON_FINITE),
    (lambda: chunk(5.0, [0, 1]), ChunkRejection.STAMP_IN_FUTURE),  # observed 4 s from now: clocks disagree
    (lambda: chunk(1.06, [0, 1]), ChunkRejection.STAMP_IN_FUTURE),  # beyond max_clock_offset (0.05 s)
    (lambda: chunk(1.0, [0, 1], offset=3.0), ChunkRejection.TOO_FAR_IN_FUTURE),
    (lambda: chunk(1.0, [0, 1], offset=0.6), ChunkRejection.TOO_FAR_IN_FUTURE),
    (lambda: chunk(1.0, np.zeros(65)), ChunkRejection.MALFORMED),  # more actions than max_horizon
    (lambda: chunk(1.0, [0, 1], dt=1.5), ChunkRejection.BAD_DT),
    (lambda: chunk(1.0, [0, 1], space="cartesian"), ChunkRejection.MALFORMED),
    (lambda: chunk(1.0, [0, 1], space=ACTION_SPACE_EE_DELTA_POSE), ChunkRejection.WRONG_ACTION_SPACE),
    (lambda: ActionChunk(1.0, 0.0, 0.1, "bad", NAMES), ChunkRejection.MALFORMED),
])
def test_rejections(make, reason):
    s = sched()
    v = s.accept(make(), now=1.0)
    assert not v.ok and v.reason == reason
    assert not s.has_target()


def test_sequence_must_advance_per_policy():
    s = sched()
    assert s.accept(chunk(1.0, [0, 1], seq=5), now=1.0).ok
    assert s.accept(chunk(1.0, [0, 1], seq=5), now=1.0).reason == ChunkRejection.OLD_SEQUENCE
    assert s.accept(chunk(1.0, [0, 1], seq=4), now=1.0).reason == ChunkRejection.OLD_SEQUENCE
    assert s.accept(chunk(1.0, [0, 1], seq=6), now=1.0).ok
    assert s.accept(chunk(1.0, [0, 1], seq=0, policy="other"), now=1.0).ok  # hot swap restarts numbering


def test_a_sequence_far_ahead_is_refused_and_does_not_block_the_real_stream():
    """One chunk with the running policy's id and a huge sequence made every later real chunk "old"
    (the arm held until an enable). Now the jump itself is refused."""
    s = sched()
    assert s.accept(chunk(1.0, [0, 1], seq=5), now=1.0).ok
    v = s.accept(chunk(1.0, [0, 1], seq=5 + 1001), now=1.0)
    assert not v.ok and v.reason == ChunkRejection.SEQUENCE_JUMP
    assert s.accept(chunk(1.0, [0, 1], seq=6), now=1.0).ok
    assert s.accept(chunk(1.0, [0, 1], seq=6 + 1000), now=1.0).ok  # within max_sequence_jump: lost chunks


def test_a_stamp_within_the_clock_offset_bound_is_accepted():
    s = sched(max_clock_offset=0.05)
    assert s.accept(chunk(1.04, [0, 1]), now=1.0).ok
    assert s.accept(chunk(1.06, [0, 1], seq=1), now=1.0).reason == ChunkRejection.STAMP_IN_FUTURE


def test_replace_switches_at_once():
    s = sched(blend="replace")
    s.accept(chunk(0.0, [0, 0, 0, 0, 0]), now=0.0)
    s.accept(chunk(0.2, [1, 1, 1], seq=1), now=0.2)
    assert s.target(0.2)[0] == 1.0


def test_crossfade_is_continuous_and_reaches_new_chunk():
    s = sched(blend="crossfade", crossfade_duration=0.1)
    s.accept(chunk(0.0, [0, 0, 0, 0, 0]), now=0.0)
    before = s.target(0.2)[0]
    s.accept(chunk(0.2, [1, 1, 1], seq=1), now=0.2)
    assert s.target(0.2)[0] == before == 0.0
    assert s.target(0.25)[0] == pytest.approx(0.5)
    assert s.target(0.30)[0] == pytest.approx(1.0)
    assert s.target(0.35)[0] == 1.0


def test_crossfade_interrupted_by_a_third_chunk_stays_continuous():
    s = sched(blend="crossfade", crossfade_duration=0.2)
    s.accept(chunk(0.0, [0] * 10), now=0.0)
    s.accept(chunk(0.1, [1] * 10, seq=1), now=0.1)
    mid = s.target(0.2)[0]
    assert mid == pytest.approx(0.5)
    s.accept(chunk(0.2, [3] * 10, seq=2), now=0.2)
    assert s.target(0.2)[0] == pytest.approx(mid)
    assert s.target(0.4)[0] == pytest.approx(3.0)


def test_temporal_ensemble_weights_exactly():
    m = 0.5
    s = sched(blend="temporal_ensemble", ensemble_decay=m)
    s.accept(chunk(0.0, [0.0] * 10), now=0.0)
    s.accept(chunk(0.1, [1.0] * 10, seq=1), now=0.1)
    s.accept(chunk(0.2, [2.0] * 10, seq=2), now=0.2)
    w = np.exp(-m * np.arange(3))  # oldest first
    assert s.target(0.25)[0] == pytest.approx(w @ [0.0, 1.0, 2.0] / w.sum())


def test_temporal_ensemble_forgets_chunks_that_ended():
    s = sched(blend="temporal_ensemble", ensemble_decay=0.0)
    s.accept(chunk(0.0, [0.0, 0.0]), now=0.0)  # covers 0.0 .. 0.1
    s.accept(chunk(0.05, [4.0] * 5, seq=1), now=0.05)
    assert s.target(0.05)[0] == pytest.approx(2.0)
    assert s.target(0.3)[0] == 4.0


@settings(max_examples=40, deadline=None)
@given(blend=st.sampled_from(["replace", "crossfade", "temporal_ensemble"]),
       chunks=st.lists(st.tuples(st.floats(-0.3, 0.3), st.floats(-0.05, 0.05), st.integers(1, 8)), min_size=1,
                       max_size=8))
def test_targets_are_finite_and_inside_the_convex_hull_of_actions(blend, chunks):
    s = sched(blend=blend, crossfade_duration=0.1)
    now, seq, lo, hi = 0.0, 0, math.inf, -math.inf
    for base, slope, n in chunks:
        values = base + slope * np.arange(n)
        if s.accept(chunk(now - 0.02, values, seq=seq), now=now).ok:
            kept = values[s.active.times.size * -1:]
            lo, hi = min(lo, kept.min()), max(hi, kept.max())
        seq += 1
        for _ in range(10):
            now += 0.01
            t = s.target(now)
            if t is not None:
                assert np.all(np.isfinite(t))
                assert lo - 1e-9 <= t[0] <= hi + 1e-9


def test_from_flat_message_fields():
    flat = np.arange(16, dtype=float)
    c = ActionChunk.from_flat(1.0, 0.05, 0.1, 2, 8, flat, NAMES, "joint_position", "p", 3)
    assert c.actions.shape == (2, 8) and c.actions[1, 0] == 8.0 and c.sequence == 3
    bad = ActionChunk.from_flat(1.0, 0.05, 0.1, 3, 8, flat, NAMES, "joint_position")  # 3 x 8 != 16
    v = sched().accept(bad, now=1.0)
    assert not v.ok and v.reason == ChunkRejection.MALFORMED


@pytest.mark.parametrize("blend", ["replace", "crossfade", "temporal_ensemble"])
def test_target_rate_is_the_time_derivative_of_target(blend):
    s = sched(blend=blend, crossfade_duration=0.2, ensemble_decay=0.3)
    s.accept(chunk(0.0, np.linspace(0.0, 1.0, 10)), now=0.0)
    s.accept(chunk(0.1, np.linspace(0.5, -0.5, 10), seq=1), now=0.1)
    for t in (0.13, 0.22, 0.37):  # inside segments, away from due times where the slope jumps
        h = 1e-6
        numeric = (s.target(t + h)[0] - s.target(t - h)[0]) / (2 * h)
        s.target(t)
        assert s.target_rate(t)[0] == pytest.approx(numeric, rel=1e-4, abs=1e-6)
