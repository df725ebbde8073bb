"""ObservationSynchronizer with jittered, missing, late and out-of-order streams."""

import random

import pytest

from mail_policy_node.data.sync import ObservationSynchronizer

STREAMS = ("agentview", "wrist", "joints")


def feed_jittered(sync, t0, t1, rates, jitter, rng):
    events = []
    for name, hz in rates.items():
        t = t0
        while t < t1:
            events.append((t + rng.uniform(-jitter, jitter), name))
            t += 1.0 / hz
    # arrival order shuffled a little: out-of-order delivery between streams
    events.sort(key=lambda e: e[0] + rng.uniform(0, 0.004))
    for stamp, name in events:
        sync.add(name, stamp, (name, stamp))
    return events


def test_nothing_until_every_stream_has_data():
    s = ObservationSynchronizer(STREAMS, tolerance=0.02, max_age=0.5)
    s.add("agentview", 1.0, "a")
    s.add("wrist", 1.0, "w")
    assert not s.ready() and s.missing() == ["joints"]
    assert s.latest(now=1.01) is None
    s.add("joints", 1.005, "j")
    got = s.latest(now=1.01)
    assert got is not None and got.items == {"agentview": "a", "wrist": "w", "joints": "j"}
    assert got.stamp == 1.0 and got.newest_stamp == 1.005


def test_jittered_streams_match_within_tolerance_and_newest_first():
    rng = random.Random(0)
    s = ObservationSynchronizer(STREAMS, tolerance=0.012, max_age=0.3)
    feed_jittered(s, 0.0, 2.0, {"agentview": 30, "wrist": 30, "joints": 200}, jitter=0.003, rng=rng)
    got = s.latest(now=2.01)
    assert got is not None
    assert max(got.stamps.values()) - min(got.stamps.values()) <= 2 * 0.012
    assert got.stamp > 2.0 - 2 / 30  # the newest reference frame, not an old one
    assert s.latest(now=2.02) is None and s.counts["no_new"] == 1  # same set never returned twice


def test_missing_partner_skips_to_older_complete_set():
    s = ObservationSynchronizer(STREAMS, tolerance=0.01, max_age=1.0)
    for t in (0.0, 0.1, 0.2):
        s.add("agentview", t, t)
        s.add("joints", t, t)
    s.add("wrist", 0.0, 0.0)
    s.add("wrist", 0.1, 0.1)  # the wrist frame at 0.2 was lost
    got = s.latest(now=0.25)
    assert got.stamp == pytest.approx(0.1)


def test_stale_sets_are_refused_and_counted():
    s = ObservationSynchronizer(STREAMS, tolerance=0.01, max_age=0.2)
    for name in STREAMS:
        s.add(name, 1.0, name)
    assert s.latest(now=1.5) is None
    assert s.counts["stale"] == 1
    for name in STREAMS:
        s.add(name, 1.45, name)
    assert s.latest(now=1.5).stamp == 1.45


def test_no_match_when_streams_disagree_beyond_tolerance():
    s = ObservationSynchronizer(STREAMS, tolerance=0.01, max_age=1.0)
    s.add("agentview", 1.0, 0)
    s.add("wrist", 1.05, 0)
    s.add("joints", 1.0, 0)
    assert s.latest(now=1.1) is None and s.counts["no_match"] == 1


def test_duplicates_dropped_and_buffer_bounded():
    s = ObservationSynchronizer(("a",), tolerance=0.01, max_age=0.5, buffer_seconds=1.0)
    s.add("a", 0.0, 0)
    s.add("a", 0.0, 1)
    assert s.counts["duplicate"] == 1
    for i in range(1, 1000):
        s.add("a", i * 0.01, i)
    assert len(s._buf["a"].stamps) <= 101


def test_reset_forgets_everything():
    s = ObservationSynchronizer(("a", "b"), tolerance=0.01, max_age=0.5)
    s.add("a", 1.0, 0)
    s.add("b", 1.0, 0)
    assert s.latest(1.0) is not None
    s.reset()
    assert not s.ready()
    s.add("a", 0.5, 0)
    s.add("b", 0.5, 0)
    assert s.latest(0.6) is not None  # an older pivot is fine after a reset (new episode)


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        ObservationSynchronizer(("a", "a"))
    with pytest.raises(ValueError):
        ObservationSynchronizer(("a",), tolerance=0)
