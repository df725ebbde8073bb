"""docker/entrypoint.sh, run through bash with MAIL_ENTRYPOINT_PRINT=1: the command it would exec for
each profile and node, with and without ROS installed; unknown names; pass-through; a missing
workspace. Fake `ros2` and `mail-il` executables and fake setup files stand in for the image."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from mail_bringup.graph import CONFIG_DIR, PROFILES, profile
from tests.deploy import DOCKER, venv_tool

ENTRYPOINT = DOCKER / "entrypoint.sh"


class Image:
    """A fake image layout under tmp_path: optional ROS setup file, workspace setup file, commands."""

    def __init__(self, tmp_path: Path, ros: bool = True, workspace: bool = True, mail_il: bool = False):
        self.root = tmp_path
        self.ros_bin = tmp_path / "ros_bin"  # on PATH only once the ROS setup file was sourced
        self.bin = tmp_path / "bin"  # on PATH from the start (the CPU image's venv)
        for d in (self.ros_bin, self.bin):
            d.mkdir()
        _script(self.ros_bin / "ros2")
        if mail_il:
            _script(self.bin / "mail-il")
        self.ros_setup = tmp_path / "opt_ros_setup.bash"
        self.ws_setup = tmp_path / "ws_install_setup.bash"
        if ros:
            # Like real ROS setup files: reads an unset variable and ends with a failing test.
            self.ros_setup.write_text(f'export PATH="{self.ros_bin}:$PATH"\n[ -n "$SOME_UNSET_VARIABLE" ]\n')
        if workspace:
            self.ws_setup.write_text('export MAIL_TEST_WORKSPACE=sourced\n[ -n "$ANOTHER_UNSET" ]\n')

    def run(self, *args: str, print_only: bool = True, **env: str) -> subprocess.CompletedProcess:
        environ = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.root),
                   "MAIL_ROS_SETUP": str(self.ros_setup), "MAIL_WS_SETUP": str(self.ws_setup),
                   "MAIL_PARAMS_DIR": str(CONFIG_DIR)}
        if print_only:
            environ["MAIL_ENTRYPOINT_PRINT"] = "1"
        environ.update(env)
        return subprocess.run(["bash", str(ENTRYPOINT), *args], env=environ, capture_output=True, text=True,
                              timeout=30)

    def command(self, *args: str, **env: str) -> list[str]:
        out = self.run(*args, **env)
        assert out.returncode == 0, out.stderr
        return shlex.split(out.stdout)


def _script(path: Path, body: str = "exit 0") -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_profiles_are_the_graphs():
    text = ENTRYPOINT.read_text()
    line = next(line for line in text.splitlines() if line.startswith("PROFILES=("))
    assert tuple(line.split("(", 1)[1].split(")", 1)[0].split()) == PROFILES


@pytest.mark.parametrize("name", PROFILES)
def test_profile_with_ros_is_ros2_launch(tmp_path, name):
    image = Image(tmp_path)
    assert image.command(name, "robot_ip:=172.16.0.2", "checkpoint:=my policy") == \
        ["ros2", "launch", "mail_bringup", f"{name}.launch.py", "robot_ip:=172.16.0.2", "checkpoint:=my policy"]


@pytest.mark.parametrize("name", PROFILES)
def test_profile_without_ros_is_mail_il_up(tmp_path, name):
    image = Image(tmp_path, ros=False, workspace=False, mail_il=True)
    assert image.command(name, "policy_node.checkpoint:=reach") == ["mail-il", "up", name,
                                                                    "policy_node.checkpoint:=reach"]


def test_profile_without_ros_or_mail_il_fails_clearly(tmp_path):
    out = Image(tmp_path, ros=False, workspace=False).run("sim")
    assert out.returncode == 3
    assert "neither ROS 2" in out.stderr and "mail-il" in out.stderr and out.stdout == ""


@pytest.mark.parametrize("name", ["simm", "real-robot", "Sim"])
def test_unknown_profile_is_refused(tmp_path, name):
    out = Image(tmp_path).run(name)
    assert out.returncode == 2 and out.stdout == ""
    assert f"unknown profile or command '{name}'" in out.stderr
    assert "real_robot sim replay" in out.stderr


def test_other_commands_pass_through(tmp_path):
    image = Image(tmp_path)
    assert image.command("echo", "two words", "--flag") == ["echo", "two words", "--flag"]
    assert image.command("ros2", "topic", "list") == ["ros2", "topic", "list"]  # found after sourcing ROS


def test_pass_through_really_execs(tmp_path):
    """Without the print mode the command replaces the script: its output and exit status come back."""
    image = Image(tmp_path)
    out = image.run("sh", "-c", 'echo "workspace $MAIL_TEST_WORKSPACE"; exit 7', print_only=False)
    assert out.returncode == 7 and out.stdout == "workspace sourced\n"


def test_missing_workspace_stops_profiles_and_nodes(tmp_path):
    image = Image(tmp_path, workspace=False)
    for args in (["real_robot"], ["node", "policy_node"]):
        out = image.run(*args)
        assert out.returncode == 3 and out.stdout == ""
        assert "workspace not built" in out.stderr and str(image.ws_setup) in out.stderr


def test_missing_workspace_still_lets_a_shell_start(tmp_path):
    out = Image(tmp_path, workspace=False).run("bash", "-l")
    assert out.returncode == 0 and shlex.split(out.stdout) == ["bash", "-l"]
    assert "warning: workspace not built" in out.stderr


@pytest.mark.parametrize("name", PROFILES)
def test_every_node_of_every_profile(tmp_path, name):
    image = Image(tmp_path)
    for spec in profile(name).nodes:
        cmd = image.command("node", spec.name, "-p", "dry_run:=true", MAIL_PROFILE=name)
        assert spec.module == f"mail_policy_node.nodes.{spec.executable}"
        assert cmd == ["python3", "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}",
                       "--params-file", str(CONFIG_DIR / f"{name}.yaml"), "-p", "dry_run:=true"]


def test_node_default_profile_is_real_robot(tmp_path):
    cmd = Image(tmp_path).command("node", "franka_controller")
    assert cmd[-1] == str(CONFIG_DIR / "real_robot.yaml")


@pytest.mark.parametrize("name", PROFILES)
def test_parameter_files_hold_the_graphs_node_parameters(name):
    """`node` passes only the YAML file, `ros2 launch` adds the graph's per-node parameters on top:
    the two start the same node only while the YAML holds those values too."""
    params = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    for spec in profile(name).nodes:
        section = params.get(spec.name, {}).get("ros__parameters", {})
        for key, value in spec.parameters.items():
            assert section.get(key) == value, f"{name}.yaml: {spec.name}.{key} should be {value!r}"


def test_node_errors(tmp_path):
    image = Image(tmp_path)
    out = image.run("node", "camera")
    assert out.returncode == 2 and "unknown node 'camera'" in out.stderr
    out = image.run("node", "policy_node", MAIL_PROFILE="lab")
    assert out.returncode == 2 and "unknown profile 'lab'" in out.stderr
    out = image.run("node")
    assert out.returncode == 2 and "usage" in out.stderr
    out = image.run("node", "policy_node", MAIL_PARAMS_DIR=str(tmp_path / "nowhere"))
    assert out.returncode == 3 and "real_robot.yaml not found" in out.stderr


def test_help(tmp_path):
    image = Image(tmp_path)
    out = image.run("help")
    assert out.returncode == 0
    assert "entrypoint.sh PROFILE" in out.stdout and "MAIL_ENTRYPOINT_PRINT" in out.stdout
    assert not any(line.startswith("#") for line in out.stdout.splitlines())
    out = image.run()
    assert out.returncode == 2 and "entrypoint.sh PROFILE" in out.stderr


def test_shellcheck_clean():
    out = subprocess.run([venv_tool("shellcheck"), "--severity=style", str(ENTRYPOINT)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_images_use_it():
    for name in ("Dockerfile", "Dockerfile.cpu"):
        assert 'ENTRYPOINT ["bash", "/opt/mail/docker/entrypoint.sh"]' in (DOCKER / name).read_text()
    assert os.access(ENTRYPOINT, os.X_OK)
