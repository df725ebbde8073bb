"""The profiles' node graph (what launch files and `mail-il up` share) and the process supervisor."""

import signal
import sys

import numpy as np
import pytest

from mail_bringup.graph import LAUNCH_ARGUMENTS, PROFILES, NodeSpec, Profile, launch_node_specs, parse_overrides, profile
from tests.rosutil import wait_for


def test_overrides_parse_with_yaml_types():
    o = parse_overrides(["policy_node.rate_hz:=10", "franka_controller.dry_run:=true", "policy_node.checkpoint:=a/b"])
    assert o == {"policy_node": {"rate_hz": 10, "checkpoint": "a/b"}, "franka_controller": {"dry_run": True}}
    with pytest.raises(ValueError, match="node.param:=value"):
        parse_overrides(["checkpoint=3"])


def test_profiles_apply_overrides_and_refuse_unknown_nodes():
    p = profile("sim", {"policy_node": {"rate_hz": 5.0}})
    assert p.params_file.is_file()
    assert p.node("policy_node").parameters["rate_hz"] == 5.0
    assert p.params_file.name == "sim.yaml"
    with pytest.raises(ValueError, match="not in profile"):
        profile("sim", {"no_such_node": {}})
    with pytest.raises(ValueError, match="unknown profile"):
        profile("moon")


def test_controller_is_never_respawned_and_cameras_are():
    for name in PROFILES:
        p = profile(name)
        for n in p.nodes:
            if n.executable == "franka_controller_node":
                assert not n.respawn, "a crashed controller must not silently come back and move the arm"


def test_launch_translation_routes_arguments_to_nodes():
    p = profile("real_robot")
    specs = launch_node_specs(p, {"robot_ip": "172.16.0.2", "checkpoint": "pick_v3"})
    by_name = {s["name"]: s for s in specs}
    assert set(by_name) == {n.name for n in p.nodes}
    assert by_name["franka_controller"]["parameters"][1]["robot_ip"] == "172.16.0.2"
    assert by_name["policy_node"]["parameters"][1]["checkpoint"] == "pick_v3"
    assert by_name["policy_node"]["parameters"][0].endswith("real_robot.yaml")
    with pytest.raises(ValueError, match="no launch argument"):
        launch_node_specs(p, {"bogus": 1})
    for prof_name, args in LAUNCH_ARGUMENTS.items():
        names = {n.name for n in profile(prof_name).nodes}
        assert {node for node, _ in args.values()} <= names


@pytest.mark.ros
def test_supervisor_reports_crash_and_respawns(tmp_path, capsys):
    from mail_bringup.up import Supervisor
    from mail_policy_node.data.cameras import record_realsense_file
    from tests.rosutil import private_domain

    rec = tmp_path / "c.db3"
    record_realsense_file(str(rec), [np.full((32, 32, 3), k, np.uint8) for k in range(5)])
    cam = NodeSpec("camera_test", "camera_node", "mail_policy_node.nodes.camera_node",
                   {"camera_name": "test", "source": "realsense", "playback_file": str(rec)}, respawn=True)
    # SIGKILL below: keep the killed participant out of the other tests' graph
    with private_domain():
        sup = Supervisor(Profile("test", tmp_path / "none.yaml", (cam,)), echo=False)
        sup.start()
        try:
            wait_for(lambda: sup.alive("camera_test"), 10, what="node start")
            sup.kill("camera_test", signal.SIGKILL)
            wait_for(lambda: (sup.poll(), sup.nodes["camera_test"].restarts == 1)[1], 15, what="crash noticed")
            wait_for(lambda: (sup.poll(), sup.alive("camera_test"))[1], 15, what="respawn")
        finally:
            sup.stop()
    out = capsys.readouterr().out
    assert "camera_test exited with code -9" in out and "respawning camera_test" in out
    assert sup.failed is None


def test_every_profile_node_exists_and_its_yaml_section_matches_its_parameters():
    import importlib

    import yaml

    for name in PROFILES:
        prof = profile(name)
        sections = yaml.safe_load(prof.params_file.read_text())
        assert set(sections) == {n.name for n in prof.nodes}, f"{prof.params_file.name} sections vs nodes"
        for n in prof.nodes:
            module = importlib.import_module(n.module)
            assert callable(module.main), n.module
            assert "ros__parameters" in sections[n.name]
