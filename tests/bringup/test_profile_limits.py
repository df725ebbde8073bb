"""Every profile's controller parameters pass the start-up check the node makes: franky's limits at
the profile's relative dynamics factor are never tighter than the safety filter's."""

import pytest
import yaml

from mail_bringup.graph import CONFIG_DIR
from mail_policy_node.control.franky_arm import FrankyArmConfig, check_compatible
from mail_policy_node.control.limits import fr3_limits
from mail_policy_node.control.safety import SafetyConfig


@pytest.mark.parametrize("profile", ["real_robot", "sim"])
def test_profile_limits_are_compatible_with_franky(profile):
    p = yaml.safe_load((CONFIG_DIR / f"{profile}.yaml").read_text())["franka_controller"]["ros__parameters"]
    safety = SafetyConfig(cycle_period=1.0 / p["control_rate_hz"],
                          limits=fr3_limits(position_margin=p["position_margin"], velocity_scale=p["velocity_scale"],
                                            acceleration_scale=p["acceleration_scale"], jerk_scale=p["jerk_scale"]))
    arm = FrankyArmConfig(host=p["robot_ip"], relative_dynamics_factor=p["relative_dynamics_factor"])
    assert check_compatible(arm, safety) == []
