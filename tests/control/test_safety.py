"""Unit tests of the safety filter with exact expectations."""

import numpy as np
import pytest

from mail_policy_node.control.limits import (FR3_Q_MAX, FR3_Q_MIN, FR3_RECT_Q_MAX, FR3_RECT_Q_MIN, JointLimits,
                                             fr3_limits)
from mail_policy_node.control.safety import CommandState, Limit, SafetyConfig, SafetyFilter, check_command

from .conftest import READY_POSE


def run(f, state, target, n, **kw):
    """Step n cycles towards a fixed target; returns the states and asserts every step is legal."""
    states = []
    for _ in range(n):
        r = f.step(state, target, **kw)
        assert check_command(f.config, state, r.command) == []
        state = r.command
        states.append(state)
    return states


@pytest.fixture
def filt():
    return SafetyFilter(SafetyConfig(cycle_period=0.01))


def test_limits_tables_match_fr3_documentation():
    assert FR3_Q_MIN[3] == -3.0421 and FR3_Q_MAX[3] == -0.1518 and FR3_Q_MIN[5] == 0.5445
    assert np.all(FR3_RECT_Q_MIN > FR3_Q_MIN) and np.all(FR3_RECT_Q_MAX < FR3_Q_MAX)
    lim = fr3_limits(position_range="full", position_margin=0.1, velocity_scale=1, acceleration_scale=1,
                     jerk_scale=1)
    np.testing.assert_allclose(lim.q_max, FR3_Q_MAX - 0.1)
    np.testing.assert_allclose(lim.dq_max, [2.0, 1.0, 1.5, 1.25, 2.61, 1.5, 2.61])
    np.testing.assert_allclose(lim.ddq_max, [10, 7.5, 10, 10, 10, 10, 10])
    np.testing.assert_allclose(lim.dddq_max, [5000, 3750, 5000, 5000, 5000, 5000, 5000])


@pytest.mark.parametrize("kwargs", [
    dict(cycle_period=0.0), dict(cycle_period=0.5), dict(max_joint_step=0.0),
    dict(workspace_min=(0, 0, 0), workspace_max=(0, 1, 1)), dict(workspace_margin=-0.1),
    dict(gripper_min=0.05, gripper_max=0.01), dict(approach_braking_fraction=1.5),
    dict(limits="fr3"),
])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        SafetyConfig(**kwargs)


def test_limit_scale_factors_must_not_exceed_one():
    with pytest.raises(ValueError, match="velocity_scale"):
        fr3_limits(velocity_scale=1.2)
    with pytest.raises(ValueError, match="q_min"):
        JointLimits(q_min=np.ones(7), q_max=np.zeros(7), dq_max=np.ones(7), ddq_max=np.ones(7),
                    dddq_max=np.ones(7))


def test_target_equal_to_state_changes_nothing(filt):
    s = CommandState.at_rest(READY_POSE)
    r = filt.step(s, READY_POSE.copy(), 0.08)
    assert r.hits == Limit.NONE
    np.testing.assert_array_equal(r.command.q, READY_POSE)
    assert r.command.at_standstill


def test_first_cycle_is_jerk_limited(filt):
    s = CommandState.at_rest(READY_POSE)
    target = READY_POSE.copy()
    target[0] += 0.5
    r = filt.step(s, target)
    # at 100 Hz one jerk-limited cycle (500 rad/s^3 * 10 ms = 5 rad/s^2) exceeds A = 3 rad/s^2
    assert r.command.ddq[0] == pytest.approx(3.0)
    assert r.command.dq[0] == pytest.approx(0.03)
    assert r.command.q[0] == pytest.approx(READY_POSE[0] + 0.0003)
    assert Limit.ACCELERATION in r.hits
    np.testing.assert_array_equal(r.command.q[1:], READY_POSE[1:])


