"""env/install_ros_host.sh, the install recipe of a machine with ROS 2 Jazzy from apt: its dry run (every
command and file), its steps run for real against stand-ins for apt's Python, dpkg and the ROS setup file
(nothing is installed), its refusal on a machine without ROS from apt, and the GPU Dockerfile and the
READMEs running it instead of install commands of their own."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.deploy import DOCKER, ROOT, venv_tool

SCRIPT = ROOT / "env" / "install_ros_host.sh"
REQUIREMENTS = ROOT / "env" / "requirements.txt"
FROM_APT = re.compile(r"^(ros-jazzy-|catkin-pkg|numpy|opencv-python)")  # what apt provides there
SOURCE_LINE = "source /opt/ros/jazzy/setup.bash && source .venv-ros/bin/activate && source ros2_ws/install/setup.bash"
INSTALL_LINE = "bash env/install_ros_host.sh --apt"


def expected_requirements() -> list[str]:
    pinned = [line.strip() for line in REQUIREMENTS.read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    return [line for line in pinned if not FROM_APT.match(line)]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ) if env is None else env
    return subprocess.run(["bash", str(SCRIPT), *args], env=environ, capture_output=True, text=True, timeout=60)


def parse(stdout: str) -> tuple[list[list[str]], dict[str, list[str]]]:
    """The printed commands (`+ ...`, a quoted argument may span lines) and the files written
    (`+ cat > FILE <<'EOF'`)."""
    commands, files = [], {}
    lines = iter(stdout.splitlines())
    for line in lines:
        if line.startswith("+ cat > "):
            path = shlex.split(line[len("+ cat > "):].removesuffix(" <<'EOF'"))[0]
            files[path] = list(iter(lambda: next(lines), "EOF"))
        elif line.startswith("+ "):
            text = line[2:]
            while True:
                try:
                    commands.append(shlex.split(text))
                    break
                except ValueError:  # an open quote: the argument goes on on the next line
                    text += "\n" + next(lines)
    return commands, files


def dry_run(*args: str) -> tuple[list[list[str]], dict[str, list[str]], str]:
    out = run("--dry-run", *args)
    assert out.returncode == 0, out.stderr
    commands, files = parse(out.stdout)
    return commands, files, out.stdout


def index(commands: list[list[str]], prefix: list[str]) -> int:
    found = [i for i, c in enumerate(commands) if c[:len(prefix)] == prefix]
    assert len(found) == 1, f"{prefix} run {len(found)} times in {commands}"
    return found[0]


def test_dry_run_is_the_recipe(tmp_path):
    venv, ws = tmp_path / "venv", tmp_path / "ws"
    commands, files, stdout = dry_run("--venv", str(venv), "--workspace", str(ws))
    assert list(tmp_path.iterdir()) == [], "a dry run wrote something"
    assert stdout.startswith("# machine check: ")  # reported, not enforced
    py, con, req = f"{venv}/bin/python", f"{venv}/mail-constraints.txt", f"{venv}/mail-requirements.txt"

    # The requirements: every pin of env/requirements.txt but what apt provides.
    assert files[req] == expected_requirements()
    names = {re.split(r"[=\[<>]", line)[0] for line in files[req]}
    assert not names & {"numpy", "opencv-python-headless", "opencv-python", "catkin-pkg"}
    assert not any(n.startswith("ros-jazzy-") for n in names)
    assert {"torch", "franky-control", "rosbags", "pyrealsense2"} <= names
    assert files[f"{venv}/.gitignore"] == ["*"]

    steps = [
        index(commands, ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)]),
        index(commands, ["touch", f"{venv}/COLCON_IGNORE"]),
        index(commands, [py, "-c"]),  # apt's numpy and setuptools as constraints
        index(commands, [py, "-m", "pip", "install"]),
        index(commands, ["source", "/opt/ros/jazzy/setup.bash"]),
        index(commands, [py, "-m", "colcon", "build"]),
    ]
    assert steps == sorted(steps)
    constraints = commands[steps[2]]
    assert constraints[3:] == [">", con]
    assert "numpy.__version__" in constraints[2] and "setuptools.__version__" in constraints[2]
    assert commands[steps[3]] == [py, "-m", "pip", "install", "-c", con, "-r", req]
    assert commands[steps[5]] == [py, "-m", "colcon", "build", "--symlink-install", "--base-paths", f"{ws}/src",
                                  "--build-base", f"{ws}/build", "--install-base", f"{ws}/install",
                                  "--log-base", f"{ws}/log"]
    assert not any("apt-get" in c for c in commands), "apt-get without --apt"
    assert not any("mamba" in " ".join(c) or "einops==0.8.2" in c for c in commands), "GPU extra without --gpu"
    assert stdout.splitlines()[-1] == \
        f"source /opt/ros/jazzy/setup.bash && source {venv}/bin/activate && source {ws}/install/setup.bash"


def test_dry_run_gpu_extra(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("causal_conv1d-1.7.0-cp312-cp312-linux_x86_64.whl",
                 "mamba_ssm-2.3.2.post1-cp312-cp312-linux_x86_64.whl"):
        (wheels / name).touch()
    venv = tmp_path / "venv"
    py = f"{venv}/bin/python"
    pins = [py, "-m", "pip", "install", "-c", f"{venv}/mail-constraints.txt", "-r", f"{venv}/mail-requirements.txt",
            "einops==0.8.2", "transformers==4.57.6"]  # imported by mamba_ssm's __init__

    commands, _, _ = dry_run("--venv", str(venv), "--gpu-wheels", str(wheels))
    kernels = index(commands, [py, "-m", "pip", "install", "--no-deps"])
    assert commands[kernels][5:] == sorted(str(w) for w in wheels.iterdir())
    check = [i for i, c in enumerate(commands) if c[:2] == [py, "-c"] and "mamba_ssm" in c[2]]
    assert index(commands, pins) < kernels < check[0] and len(check) == 1  # fails the install if they do not load

    commands, _, _ = dry_run("--venv", str(venv), "--gpu")
    index(commands, pins)
    build = index(commands, ["env", "MAMBA_FORCE_BUILD=TRUE", "CAUSAL_CONV1D_FORCE_BUILD=TRUE", py, "-m", "pip",
                             "install", "--no-build-isolation", "--no-deps", "-r"])
    assert commands[build][-1] == str(ROOT / "env" / "requirements-gpu.txt")
    tools = index(commands, [py, "-m", "pip", "install", "-c", f"{venv}/mail-constraints.txt", "wheel==0.45.1"])
    assert tools < build


def test_dry_run_apt_step():
    commands, _, _ = dry_run("--apt", "--only", "apt")
    apt = [c[c.index("apt-get"):] for c in commands]
    assert [c[:2] for c in apt] == [["apt-get", "update"], ["apt-get", "install"]]
    packages = apt[1][apt[1].index("--no-install-recommends") + 1:]
    assert {"python3-venv", "python3-colcon-common-extensions", "ros-jazzy-rosbag2-storage-mcap", "libusb-1.0-0",
            "python3-opencv", "python3-numpy", "build-essential", "python3-dev"} <= set(packages)
    assert len(commands) == 2 and all(c[:c.index("apt-get")] in ([], ["sudo"]) for c in commands)  # --only apt
    # The package list lives in the script alone: --help shows it, the Dockerfile does not repeat it.
    assert " ".join(packages) in run("--help").stdout
    assert "python3-opencv" not in (DOCKER / "Dockerfile").read_text()


def test_only_selects_steps(tmp_path):
    commands, _, _ = dry_run("--venv", str(tmp_path / "v"), "--only", "build")
    assert [c[:4] for c in commands] == [["source", "/opt/ros/jazzy/setup.bash"],
                                         [f"{tmp_path}/v/bin/python", "-m", "colcon", "build"]]
    commands, _, stdout = dry_run("--venv", str(tmp_path / "v"), "--only", "python")
    assert commands[-1][2:4] == ["pip", "install"] and not any("colcon" in c or c[0] == "source" for c in commands)
    assert not stdout.splitlines()[-1].startswith("source ")  # nothing built yet to source


@pytest.mark.parametrize("args, message", [
    (["--only", "docker"], "--only takes apt, python or build"),
    (["--venv"], "--venv needs a value"),
    (["--pip"], "unknown argument '--pip'"),
])
def test_bad_arguments(args, message):
    out = run(*args)
    assert out.returncode == 2 and message in out.stderr and out.stdout == ""


class Host:
    """Stand-ins under tmp_path for what the script uses of a ROS machine: apt's Python (a script that
    logs its calls, creates the venv's folder and answers the version and constraint queries), dpkg,
    the ROS setup file; apt-get and sudo fail loudly. Nothing is installed."""

    def __init__(self, tmp_path: Path, python: str = "3.12", installed: bool = True, ros: bool = True):
        self.root, self.log = tmp_path, tmp_path / "calls.log"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.python = self.bin / "python3"
        _script(self.python, f'''\
printf '%s\\x1f' "ROS=${{MAIL_TEST_ROS:-}}" "$0" "$@" >> "{self.log}"; printf '\\x1e' >> "{self.log}"
case "$1 $2" in
  "-m venv") mkdir -p "${{@: -1}}/bin" && ln -s "{self.python}" "${{@: -1}}/bin/python" ;;
  "-c "*version_info*) echo {python} ;;
  "-c "*numpy.__version__*) printf 'numpy==1.26.4\\nsetuptools==68.1.2\\n' ;;
esac''')
        _script(self.bin / "dpkg-query", f"echo {'installed' if installed else 'not-installed'}")
        for tool in ("apt-get", "sudo"):
            _script(self.bin / tool, f'echo "{tool} called" >> "{self.log}.apt"; exit 99')
        self.ros_setup = tmp_path / "ros" / "setup.bash"
        if ros:  # like ROS's: reads an unset variable and ends with a failing test
            self.ros_setup.parent.mkdir()
            self.ros_setup.write_text('export MAIL_TEST_ROS=sourced\n[ -n "$SOME_UNSET_VARIABLE" ]\n')

    def env(self, **extra: str) -> dict:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.root), "MAIL_HOST_PYTHON": str(self.python),
                "MAIL_ROS_SETUP": str(self.ros_setup), **extra}

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [record.split("\x1f")[:-1] for record in self.log.read_text().split("\x1e")[:-1]]


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def test_steps_run_as_the_dry_run_shows(tmp_path):
    host = Host(tmp_path)
    venv, ws, wheels = tmp_path / "venv", tmp_path / "ws", tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "mamba_ssm-2.3.2.post1-cp312-cp312-linux_x86_64.whl").touch()
    args = ["--venv", str(venv), "--workspace", str(ws), "--gpu-wheels", str(wheels)]
    out = run(*args, env=host.env())
    assert out.returncode == 0, out.stdout + out.stderr
    assert not Path(f"{host.log}.apt").exists()

    # What it wrote.
    assert (venv / "COLCON_IGNORE").exists() and (venv / ".gitignore").read_text() == "*\n"
    assert (venv / "mail-requirements.txt").read_text().splitlines() == expected_requirements()
    assert (venv / "mail-constraints.txt").read_text() == "numpy==1.26.4\nsetuptools==68.1.2\n"

    # What it ran, in order (less the machine check's version query), and with ROS sourced for colcon.
    py = str(venv / "bin" / "python")
    calls = [c for c in host.calls() if "version_info" not in " ".join(c)]
    assert [c[1:4] for c in calls] == [[str(host.python), "-m", "venv"], [py, "-c", calls[1][3]],
                                       [py, "-m", "pip"], [py, "-m", "pip"], [py, "-c", calls[4][3]],
                                       [py, "-m", "colcon"]]
    assert [c[0] for c in calls] == ["ROS="] * 5 + ["ROS=sourced"]
    assert calls[3][2:] == ["-m", "pip", "install", "--no-deps", str(next(wheels.iterdir()))]

    # The real run printed exactly the commands and files of the dry run.
    dry = run("--dry-run", *args, env=host.env())
    assert parse(out.stdout) == parse(dry.stdout)
    printed = [c for c in parse(out.stdout)[0] if c[0] not in ("touch", "source")]
    assert [c[1:] for c in calls] == [[c[0], *c[1:c.index(">")]] if ">" in c else c for c in printed]


def test_build_step_needs_the_venv(tmp_path):
    host = Host(tmp_path)
    out = run("--only", "build", "--venv", str(tmp_path / "none"), env=host.env())
    assert out.returncode == 1 and f"no venv at {tmp_path / 'none'}" in out.stderr
    assert not any("colcon" in c for c in host.calls())


def test_missing_kernel_wheels_fail(tmp_path):
    host = Host(tmp_path)
    (tmp_path / "wheels").mkdir()
    out = run("--only", "python", "--venv", str(tmp_path / "v"), "--gpu-wheels", str(tmp_path / "wheels"),
              env=host.env())
    assert out.returncode == 1 and "no kernel wheels" in out.stderr


def test_refusal_names_everything_missing(tmp_path):
    host = Host(tmp_path, python="3.11", installed=False, ros=False)
    venv = tmp_path / "venv"
    out = run("--venv", str(venv), env=host.env(ROS_DISTRO="humble"))
    assert out.returncode == 1 and out.stdout == ""
    for text in ("is Python 3.11, not 3.12", "ROS humble sourced", f"{host.ros_setup} not found",
                 "apt packages not installed: ros-jazzy-ros-base ", "libusb-1.0-0", "--apt", "Nothing was installed",
                 "make env"):
        assert text in out.stderr
    assert not venv.exists() and all(c[2] == "-c" for c in host.calls())  # the version query only
    # --apt cannot give it another Python: refused before apt-get runs
    out = run("--apt", "--venv", str(venv), env=host.env())
    assert out.returncode == 1 and "not 3.12" in out.stderr and not Path(f"{host.log}.apt").exists()


@pytest.mark.skipif(Path("/opt/ros/jazzy/setup.bash").exists(), reason="this machine has ROS 2 Jazzy from apt")
@pytest.mark.parametrize("apt", [False, True])
def test_refuses_on_this_machine(tmp_path, apt):
    """This machine (Debian 12, Python 3.11, no ROS from apt): the real script, not stand-ins, refuses
    before running anything. apt-get and sudo on PATH are stand-ins that fail, in case it did not."""
    guard = tmp_path / "bin"
    guard.mkdir()
    for tool in ("apt-get", "sudo"):
        _script(guard / tool, f'echo "{tool} called" >> "{tmp_path}/apt.log"; exit 99')
    venv = tmp_path / "venv"
    env = {"PATH": f"{guard}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = run(*(["--apt"] if apt else []), "--venv", str(venv), env=env)
    assert out.returncode == 1 and out.stdout == ""
    assert "not a ROS 2 Jazzy machine from apt" in out.stderr and "Nothing was installed" in out.stderr
    python = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                            capture_output=True, text=True).stdout.strip()
    if python != "3.12":
        assert f"/usr/bin/python3 is Python {python}, not 3.12" in out.stderr
    if not apt:
        assert "/opt/ros/jazzy/setup.bash not found" in out.stderr
    assert not venv.exists() and not (tmp_path / "apt.log").exists()


def test_script_lints_clean():
    assert os.access(SCRIPT, os.X_OK)
    out = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([venv_tool("shellcheck"), "--severity=style", str(SCRIPT)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _runtime_stage_runs() -> list[str]:
    """The RUN instructions of docker/Dockerfile's runtime stage, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text()
    stage = text.split("FROM ${ROS_IMAGE}", 1)[1].replace("\\\n", " ")
    return [line[4:] for line in stage.splitlines() if line.startswith("RUN ")]


