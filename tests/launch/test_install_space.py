"""The colcon installs (plain and --symlink-install) from a user's point of view, without starting a
graph: the launch files show real defaults, the profiles' YAML files and the shipped checkpoints are
found from any folder, and a missing YAML stops `ros2 launch` and `mail-il up` before any node starts."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from mail_bringup.graph import LAUNCH_ARGUMENTS, NODE_SETTINGS, PROFILES, RELATIVE_TO_SHARE, as_text
from tests.launch import INSTALLS, install_env, ros2, share

KINDS = ("symlink", "plain")


def shown_arguments(text: str) -> dict[str, tuple[str, str]]:
    """`ros2 launch ... -s` output -> {argument: (description, default)}."""
    found = re.findall(r"^    '(\w+)':\n        (.+?)\n        \(default: '(.*?)'\)$", text, re.M | re.S)
    return {name: (description, default) for name, description, default in found}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("profile", PROFILES)
def test_show_arguments_gives_the_yaml_defaults(kind, profile, tmp_path):
    env = install_env(kind)
    out = ros2(env, "launch", "mail_bringup", f"{profile}.launch.py", "-s", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    shown = shown_arguments(out.stdout)
    expected = [a.name for a in LAUNCH_ARGUMENTS[profile]] + list(NODE_SETTINGS)
    assert list(shown) == expected, out.stdout
    installed = share(kind).resolve() if kind == "plain" else (share(kind) / "package.xml").resolve().parent
    sections = yaml.safe_load((installed / "config" / f"{profile}.yaml").read_text())
    for arg in LAUNCH_ARGUMENTS[profile]:
        node, param = arg.targets[0]
        value = sections[node]["ros__parameters"][param]
        if (node, param) in RELATIVE_TO_SHARE and not value.startswith("/"):
            value = str(installed / value)
        description, default = shown[arg.name]
        assert default == as_text(value), (arg.name, default, value)
        assert len(description) > 20 and node in description, (arg.name, description)
    assert shown["log_level"][1] == "info" and shown["namespace"][1] == ""


PROBE = """
import json, os, sys
from mail_bringup import graph
from mail_policy_node.checkpoint_root import resolve_checkpoint
prof = graph.profile(sys.argv[1])
root = prof.node("policy_node").launch_parameters()["checkpoint_root"]
print(json.dumps({"module": graph.__file__, "share": str(graph.share_dir()), "params": str(prof.params_file),
                  "root": root, "checkpoint": str(resolve_checkpoint(root, "reach_dma_small"))}))
"""


@pytest.mark.parametrize("kind", KINDS)
def test_config_and_checkpoints_come_from_the_install_in_any_folder(kind, tmp_path):
    env = install_env(kind)
    out = subprocess.run([sys.executable, "-c", PROBE, "sim"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if kind == "plain":  # a copy in the install: code and files
        assert found["module"].startswith(str(INSTALLS[kind])), found
        assert found["share"] == str(share(kind).resolve())
    else:  # links into the source package, read through them (checkpoint files must not be links)
        assert found["share"] == str((share(kind) / "package.xml").resolve().parent)
    assert found["params"] == f"{found['share']}/config/sim.yaml"
    assert found["root"] == f"{found['share']}/checkpoints"
    assert found["checkpoint"] == f"{found['share']}/checkpoints/reach_dma_small"


def fake_prefix(tmp_path, kind: str):
    """An install prefix that registers mail_bringup in the ament index with its launch files but no
    config/ (a broken or partial install), ahead of the real install on AMENT_PREFIX_PATH."""
    prefix = tmp_path / "prefix"
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "mail_bringup").touch()
    pkg = prefix / "share" / "mail_bringup"
    shutil.copytree(share(kind) / "launch", pkg / "launch")
    shutil.copy(share(kind) / "package.xml", pkg / "package.xml")
    return prefix


def test_a_missing_yaml_stops_ros2_launch_and_mail_il_up(tmp_path):
    env = install_env("plain")
    env["AMENT_PREFIX_PATH"] = f"{fake_prefix(tmp_path, 'plain')}:{env['AMENT_PREFIX_PATH']}"
    launch = ros2(env, "launch", "mail_bringup", "sim.launch.py", cwd=tmp_path)
    assert launch.returncode != 0
    assert "parameter file of profile 'sim' not found" in launch.stdout + launch.stderr
    assert "process started" not in launch.stdout + launch.stderr
    up = subprocess.run([sys.executable, "-m", "mail_policy_node.cli", "up", "sim", "--duration", "1"], env=env,
                        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert up.returncode == 2, up.stdout + up.stderr
    assert "parameter file of profile 'sim' not found" in up.stderr and "started" not in up.stdout


def test_launch_description_shows_the_nodes_and_their_exit_rules():
    """The description a ROS user reads (`ros2 launch -p`): declared arguments, the environment, a launch_ros
    Node per node (no OpaqueFunction), an exit handler per node."""
    pytest.importorskip("launch_ros", reason="needs ../shared/ros2-tools (scripts/setup_env.sh installs it)")
    from launch.actions import (DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler,
                                SetEnvironmentVariable)
    from launch_ros.actions import Node

    from mail_bringup.graph import profile
    from mail_bringup.launch_common import describe

    for name in PROFILES:
        entities = describe(name).entities
        nodes = [e for e in entities if isinstance(e, Node)]
        assert not [e for e in entities if isinstance(e, OpaqueFunction)]
        assert [e.name for e in entities if isinstance(e, DeclareLaunchArgument)] == \
            [a.name for a in LAUNCH_ARGUMENTS[name]] + list(NODE_SETTINGS)
        assert len(nodes) == len(profile(name).nodes)
        assert len([e for e in entities if isinstance(e, RegisterEventHandler)]) == len(nodes)
        env = {e.name[0].perform(None): e.value[0].perform(None) for e in entities
               if isinstance(e, SetEnvironmentVariable)}
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and "FASTRTPS_DEFAULT_PROFILES_FILE" in env
        assert env["ROS_DOMAIN_ID"].isdigit()