def test_first_cycle_acceleration_at_1khz():
    f = SafetyFilter(SafetyConfig(cycle_period=0.001))
    s = CommandState.at_rest(READY_POSE)
    target = READY_POSE + np.array([0.3, 0, 0, 0, 0, 0, 0])
    r = f.step(s, target)
    assert r.command.ddq[0] == pytest.approx(500.0 * 0.001)  # jerk limit x period
    assert r.command.dq[0] == pytest.approx(0.5 * 0.001)
    assert r.command.q[0] == pytest.approx(READY_POSE[0] + 0.5 * 0.001**2)


def test_velocity_saturates_exactly_at_limit(filt):
    s = CommandState.at_rest(READY_POSE)
    target = READY_POSE.copy()
    target[6] = 2.6  # far away, inside the range
    states = run(filt, s, target, 150)
    V = filt.config.velocity_limit[6]
    peak = max(abs(st.dq[6]) for st in states)
    assert peak <= V + 1e-12
    assert peak == pytest.approx(V, rel=1e-6)


def test_reaches_target_without_overshoot(filt):
    s = CommandState.at_rest(READY_POSE)
    target = READY_POSE + np.array([0.2, -0.1, 0.1, 0.1, -0.2, 0.1, 0.2])
    states = run(filt, s, target, 300)
    q = np.array([st.q for st in states])
    step = target - READY_POSE
    assert np.all((q - READY_POSE) * np.sign(step) <= np.abs(step) + 1e-6)  # never beyond the target
    np.testing.assert_allclose(states[-1].q, target, atol=1e-5)
    assert np.all(np.abs(states[-1].dq) < 1e-4)


def test_target_beyond_joint_limit_is_clamped_and_never_exceeded(filt):
    s = CommandState.at_rest(READY_POSE)
    target = READY_POSE.copy()
    target[6] = 10.0
    r = filt.step(s, target)
    assert Limit.POSITION in r.hits
    states = run(filt, s, target, 500)
    qmax = filt.config.limits.q_max[6]
    assert max(st.q[6] for st in states) <= qmax
    assert states[-1].q[6] == pytest.approx(qmax, abs=2e-3)  # stops within the braking slack


@pytest.mark.parametrize("bad", [
    np.full(7, np.nan), np.r_[READY_POSE[:6], np.inf], READY_POSE[:6], np.r_[READY_POSE, 0.0],
    "garbage", None, [[1, 2], [3, 4]], np.array([1e308] * 6 + [np.nan]),
])
def test_invalid_target_holds_still(filt, bad):
    s = CommandState.at_rest(READY_POSE)
    r = filt.step(s, bad)
    expected = Limit.HOLD if bad is None else Limit.INVALID_INPUT
    assert expected in r.hits
    np.testing.assert_array_equal(r.command.q, READY_POSE)
    assert r.command.at_standstill


def test_invalid_target_while_moving_decelerates_within_limits(filt):
    s = CommandState.at_rest(READY_POSE)
    target = READY_POSE.copy()
    target[0] += 1.0
    s = run(filt, s, target, 60)[-1]
    assert abs(s.dq[0]) > 0.5
    bound = filt.config.stopping_time_bound(s.dq, s.ddq)
    states = run(filt, s, np.full(7, np.nan), int(np.ceil(bound / 0.01)))
    assert states[-1].at_standstill
    assert np.all([np.all(np.sign(st.dq[0]) >= 0) for st in states])  # no reversal while braking


def test_workspace_target_outside_box_is_refused(filt):
    s = CommandState.at_rest(READY_POSE)
    target = READY_POSE.copy()
    target[1] = 1.4  # leans far forward and down: TCP below the table plane
    r = filt.step(s, target)
    assert Limit.WORKSPACE in r.hits
    assert r.command.at_standstill


def test_workspace_box_is_never_left_when_target_path_leaves_it():
    # a box whose floor is just under the ready pose: pushing down must stop at the floor
    cfg = SafetyConfig(cycle_period=0.01, workspace_min=(0.1, -0.6, 0.40), workspace_max=(0.9, 0.6, 1.0))
    f = SafetyFilter(cfg)
    s = CommandState.at_rest(READY_POSE)
    hits = Limit.NONE
    for k in range(300):  # target drifts downwards continuously, later ones are outside the box
        target = READY_POSE + np.array([0, 0.004 * k, 0, -0.002 * k, 0, 0, 0])
        r = f.step(s, target)
        assert check_command(cfg, s, r.command) == []
        hits |= r.hits
        s = r.command
    assert Limit.WORKSPACE in hits
    assert f.in_box(s.q)


