"""Every profile's controller parameters build the node's configuration (control.params.controller_setup),
and the caps franky is set to stay inside the FR3's own limits at every runbook stage."""

import numpy as np
import pytest
import yaml

from mail_bringup.graph import CONFIG_DIR
from mail_policy_node.control.limits import FR3_HW_DDDQ_MAX, FR3_HW_DDQ_MAX, FR3_HW_DQ_MAX
from mail_policy_node.control.params import controller_setup


def controller_params(profile: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{profile}.yaml").read_text())["franka_controller"]["ros__parameters"]


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


def test_real_robot_policy_replans_inside_the_controller_watchdog():
    """real_robot.yaml ran the paper's J = 5 (a chunk every 0.5 s at 10 Hz) against a 0.3 s watchdog: the
    arm held at every chunk gap. The policy's execution horizon x dt must stay under the timeout."""
    doc = yaml.safe_load((CONFIG_DIR / "real_robot.yaml").read_text())
    policy = doc["policy_node"]["ros__parameters"]
    horizon = policy["execution_horizon"]
    assert horizon > 0, "0 means the checkpoint's J (5 for the shipped policies)"
    assert horizon / policy["rate_hz"] < controller_params("real_robot")["watchdog_timeout"]


def test_real_robot_defaults_start_in_dry_run_at_the_first_stage():
    p = controller_params("real_robot")
    assert p["dry_run"] is True and p["auto_enable"] is False and p["realtime"] is True
    assert p["relative_dynamics_factor"] == 0.1
