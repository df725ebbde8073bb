"""Every node's parameter table (mail_policy_node.parameters), without a ROS graph: each parameter is
described, its range holds its default and every profile's value, and the ranges agree with the checks
of the core they configure (a value just outside a range is refused by the core too, or the test says
why the range is narrower)."""

import dataclasses

import pytest

from mail_policy_node.parameters import ROS_NODE_PARAMETERS, Parameter, default_of


def tables() -> dict:
    """node module -> its table (the bag player's and recorder's live in their node modules)."""
    from mail_policy_node.control.params import CONTROLLER_PARAMETERS
    from mail_policy_node.data.cameras import CAMERA_PARAMETERS
    from mail_policy_node.nodes.bag_player_node import BAG_PLAYER_PARAMETERS
    from mail_policy_node.nodes.chunk_recorder_node import CHUNK_RECORDER_PARAMETERS
    from mail_policy_node.runtime import POLICY_PARAMETERS
    from mail_policy_node.sim.franky import SIM_WORLD_PARAMETERS

    nodes = "mail_policy_node.nodes."
    return {nodes + "franka_controller_node": CONTROLLER_PARAMETERS, nodes + "policy_node": POLICY_PARAMETERS,
            nodes + "camera_node": CAMERA_PARAMETERS, nodes + "sim_world_node": SIM_WORLD_PARAMETERS,
            nodes + "bag_player_node": BAG_PLAYER_PARAMETERS, nodes + "chunk_recorder_node": CHUNK_RECORDER_PARAMETERS}


def by_name(table) -> dict:
    return {p.name: p for p in table}


@pytest.mark.parametrize("module", sorted(tables()))
def test_every_parameter_is_described_once_with_its_default_inside_what_it_takes(module):
    table = tables()[module]
    names = [p.name for p in table]
    assert len(names) == len(set(names)), f"duplicate names in {module}"
    for p in table:
        assert len(p.description.strip()) >= 10, p
        if p.low is not None:
            assert p.low <= p.default <= p.high, p
            assert isinstance(p.default, (int, float)) and not isinstance(p.default, bool), p
        if p.choices:
            assert p.default in p.choices and all(c in p.full_description() for c in p.choices if c), p
        p.check(p.default)


def test_only_the_policys_checkpoint_and_task_change_at_run_time():
    """A hot swap and a multi-task checkpoint's task (`ros2 param set`); no safety limit, no robot address."""
    writable = {(m, p.name) for m, table in tables().items() for p in table if not p.read_only}
    assert writable == {("mail_policy_node.nodes.policy_node", "checkpoint"),
                        ("mail_policy_node.nodes.policy_node", "task")}


@pytest.mark.parametrize("profile_name", ["real_robot", "sim", "replay"])
def test_every_profile_value_fits_its_nodes_table(profile_name):
    """Names, types (a float parameter's YAML value is written 1.0, not 1: rclpy refuses an int for a
    double) and ranges of the profile's YAML values and the launch graph's own parameters."""
    from mail_bringup.graph import profile, yaml_sections

    prof = profile(profile_name)
    sections = yaml_sections(prof.params_file)
    for node in prof.nodes:
        table = by_name(tables()[node.module] + ROS_NODE_PARAMETERS)
        for name, value in {**sections.get(node.name, {}), **node.launch_parameters()}.items():
            assert name in table, f"{profile_name}: {node.name} has no parameter {name!r}"
            spec = table[name]
            assert type(value) is type(spec.default), f"{node.name}.{name}: {value!r} vs default {spec.default!r}"
            spec.check(value)


def just_outside(p: Parameter) -> tuple:
    """One step beyond each end: 1 for an int, 0.1 % of the bound (0.001 at 0) for a float."""
    if p.is_integer:
        return p.low - 1, p.high + 1
    return p.low - (1e-3 * abs(p.low) or 1e-3), p.high + (1e-3 * abs(p.high) or 1e-3)


def accepted(core, name, value) -> bool:
    try:
        core({name: value})
    except ValueError:
        return False
    return True


# Range ends the core does not refuse a step beyond, and why the range stops there. None is a safety
# limit: their range is their declaration's, which the core checks (control/safety_limits.py).
CONTROLLER_NARROWER = {
    ("status_rate_hz", "low"): "no core check: the period of the node's status timer",
    ("status_rate_hz", "high"): "no core check: a status more often than 100 Hz only loads the graph",
    ("joint_state_rate_hz", "low"): "no core check: the node publishes every round(control / joint rate) cycles",
    ("joint_state_rate_hz", "high"): "no core check: at most one joint state per control cycle anyway",
    ("crossfade_duration", "low"): "the core's bound is open, (0, 5] s",
    ("gripper_speed", "low"): "the core's bound is open, (0, 0.1] m/s",
    ("gripper_close_below", "low"): "the core's bound is open, > 0 m",
    ("gripper_close_below", "high"): "the core needs close_below + 0.01 m < 0.08 m; the range keeps 5 mm more",
}


def test_controller_ranges_lie_inside_what_controller_setup_accepts():
    """Each range's ends build the controller's configuration (the range is not looser than the core),
    and a value a step beyond each end is refused by the core too, except the ends listed with a reason
    (the core has no check, or an open bound a ROS range cannot express)."""
    from mail_policy_node.control.params import CONTROLLER_PARAMETERS, controller_setup

    narrower = set()
    for p in CONTROLLER_PARAMETERS:
        if p.low is None:
            continue
        assert accepted(controller_setup, p.name, p.low) and accepted(controller_setup, p.name, p.high), p
        for end, beyond in zip(("low", "high"), just_outside(p)):
            if accepted(controller_setup, p.name, beyond):
                narrower.add((p.name, end))
    listed = set(CONTROLLER_NARROWER)
    assert narrower == listed, (f"narrower than the core without a reason: {sorted(narrower - listed)}; "
                                f"listed, but the core refuses beyond them: {sorted(listed - narrower)}")


