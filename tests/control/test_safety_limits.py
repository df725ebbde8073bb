"""One declaration per safety limit (control/safety_limits.py): the configuration's check, the node's
parameter table, the fuzzer's ranges and docs/safety_limits.md all read it, and a new declaration
reaches every one of them without another edit."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mail_policy_node.control import params
from mail_policy_node.control.controller import ControllerConfig
from mail_policy_node.control.safety import SafetyConfig
from mail_policy_node.control.safety_limits import declared_limits, limit_of, safety_limit
from mail_policy_node.control.watchdog import WatchdogConfig
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "safety_limits.md"


def all_limits():
    return [spec for cls in params.limit_configs() for spec in declared_limits(cls)]


def beyond(spec):
    """A value just above the declared range (a vector: one element)."""
    step = 1e-3 * max(abs(spec.high), 1.0)
    if spec.size is None:
        return spec.high + step
    return (spec.high + step,) + tuple(spec.default[1:])


def test_the_docs_table_is_current():
    assert DOC.read_text() == params.safety_limits_markdown(), \
        "docs/safety_limits.md is stale: run python scripts/safety_limits_doc.py"


def test_each_node_limit_is_a_parameter_with_its_declarations_default_range_and_unit():
    table = {p.name: p for p in params.CONTROLLER_PARAMETERS}
    node_limits = [spec for spec in all_limits() if spec.name is not None]
    assert {"max_tcp_speed", "max_joint_step", "position_margin", "max_tracking_error", "workspace_min",
            "watchdog_timeout"} <= {spec.name for spec in node_limits}
    for spec in node_limits:
        p = table[spec.name]
        assert p.default == (list(spec.default) if spec.size else spec.default), spec.name
        assert (p.low, p.high) == ((spec.low, spec.high) if spec.size is None else (None, None)), spec.name
        assert p.read_only and spec.description in p.description and (f"[{spec.unit}]" in p.description) == bool(
            spec.unit), spec.name
    # and the defaults are the fields' own: a configuration built from the node's defaults is the default one
    setup = params.controller_setup({})
    for spec in node_limits:
        owner = {"SafetyConfig": setup.controller.safety, "ControllerConfig": setup.controller,
                 "WatchdogConfig": setup.controller.watchdog}.get(spec.owner)
        if owner is not None:
            assert getattr(owner, spec.field) == spec.default, spec.label


@pytest.mark.parametrize("spec", all_limits(), ids=lambda s: f"{s.owner}.{s.field}")
def test_a_value_outside_a_declared_limit_is_refused_naming_it(spec):
    cls = {c.__name__: c for c in params.limit_configs()}[spec.owner]
    with pytest.raises(ValueError, match=r"must be .*in \[") as e:
        cls(**{spec.field: beyond(spec)})
    assert str(e.value).startswith(spec.label + " must be")
    if spec.size is None:
        for wrong in (True, "0.1", float("nan")):
            with pytest.raises(ValueError, match="must be in"):
                cls(**{spec.field: wrong})


def test_errors_name_the_ros_parameter_and_the_field():
    with pytest.raises(ValueError, match=r"^watchdog_timeout \(WatchdogConfig.timeout\) must be in \[0.01, 10.0\] s, "
                                         r"got 0.0$"):
        WatchdogConfig(timeout=0.0)
    with pytest.raises(ValueError, match=r"^max_tcp_speed must be in \[0.01, 3.0\] m/s, got 5.0$"):
        params.controller_setup({"max_tcp_speed": 5.0})
    with pytest.raises(ValueError, match=r"^SafetyConfig.workspace_margin must be in \[0.0, 0.5\] m"):
        SafetyConfig(workspace_margin=-0.1)
    with pytest.raises(ValueError, match=r"^workspace_min must be 3 numbers, each in \[-2.0, 2.0\] m"):
        SafetyConfig(workspace_min=(0.1, 0.2))
    assert ControllerConfig(max_tracking_error=0.0).max_tracking_error == 0.0  # 0 disables: inside the range


def test_a_declaration_must_be_consistent():
    with pytest.raises(ValueError, match="outside"):
        safety_limit(5.0, "m/s", 0.0, 3.0, "a speed")
    with pytest.raises(ValueError, match="fuzz range"):
        safety_limit(1.0, "m/s", 0.0, 3.0, "a speed", fuzz=(0.5, 4.0))
    with pytest.raises(ValueError, match="low below high"):
        safety_limit(1.0, "m/s", 3.0, 0.0, "a speed")
    with pytest.raises(ValueError, match="description"):
        safety_limit(1.0, "m/s", 0.0, 3.0, " ")


def test_the_fuzzer_draws_every_limit_of_the_filters_configurations():
    fuzz = load_script("scripts/fuzz_safety.py")
    declared = {f"{spec.owner}.{spec.field}" for cls in params.fuzzed_configs() for spec in declared_limits(cls)}
    assert set(fuzz.fuzzed_limits()) == declared
    rng = np.random.default_rng(0)
    drawn = [fuzz.random_config(rng) for _ in range(60)]
    for spec in declared_limits(SafetyConfig):
        values = [getattr(cfg, spec.field) for cfg in drawn]
        lo, hi = (np.asarray(x, float) for x in spec.fuzz_range())
        assert any(v == spec.default for v in values) and any(v != spec.default for v in values), spec.field
        assert all(np.all(np.asarray(v) >= lo) and np.all(np.asarray(v) <= hi) for v in values
                   if v != spec.default), spec.field


def test_position_margin_has_one_home():
    import inspect

    from mail_policy_node.control.limits import BudgetConfig, dynamics_budget, fr3_limits

    margin = limit_of(BudgetConfig, "position_margin").default
    assert inspect.signature(fr3_limits).parameters["position_margin"].default == margin
    assert inspect.signature(dynamics_budget).parameters["position_margin"].default == margin
    with pytest.raises(ValueError, match=r"position_margin must be in \[0.0, 0.3\] rad"):
        fr3_limits(position_margin=0.4)


# ------------------------------------------------------------------ a new limit, added in one place
@dataclasses.dataclass(frozen=True)
class SafetyWithTcpAcceleration(SafetyConfig):
    """SafetyConfig with one more declared field, as a new limit would be added to it."""

    max_tcp_acceleration: float = safety_limit(5.0, "m/s^2", 0.1, 13.0, "Cartesian acceleration of the TCP",
                                               fuzz=(0.5, 13.0))


def test_a_new_limit_reaches_the_check_the_node_the_profiles_the_fuzzer_and_the_docs(monkeypatch):
    """Declaring the field is all it takes: the code paths below find it by its declaration (monkeypatch
    puts the extended SafetyConfig where they look it up, and takes it back after the test)."""
    fuzz = load_script("scripts/fuzz_safety.py")
    monkeypatch.setattr(params, "SafetyConfig", SafetyWithTcpAcceleration)
    monkeypatch.setattr(fuzz, "SafetyConfig", SafetyWithTcpAcceleration)
    # the configuration checks its bounds
    with pytest.raises(ValueError, match=r"^max_tcp_acceleration must be in \[0.1, 13.0\] m/s\^2, got 20.0$"):
        SafetyWithTcpAcceleration(max_tcp_acceleration=20.0)
    # the node declares it (default, range, unit and meaning), and hands its value to the filter's configuration
    (p,) = [p for p in params.controller_parameters() if p.name == "max_tcp_acceleration"]
    assert (p.default, p.low, p.high, p.read_only) == (5.0, 0.1, 13.0, True)
    assert p.description == "[m/s^2] Cartesian acceleration of the TCP"
    with pytest.raises(ValueError, match=r"max_tcp_acceleration must be in \[0.1, 13.0\], got 20.0"):
        p.check(20.0)  # what the node says when a YAML or -p value is outside (nodes.parameters.declare_table)
    assert params.controller_setup({}).controller.safety.max_tcp_acceleration == 5.0
    sim = load_profile("sim")
    assert params.controller_setup({**sim, "max_tcp_acceleration": 7.0}).controller.safety.max_tcp_acceleration == 7.0
    with pytest.raises(ValueError, match="max_tcp_acceleration must be in"):
        params.controller_setup({"max_tcp_acceleration": 20.0})
    # the fuzzer draws it from its fuzz range (its default half of the time)
    assert fuzz.fuzzed_limits()["SafetyWithTcpAcceleration.max_tcp_acceleration"] == (0.5, 13.0)
    rng = np.random.default_rng(1)
    drawn = [fuzz.random_config(rng).max_tcp_acceleration for _ in range(40)]
    assert 5.0 in drawn and all(0.5 <= v <= 13.0 for v in drawn) and len(set(drawn)) > 10
    # the docs table lists it, so the committed file is stale until regenerated
    row = "| `max_tcp_acceleration` | `SafetyWithTcpAcceleration.max_tcp_acceleration` | 5.0 | m/s^2 | [0.1, 13.0] |"
    assert row in params.safety_limits_markdown() and row not in DOC.read_text()
    assert DOC.read_text() != params.safety_limits_markdown()
    monkeypatch.undo()
    assert "max_tcp_acceleration" not in {p.name for p in params.controller_parameters()}
    assert DOC.read_text() == params.safety_limits_markdown()


def load_profile(name: str) -> dict:
    import yaml

    text = (ROOT / "mail_bringup" / "config" / f"{name}.yaml").read_text()
    return yaml.safe_load(text)["franka_controller"]["ros__parameters"]
