"""The Dockerfiles lint clean with hadolint; the only ignored rules are the ones docker/.hadolint.yaml
lists with a reason, and inline ignore comments are not honoured."""

import subprocess

import pytest
import yaml

from tests.deploy import DOCKER, ROOT, venv_tool

DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_lints_clean(name):
    out = subprocess.run(
        [venv_tool("hadolint"), "--config", str(DOCKER / ".hadolint.yaml"), "--disable-ignore-pragma",
         "--failure-threshold", "style", "--no-color", str(DOCKER / name)],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "", f"hadolint on docker/{name}:\n{out.stdout}{out.stderr}"


def test_hadolint_sees_a_bad_dockerfile(tmp_path):
    """The check above is not vacuous: the same call reports a Dockerfile with known problems."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && pip install numpy\n")
    out = subprocess.run([venv_tool("hadolint"), "--config", str(DOCKER / ".hadolint.yaml"),
                          "--failure-threshold", "style", "--no-color", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3013"):  # latest tag, cd, unpinned pip package
        assert rule in out.stdout


def test_every_ignored_rule_is_explained():
    text = (DOCKER / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text)
    assert set(config) <= {"ignored"}, "only ignores belong in docker/.hadolint.yaml"
    lines = text.splitlines()
    for rule in config.get("ignored", []):
        i = next(n for n, line in enumerate(lines) if line.strip() == f"- {rule}")
        assert lines[i - 1].lstrip().startswith("#"), f"{rule} is ignored without a comment above it"


def test_images_use_the_pinned_requirements():
    """Both images install from env/requirements*.txt (one place for versions), and the GPU image,
    through env/install_ros_host.sh, leaves out exactly what apt provides there."""
    gpu = (DOCKER / "Dockerfile").read_text()
    cpu = (DOCKER / "Dockerfile.cpu").read_text()
    assert "env/requirements.txt" in gpu and "env/requirements-gpu.txt" in gpu
    assert "env/install_ros_host.sh" in gpu
    assert "scripts/setup_env.sh" in cpu
    assert ("FROM_APT='^(ros-jazzy-|catkin-pkg|numpy|opencv-python)'"
            in (ROOT / "env" / "install_ros_host.sh").read_text())
    pinned = (ROOT / "env" / "requirements.txt").read_text()
    for name in ("ros-jazzy-rclpy", "catkin-pkg", "numpy", "opencv-python-headless", "torch"):
        assert f"\n{name}" in pinned, f"{name} left env/requirements.txt: update the image's filter"