def test_gpu_image_installs_with_the_script():
    text = (DOCKER / "Dockerfile").read_text()
    stage = text.split("FROM ${ROS_IMAGE}", 1)[1]
    runs = _runtime_stage_runs()
    for forbidden in ("pip install", "apt-get install", "colcon build", "-m venv", "requirements.txt"):
        assert not any(forbidden in r for r in runs), f"the runtime stage runs `{forbidden}` itself"
    invocations = [shlex.split(r.split("install_ros_host.sh", 1)[1].split("&&")[0]) for r in runs]
    assert len(invocations) == len(runs) == 3, runs
    assert [args[args.index("--only") + 1] for args in invocations] == ["apt", "python", "build"]
    assert "--apt" in invocations[0]
    assert "ENV VIRTUAL_ENV=/opt/mail/venv" in stage
    assert "ENV PATH=/opt/mail/venv/bin:" in stage
    workspace = invocations[2][invocations[2].index("--workspace") + 1]
    assert f"MAIL_WS_SETUP={workspace}/install/setup.bash" in stage

    # The same arguments in a dry run: the image's paths, the kernel wheels of the build stage.
    python_step = [a.replace("$VIRTUAL_ENV", "/opt/mail/venv") for a in invocations[1]]
    commands, _, _ = dry_run(*python_step)
    index(commands, ["/usr/bin/python3", "-m", "venv", "--system-site-packages", "/opt/mail/venv"])
    assert ["/opt/mail/venv/bin/python", "-m", "pip", "install", "--no-deps", "/tmp/wheels/*.whl"] in commands
    assert "COPY --from=kernels /wheels /tmp/wheels" in stage
    build_step = [a.replace("$VIRTUAL_ENV", "/opt/mail/venv") for a in invocations[2]]
    commands, _, _ = dry_run(*build_step)
    assert commands[-1][:4] == ["/opt/mail/venv/bin/python", "-m", "colcon", "build"]
    assert commands[-1][commands[-1].index("--install-base") + 1] == "/opt/mail/ros2_ws/install"


