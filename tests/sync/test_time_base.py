"""ObservationSynchronizer when stamps go backwards: a clock step, a device reset, a recording that
starts again. Counted, recovered from on its own, and never a set that mixes two time bases."""

import pytest

from mail_policy_node.data.sync import ObservationSynchronizer

STREAMS = ("agentview", "wrist", "joints")


def feed(sync, base, t0, t1, period=0.05, joints_period=0.01, order=STREAMS):
    """Messages of every stream stamped t0..t1 in time base `base`; items say (base, stream, stamp)."""
    events = []
    for name in order:
        p = joints_period if name == "joints" else period
        k = 0
        while t0 + k * p < t1 - 1e-9:
            events.append((t0 + k * p, name))
            k += 1
    events.sort()
    for t, name in events:
        sync.add(name, t, (base, name, t))


def bases(obs):
    return {item[0] for item in obs.items.values()}


def test_a_clock_step_back_restarts_the_history_and_sets_resume_in_the_new_base():
    s = ObservationSynchronizer(STREAMS, tolerance=0.012, max_age=0.25)
    feed(s, "old", 100.0, 101.0)
    got = s.latest(now=101.0)
    assert got is not None and bases(got) == {"old"}
    # every clock stepped back by 30 s (an NTP step on the host): before the fix, every new message was
    # cut from the history at once (behind the old newest by more than the buffer) and no set came again
    feed(s, "new", 71.0, 71.3)
    got = s.latest(now=71.3)
    assert got is not None, s.counts
    assert bases(got) == {"new"} and got.stamp > 71.2
    assert got.epoch == 1  # a consumer with a history of its own (the policy) restarts it too
    assert s.counts["time_base_restart"] == 1
    # counted: every message that came in behind its stream's newest before the restart (the joint
    # states' restart_after, the cameras' first frames); none after it
    assert s.counts["backward_stamp"] == s.restart_after + 2
    assert "new time base" in s.last_event


def test_a_small_step_back_beyond_the_threshold_does_not_stall_until_the_old_stamps_are_passed():
    s = ObservationSynchronizer(STREAMS, tolerance=0.012, max_age=0.25)
    feed(s, "old", 100.0, 101.0)
    assert s.latest(now=101.0) is not None
    feed(s, "new", 100.4, 100.6)  # back by 0.6 s: before the fix, no set until the stamps passed 101.0
    got = s.latest(now=100.6)
    assert got is not None and bases(got) == {"new"} and got.stamp < 101.0


@pytest.mark.parametrize("first", STREAMS)
def test_streams_that_step_one_after_the_other_never_mix_bases(first):
    """The clock steps back 0.5 s; `first` stamps in the new base at once, the other streams' next
    messages (already in flight) still carry old-base stamps for 0.1 s. Every set returned is all-old or
    all-new. Before the fix, the reference camera stepping first got sets pairing its new-base frames
    with the in-flight old-base joint states once its stamps passed the old ones."""
    s = ObservationSynchronizer(STREAMS, tolerance=0.02, max_age=0.25)
    feed(s, "old", 100.0, 101.0)
    seen = []
    for step in range(80):  # 10 ms steps; cameras every 5th
        for name in STREAMS:
            if name != "joints" and step % 5:
                continue
            in_flight = name != first and step < 10
            base, stamp = ("old", 101.0 + step * 0.01) if in_flight else ("new", 100.5 + step * 0.01)
            s.add(name, stamp, (base, name, stamp))
        got = s.latest(now=100.5 + step * 0.01 + 0.005)
        if got is not None:
            seen.append(got)
            assert len(bases(got)) == 1, got.items
    assert seen and bases(seen[-1]) == {"new"}
    assert s.counts["time_base_restart"] >= 1


def test_a_stray_late_message_is_counted_and_forgotten_without_a_restart():
    s = ObservationSynchronizer(STREAMS, tolerance=0.012, max_age=0.25)
    feed(s, "old", 100.0, 101.0)
    assert s.latest(now=101.0) is not None
    s.add("wrist", 99.0, ("stray", "wrist", 99.0))  # delivered very late: not a new time base
    feed(s, "old", 101.0, 101.2)
    got = s.latest(now=101.2)
    assert got is not None and bases(got) == {"old"}
    assert s.counts["backward_stamp"] == 1 and s.counts["time_base_restart"] == 0 and got.epoch == 0


def test_stamps_that_keep_jumping_back_without_order_do_not_restart():
    s = ObservationSynchronizer(STREAMS, tolerance=0.012, max_age=0.25)
    feed(s, "old", 100.0, 101.0)
    for t in (90.0, 80.0, 95.0, 70.0):  # backward, but not increasing among themselves: no time base
        s.add("joints", t, ("junk", "joints", t))
    assert s.counts["time_base_restart"] == 0 and s.counts["backward_stamp"] == 4


def test_a_burst_of_old_stamped_messages_never_restarts_the_history():
    """Increasing stamps 5 s in the past (a misbehaving publisher, a recording replayed with its own
    stamps) look like a new time base but could never be used: with the caller's clock they are
    counted and dropped, and the live streams go on."""
    s = ObservationSynchronizer(STREAMS, tolerance=0.012, max_age=0.25)
    feed(s, "old", 100.0, 101.0)
    for k in range(10):
        s.add("agentview", 96.0 + 0.03 * k, ("bogus", "agentview", 96.0 + 0.03 * k), now=101.0)
    assert s.counts["backward_stamp"] == 10 and s.counts["time_base_restart"] == 0
    feed(s, "old", 101.0, 101.2)
    got = s.latest(now=101.2)
    assert got is not None and bases(got) == {"old"} and got.epoch == 0


def test_out_of_order_arrivals_within_the_threshold_are_still_just_reordered():
    s = ObservationSynchronizer(("a",), tolerance=0.01, max_age=0.25)
    for t in (1.0, 1.1, 1.05, 1.2, 1.0 + 0.2):
        s.add("a", t, t)
    assert s.counts["backward_stamp"] == 0 and s.counts["duplicate"] == 1
    assert s._buf["a"].stamps == [1.0, 1.05, 1.1, 1.2]


def test_invalid_time_base_settings_are_refused():
    with pytest.raises(ValueError):
        ObservationSynchronizer(("a",), restart_after=0)
    with pytest.raises(ValueError):
        ObservationSynchronizer(("a",), backward_threshold=0.0)