def test_controller_choices_are_the_cores():
    from mail_policy_node.control.params import CONTROLLER_PARAMETERS, controller_setup

    for p in CONTROLLER_PARAMETERS:
        if p.choices:
            assert all(accepted(controller_setup, p.name, c) for c in p.choices), p
            assert not accepted(controller_setup, p.name, "bogus"), p


def policy_core(values: dict) -> None:
    """What the policy node builds from its parameters: RuntimeConfig at start, the synchroniser when a
    checkpoint loads, EngineConfig at start."""
    from mail_policy_node.data.sync import ObservationSynchronizer
    from mail_policy_node.engine.engine import EngineConfig
    from mail_policy_node.parameters import defaults
    from mail_policy_node.runtime import POLICY_PARAMETERS, RuntimeConfig

    p = {**defaults(POLICY_PARAMETERS), **values}
    RuntimeConfig(rate_hz=p["rate_hz"], execution_horizon=p["execution_horizon"], sync_tolerance=p["sync_tolerance"],
                  max_age=p["max_age"], failed_chunks=p["failed_chunks"])
    ObservationSynchronizer(("camera", "joint_state"), p["sync_tolerance"], p["max_age"])
    EngineConfig(history=p["history_mode"] or None, sampler=p["sampler"] or None, device=p["device"],
                 real_time_chunking=p["real_time_chunking"])


POLICY_NARROWER = {
    ("execution_horizon", "high"): "chunks hold at most the controller's max_horizon (64) actions: a longer gap "
                                   "between chunks leaves the arm without one",
    ("sync_tolerance", "low"): "the synchroniser's bound is open (> 0)",
    ("sync_tolerance", "high"): "no core bound: a set spread over more than 1 s is not one observation",
    ("max_age", "low"): "the synchroniser's bound is open (> 0)",
    ("max_age", "high"): "the synchroniser keeps 2 s of messages (max_age must stay below): the range stops at 1 s",
    ("cpu_threads", "low"): "the node leaves torch's own thread count below 1; the range says so with 0",
    ("cpu_threads", "high"): "torch takes any count; more than 256 threads is a typo",
    ("failed_chunks", "high"): "no core bound: 100 refused chunks in a row is seconds of a policy that cannot act",
}


def test_policy_ranges_and_choices_lie_inside_what_the_runtime_accepts():
    from mail_policy_node.runtime import POLICY_PARAMETERS

    narrower = set()
    for p in POLICY_PARAMETERS:
        if p.choices:
            assert all(accepted(policy_core, p.name, c) for c in p.choices), p
            assert not accepted(policy_core, p.name, "bogus"), p
        if p.low is None:
            continue
        assert accepted(policy_core, p.name, p.low) and accepted(policy_core, p.name, p.high), p
        for end, beyond in zip(("low", "high"), just_outside(p)):
            if accepted(policy_core, p.name, beyond):
                narrower.add((p.name, end))
    assert narrower == set(POLICY_NARROWER), sorted(narrower ^ set(POLICY_NARROWER))


def test_the_sim_worlds_tasks_and_the_cameras_sources_are_the_cores():
    from mail_policy_node.data.cameras import CAMERA_PARAMETERS
    from mail_policy_node.sim.franky import SIM_WORLD_PARAMETERS
    from mail_policy_node.sim.tasks import TASKS

    assert by_name(SIM_WORLD_PARAMETERS)["task"].choices == tuple(TASKS)
    assert by_name(CAMERA_PARAMETERS)["source"].choices == ("realsense", "sim")  # camera_node.make_source


def test_a_table_entry_must_be_consistent():
    with pytest.raises(ValueError, match="outside"):
        Parameter("rate", 5.0, "a rate [Hz]", 0.0, 3.0)
    with pytest.raises(ValueError, match="two ints"):
        Parameter("count", 5, "a count", 0.0, 10.0)
    with pytest.raises(ValueError, match="only int and float"):
        Parameter("flag", True, "a flag", 0, 1)
    with pytest.raises(ValueError, match="not one of"):
        Parameter("mode", "c", "a mode", choices=("a", "b"))
    with pytest.raises(ValueError, match="description"):
        Parameter("x", 1.0, " ")


def test_check_names_the_parameter_and_what_it_takes():
    with pytest.raises(ValueError, match=r"rate must be in \[0.0, 3.0\], got 4.0"):
        Parameter("rate", 1.0, "a rate [Hz]", 0.0, 3.0).check(4.0)
    with pytest.raises(ValueError, match=r"mode must be one of: '', a, b; got 'c'"):
        Parameter("mode", "", "a mode", choices=("", "a", "b")).check("c")


def test_default_of_takes_a_dataclass_field_or_an_argument():
    @dataclasses.dataclass
    class Config:
        rate: float = 2.0
        names: list = dataclasses.field(default_factory=list)

    def start(port: int = 7):
        return port

    assert default_of(Config, "rate") == 2.0 and default_of(start, "port") == 7
    with pytest.raises(ValueError, match="no plain default"):
        default_of(Config, "names")