def _bash_blocks(path: Path) -> str:
    return "\n".join(re.findall(r"```bash\n(.*?)```", path.read_text(), re.S))


@pytest.mark.parametrize("doc", ["README.md", "docker/README.md", "docs/runbook.md"])
def test_docs_install_with_the_script(doc, tmp_path):
    blocks = _bash_blocks(ROOT / doc)
    lines = [line.split("#")[0].strip() for line in blocks.splitlines()]
    assert INSTALL_LINE in lines, f"{doc}: no `{INSTALL_LINE}`"
    assert SOURCE_LINE in lines, f"{doc}: no `{SOURCE_LINE}`"
    assert "pip install -r env/requirements.txt" not in blocks
    # Every install command of the doc is one the script accepts (run dry, DIR given).
    (tmp_path / "DIR").mkdir()
    for line in lines:
        if line.startswith("bash env/install_ros_host.sh"):
            args = [str(tmp_path / "DIR") if a == "DIR" else a for a in shlex.split(line)[2:]]
            assert run("--dry-run", *args).returncode == 0, line


def test_docs_source_what_the_script_builds():
    """The docs' source line is the one the script prints with its default paths."""
    _, _, stdout = dry_run()
    assert stdout.splitlines()[-1].replace(f"{ROOT}/", "") == SOURCE_LINE
