"""Every profile's controller parameters build the node's configuration (control.params.controller_setup),
the caps franky is set to stay inside the FR3's own limits at every runbook stage, and a profile repeats
a code default only where it says so. (A profile key the node does not declare fails
tests/foundation/test_parameter_tables.py.)"""

import re

import numpy as np
import pytest
import yaml

from mail_bringup.graph import CONFIG_DIR
from mail_policy_node.control.limits import FR3_HW_DDDQ_MAX, FR3_HW_DDQ_MAX, FR3_HW_DQ_MAX
from mail_policy_node.control.params import controller_defaults, controller_setup


def controller_params(profile: str) -> dict:
    """The controller's own parameters in the profile (not ROS's, e.g. the sim profile's use_sim_time)."""
    from mail_policy_node.parameters import without_ros_node_parameters

    return without_ros_node_parameters(
        yaml.safe_load((CONFIG_DIR / f"{profile}.yaml").read_text())["franka_controller"]["ros__parameters"])


@pytest.mark.parametrize("profile", ["real_robot", "sim"])
@pytest.mark.parametrize("factor", [0.1, 0.3, 0.6, 1.0])
def test_profile_caps_stay_inside_the_fr3_limits_at_every_stage(profile, factor):
    setup = controller_setup({**controller_params(profile), "relative_dynamics_factor": factor})
    caps, inner = setup.budget.caps, setup.controller.safety.limits
    assert np.all(caps.dq_max <= FR3_HW_DQ_MAX * factor) and np.all(caps.ddq_max <= FR3_HW_DDQ_MAX * factor)
    assert np.all(caps.dddq_max <= FR3_HW_DDDQ_MAX * factor)
    # the filter plans inside the caps, with the position feedback on top still inside them
    assert np.all(inner.dq_max + setup.budget.max_correction <= caps.dq_max + 1e-12)
    assert np.all(inner.ddq_max < caps.ddq_max) and np.all(inner.dddq_max < caps.dddq_max)


@pytest.mark.parametrize("profile", ["sim", "real_robot"])
def test_the_profiles_execute_chunks_as_the_evaluation_did(profile):
    """`mail-il eval` executes the checkpoint's whole chunks (its --exec-horizon default 0 = J); through the
    controller, replanning more often cost every chunked policy (shipped reach 83 % at J, 57 % at 2; with the
    real_robot profile's limits 83 % at J, 43 % replanning every tick, as that profile did). The watchdog
    expects each chunk one replanning period after the last."""
    import argparse

    from mail_policy_node.commands import eval as eval_cmd

    policy = yaml.safe_load((CONFIG_DIR / f"{profile}.yaml").read_text())["policy_node"]["ros__parameters"]
    parser = argparse.ArgumentParser()
    eval_cmd.add_arguments(parser)
    assert policy["execution_horizon"] == parser.get_default("exec_horizon") == 0, "0: the checkpoint's J"


def test_real_robot_defaults_start_in_dry_run_at_the_first_stage():
    p = controller_params("real_robot")
    assert p["dry_run"] is True and p["auto_enable"] is False and p["realtime"] is True
    assert p["relative_dynamics_factor"] == 0.1


PINNED = "(pinned)"
KEY_LINE = re.compile(r"^    (\w+):[^#]*(#.*)?$")


def controller_comments(profile: str) -> dict:
    """franka_controller key -> the comment on its line ("" without one), from the YAML's text."""
    comments, inside = {}, False
    for line in (CONFIG_DIR / f"{profile}.yaml").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            inside = line.startswith("franka_controller:")
        match = KEY_LINE.match(line) if inside else None
        if match:
            comments[match.group(1)] = match.group(2) or ""
    own = controller_params(profile)
    return {k: c for k, c in comments.items() if k in own}


@pytest.mark.parametrize("profile", ["real_robot", "sim"])
def test_a_profile_repeats_a_code_default_only_where_it_says_why(profile):
    """One home per default: a key whose value is the node's code default (control/params.py, the safety
    limits' declarations) is marked "(pinned)", which the section's header comment explains; a value
    marked so that is no longer the default means the default moved under the profile: decide."""
    values, comments, defaults = controller_params(profile), controller_comments(profile), controller_defaults()
    assert set(comments) == set(values), "the comment parser missed keys"
    repeats = {k for k, v in values.items() if v == defaults[k]}
    pinned = {k for k, c in comments.items() if PINNED in c}
    assert not repeats - pinned, (f"{profile}.yaml repeats the code default of {sorted(repeats - pinned)}: remove the "
                                  f"key, or mark it {PINNED} (see the section's header comment)")
    assert not pinned - repeats, (f"{profile}.yaml pins {sorted(pinned - repeats)}, no longer the code default: keep "
                                  f"the value without {PINNED}, or take the new default")