def test_gripper_clamped_and_nan_keeps_previous(filt):
    s = CommandState.at_rest(READY_POSE, gripper=0.05)
    r = filt.step(s, READY_POSE, 0.2)
    assert r.command.gripper == 0.08 and Limit.GRIPPER in r.hits
    r = filt.step(s, READY_POSE, float("nan"))
    assert r.command.gripper == 0.05 and Limit.GRIPPER in r.hits
    r = filt.step(s, READY_POSE, None)
    assert r.command.gripper == 0.05 and r.hits == Limit.NONE
    r = filt.step(s, READY_POSE, 0.0805)  # clamped, but too little to report
    assert r.command.gripper == 0.08 and r.hits == Limit.NONE
    r = filt.step(s, READY_POSE, -0.002)
    assert r.command.gripper == 0.0 and Limit.GRIPPER in r.hits


def test_start_outside_joint_range_can_only_move_back_in(filt):
    q = READY_POSE.copy()
    q[0] = filt.config.limits.q_max[0] + 0.02  # e.g. enabled where the margin is violated
    s = CommandState.at_rest(q)
    out = READY_POSE.copy()
    out[0] = 5.0
    states = [filt.step(s, out).command]
    assert states[0].q[0] <= q[0]
    inside = q.copy()
    inside[0] = 0.0
    for _ in range(200):
        s = filt.step(s, inside).command
        assert s.q[0] <= q[0]
    assert s.q[0] < filt.config.limits.q_max[0]


def test_previous_state_must_be_finite(filt):
    bad = CommandState(np.full(7, np.nan), np.zeros(7), np.zeros(7))
    with pytest.raises(ValueError, match="previous command"):
        filt.step(bad, READY_POSE)


def test_limit_names():
    assert (Limit.VELOCITY | Limit.JERK).names() == ["velocity", "jerk"]
    assert Limit.NONE.names() == []


def test_check_command_detects_each_violation(filt):
    cfg = filt.config
    s = CommandState.at_rest(READY_POSE)
    jump = CommandState(READY_POSE + 0.2, np.zeros(7), np.zeros(7))
    assert {"velocity", "acceleration", "jerk", "step"} <= set(check_command(cfg, s, jump))
    out = CommandState(np.r_[READY_POSE[:6], 9.0], np.zeros(7), np.zeros(7))
    assert "position" in check_command(cfg, CommandState.at_rest(out.q), out)


def test_velocity_feed_forward_removes_the_lag_of_a_moving_target(filt):
    def lag(use_ff):
        s = CommandState.at_rest(READY_POSE)
        errs = []
        for k in range(300):
            t = k * 0.01
            target = READY_POSE + np.r_[0.2 * np.sin(t), np.zeros(6)]
            v = np.r_[0.2 * np.cos(t), np.zeros(6)] if use_ff else None
            r = filt.step(s, target, target_velocity=v)
            assert check_command(filt.config, s, r.command) == []
            s = r.command
            errs.append(abs(s.q[0] - target[0]))
        return max(errs[100:])

    assert lag(True) < 0.1 * lag(False)
    assert lag(True) < 2e-3


def test_velocity_feed_forward_is_ignored_when_invalid_and_never_pushes_past_a_limit(filt):
    s = CommandState.at_rest(READY_POSE)
    for bad in (np.full(7, np.nan), np.ones(3), "x"):
        r = filt.step(s, READY_POSE, target_velocity=bad)
        assert r.command.at_standstill
    target = READY_POSE.copy()
    target[6] = 9.0  # clamped to the limit; a huge outward feed-forward must not matter
    for _ in range(400):
        r = filt.step(s, target, target_velocity=np.full(7, 1e6))
        assert check_command(filt.config, s, r.command) == []
        s = r.command
    assert s.q[6] <= filt.config.limits.q_max[6]
