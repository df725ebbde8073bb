"""Property tests: whatever the targets, every command stays inside every limit, and a hold always
comes to rest within the bound computed from the limits. The configurations draw every safety limit
SafetyConfig declares from its declaration (its default or its fuzz range), as scripts/fuzz_safety.py does."""

import math

import numpy as np
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from mail_policy_node.control.limits import BudgetConfig, fr3_limits
from mail_policy_node.control.safety import CommandState, SafetyConfig, SafetyFilter, check_command
from mail_policy_node.control.safety_limits import declared_limits, limit_of

from .conftest import READY_POSE

finite = st.floats(-4.0, 4.0, allow_nan=False)
garbage_value = st.one_of(finite, st.just(math.nan), st.just(math.inf), st.just(-math.inf),
                          st.floats(-1e300, 1e300, allow_nan=False))


@st.composite
def targets(draw):
    kind = draw(st.sampled_from(["near", "near", "anywhere", "garbage", "wrong_dim", "none", "jump"]))
    if kind == "near":
        return READY_POSE + np.array(draw(st.lists(st.floats(-0.6, 0.6), min_size=7, max_size=7)))
    if kind == "anywhere":
        return np.array(draw(st.lists(finite, min_size=7, max_size=7)))
    if kind == "garbage":
        return np.array(draw(st.lists(garbage_value, min_size=7, max_size=7)))
    if kind == "wrong_dim":
        n = draw(st.integers(0, 12).filter(lambda n: n != 7))
        return np.array(draw(st.lists(finite, min_size=n, max_size=n)))
    if kind == "jump":
        return READY_POSE + draw(st.sampled_from([-1.0, 1.0])) * np.array([1.5, 1.0, 1.5, 1.0, 1.5, 1.5, 2.0])
    return None


def declared(spec):
    """A declared safety limit (control/safety_limits.py): its default, or a value in its fuzz range."""
    lo, hi = spec.fuzz_range()
    drawn = st.floats(lo, hi) if spec.size is None else st.tuples(*(st.floats(a, b) for a, b in zip(lo, hi)))
    return st.one_of(st.just(spec.default), drawn)


@st.composite
def configs(draw):
    period = draw(st.sampled_from([0.001, 0.002, 0.005, 0.01, 0.02]))
    lim = fr3_limits(
        position_range=draw(st.sampled_from(["rectangular", "full"])),
        position_margin=draw(declared(limit_of(BudgetConfig, "position_margin"))),
        velocity_scale=draw(st.floats(0.05, 1.0)),
        acceleration_scale=draw(st.floats(0.05, 1.0)),
        jerk_scale=draw(st.floats(0.01, 1.0)),
    )
    values = {spec.field: draw(declared(spec)) for spec in declared_limits(SafetyConfig)}
    try:
        return SafetyConfig(cycle_period=period, limits=lim, **values)
    except ValueError:  # a relation between limits (an empty box or gripper range)
        reject()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), plan=st.lists(st.tuples(targets(), st.integers(1, 40), garbage_value,
                                               st.one_of(st.none(), targets())), min_size=1, max_size=12))
def test_commands_never_exceed_limits_and_hold_stops_in_time(cfg, plan):
    f = SafetyFilter(cfg)
    s = CommandState.at_rest(READY_POSE)
    for target, cycles, grip, velocity in plan:
        for _ in range(cycles):
            r = f.step(s, target, grip, target_velocity=velocity)
            assert check_command(cfg, s, r.command) == [], (target, s)
            s = r.command
    bound = cfg.stopping_time_bound(s.dq, s.ddq)
    n = int(math.ceil(bound / cfg.cycle_period)) + 1
    for _ in range(n):
        r = f.step(s, None)
        assert check_command(cfg, s, r.command) == []
        s = r.command
    assert s.at_standstill, (bound, s.dq, s.ddq)


@settings(max_examples=30, deadline=None)
@given(period=st.sampled_from([0.001, 0.01]), seed=st.integers(0, 2**32 - 1))
def test_random_walk_targets_stay_inside_a_tight_workspace(period, seed):
    # a box tight around the ready pose so the workspace check is exercised constantly
    cfg = SafetyConfig(cycle_period=period, workspace_min=(0.2, -0.15, 0.35), workspace_max=(0.45, 0.15, 0.65),
                       workspace_margin=0.01)
    f = SafetyFilter(cfg)
    rng = np.random.default_rng(seed)
    s = CommandState.at_rest(READY_POSE)
    target = READY_POSE.copy()
    for _ in range(int(0.6 / period) if period < 0.005 else 300):
        target = target + rng.normal(0.0, 0.05, 7)
        r = f.step(s, target)
        assert check_command(cfg, s, r.command) == []
        s = r.command
