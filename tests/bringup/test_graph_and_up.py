"""The profiles' node graph (what launch files and `mail-il up` share) and the process supervisor."""

import signal
from pathlib import Path

import numpy as np
import pytest

from mail_bringup import graph
from mail_bringup.graph import (LAUNCH_ARGUMENTS, PROFILES, ConfigNotFound, NodeSpec, Profile, argument_defaults,
                                parse_arguments, parse_overrides, profile)
from tests.rosutil import wait_for

SOURCE = Path(graph.__file__).resolve().parent.parent  # the source package (the editable install's share)


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


def test_launch_arguments_route_to_nodes_with_the_yaml_types():
    overrides, settings = parse_arguments("real_robot", ["robot_ip:=172.16.0.9", "checkpoint:=123", "dry_run:=false",
                                                         "relative_dynamics_factor:=1", "namespace:=lab",
                                                         "policy_node.rate_hz:=5"])
    assert overrides == {"franka_controller": {"robot_ip": "172.16.0.9", "dry_run": False,
                                               "relative_dynamics_factor": 1.0},
                         "policy_node": {"checkpoint": "123", "rate_hz": 5}}  # a checkpoint named 123 stays a string
    assert settings == {"namespace": "lab"}
    with pytest.raises(ValueError, match="no argument 'bogus'"):
        parse_arguments("sim", ["bogus:=1"])
    with pytest.raises(ValueError, match="seed must be an integer"):
        parse_arguments("sim", ["seed:=three"])
    with pytest.raises(ValueError, match="log_level must be one of"):
        parse_arguments("sim", ["log_level:=loud"])
    # one argument, two parameters: franky-sim's address and the controller's
    assert parse_arguments("sim", ["robot_ip:=127.0.5.5"])[0] == {"franka_controller": {"robot_ip": "127.0.5.5"},
                                                                  "sim_world": {"hostname": "127.0.5.5"}}


def test_every_launch_argument_has_its_default_in_the_yaml():
    for name, args in LAUNCH_ARGUMENTS.items():
        prof = profile(name)
        defaults = argument_defaults(prof)  # raises if a target is missing or two targets disagree
        assert list(defaults) == [a.name for a in args]
        for a in args:
            assert {node for node, _ in a.targets} <= {n.name for n in prof.nodes}, a
            assert len(a.description) > 20, a
    assert argument_defaults(profile("real_robot"))["dry_run"] is True  # a first run never moves the arm


def test_relative_checkpoint_root_is_relative_to_the_share_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: nothing may depend on the current folder
    sim = profile("sim")
    root = Path(sim.node("policy_node").launch_parameters()["checkpoint_root"])
    assert root == SOURCE / "checkpoints" and (root / "reach_dma_small" / "config.json").is_file()
    assert argument_defaults(sim)["checkpoint_root"] == str(root)
    assert "checkpoint_root" not in profile("real_robot").node("policy_node").launch_parameters()  # absolute
    given = profile("sim", {"policy_node": {"checkpoint_root": "mine"}}).node("policy_node").launch_parameters()
    assert given["checkpoint_root"] == "mine"  # a command line's value is taken as given


def fake_share(prefix: Path, config: bool = True) -> Path:
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "mail_bringup").touch()
    share = prefix / "share" / "mail_bringup"
    share.mkdir()
    (share / "package.xml").write_text((SOURCE / "package.xml").read_text())
    if config:
        (share / "config").mkdir()
        for name in PROFILES:
            (share / "config" / f"{name}.yaml").write_text((SOURCE / "config" / f"{name}.yaml").read_text())
    return share


def test_share_directory_comes_from_the_ament_index(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "empty"))
    assert graph.share_dir() == SOURCE  # not indexed: the source package (editable install)
    share = fake_share(tmp_path / "plain")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'plain'}:{tmp_path / 'empty'}")
    assert graph.share_dir() == share and graph.CONFIG_DIR == share / "config"
    assert profile("sim").params_file == share / "config" / "sim.yaml"
    assert profile("sim").node("policy_node").launch_parameters()["checkpoint_root"] == str(share / "checkpoints")
    # a --symlink-install share: links into a package folder, read through them
    linked = tmp_path / "sym" / "share" / "mail_bringup"
    fake_share(tmp_path / "sym", config=False)
    (linked / "package.xml").unlink()
    (linked / "package.xml").symlink_to(SOURCE / "package.xml")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "sym"))
    assert graph.share_dir() == SOURCE


def test_a_missing_yaml_is_refused_never_code_defaults(tmp_path, monkeypatch):
    fake_share(tmp_path / "broken", config=False)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "broken"))
    with pytest.raises(ConfigNotFound, match="parameter file of profile 'sim' not found"):
        profile("sim")
    from mail_bringup.up import Supervisor, node_command

    with pytest.raises(ConfigNotFound, match="refusing to start"):
        Supervisor(Profile("sim", tmp_path / "gone.yaml", ()), env={})
    with pytest.raises(ConfigNotFound, match="refusing to start"):
        node_command(graph.POLICY, tmp_path / "gone.yaml")


def test_namespaced_nodes_get_their_yaml_sections(tmp_path):
    from mail_bringup.up import node_command

    sim = profile("sim")
    assert graph.params_file_in_namespace(sim.params_file, "") == sim.params_file
    copy = graph.params_file_in_namespace(sim.params_file, "/lab/")
    sections = graph.yaml_sections(copy)
    assert set(sections) == {f"/lab/{n.name}" for n in sim.nodes}
    assert sections["/lab/policy_node"] == graph.yaml_sections(sim.params_file)["policy_node"]
    copy.unlink()
    cmd = node_command(sim.node("policy_node"), sim.params_file, namespace="lab", log_level="warn")
    # the sim world's /clock followed in the namespace (graph.WORLD_CLOCK), as ros2 launch remaps it
    assert cmd[cmd.index("--ros-args"):cmd.index("--params-file")] == \
        ["--ros-args", "-r", "__node:=policy_node", "-r", "__ns:=/lab", "-r", "/clock:=clock", "--log-level", "warn"]
    assert f"checkpoint_root:=\"{SOURCE / 'checkpoints'}\"" in cmd


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
        sup = Supervisor(Profile("test", None, (cam,)), echo=False, respawn_delay=0.5)
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
