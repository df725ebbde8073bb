"""`ros2 launch` and `mail-il up` translate the same graph (mail_bringup.graph): started with the same
arguments they run the same nodes with the same parameters, compared with `ros2 param dump` of every
node. The launch runs from the --symlink-install workspace, `mail-il up` from the project's editable
venv (both read the source package's YAML and checkpoints). In a namespace, so the YAML's sections must
reach namespaced nodes too (a `policy_node:` section alone would leave /lab/policy_node on its code
defaults)."""

import os
import signal
import subprocess
import sys
import threading

import pytest
import yaml

from mail_bringup.graph import profile
from tests.launch import Launch, install_env, ros2, ros2_until
from tests.rosutil import private_domain, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAMESPACE = "lab"


# the same for both (they run one after the other); franky-sim on a loopback address of this test's own
ARGUMENTS = [f"robot_ip:=127.0.{os.getpid() % 250}.{1 + os.getpid() % 251}", f"namespace:={NAMESPACE}",
             "auto_enable:=false", "seed:=3", "log_level:=warn"]


def graph_parameters(env: dict) -> dict[str, dict]:
    """Node name -> its parameters (`ros2 param dump`), once every node of the sim profile is up; the
    nodes' companions (no parameter services) as empty entries."""
    wanted = {f"/{NAMESPACE}/{n.name}" for n in profile("sim").nodes}

    previous: set[str] = set()

    def listed():
        # every node, and the same list twice running: a node's companion is discovered a moment after it
        nonlocal previous
        out = set(ros2(env, "node", "list", "--no-daemon", "--spin-time", "3").stdout.split())
        settled, previous = wanted <= out and out == previous, out
        return settled and sorted(out)

    nodes = [n for n in wait_for(listed, 120, interval=0.5, what="every node") if not n.startswith("/launch_ros")]
    dumps = {}

    def dump(node):
        dumps[node] = ros2_until(env, "param", "dump", node, "--no-daemon", "--spin-time", "3", timeout=90)

    threads = [threading.Thread(target=dump, args=(n,)) for n in sorted(wanted)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {n: {} for n in nodes}
    for _node, result in dumps.items():
        assert result.returncode == 0, result.stdout + result.stderr
        out.update({name: section["ros__parameters"] for name, section in yaml.safe_load(result.stdout).items()})
    return out


def test_ros2_launch_and_mail_il_up_start_the_same_nodes_with_the_same_parameters(tmp_path):
    with private_domain():
        env = install_env("symlink")
        launch = Launch(env, "sim", *ARGUMENTS, cwd=tmp_path)
        try:
            launched = graph_parameters(env)
        finally:
            launch.close()

    with private_domain():
        up = subprocess.Popen([sys.executable, "-m", "mail_policy_node.cli", "up", "sim", *ARGUMENTS],
                              env=dict(os.environ), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
        output: list[str] = []
        threading.Thread(target=lambda: output.extend(up.stdout), daemon=True).start()
        try:
            started = graph_parameters({**os.environ, "PATH": env["PATH"]})
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()

    assert sorted(launched) == sorted(started)
    for node in launched:
        assert launched[node] == started[node], node
    # the YAML reached the namespaced nodes, the arguments too
    policy = launched[f"/{NAMESPACE}/policy_node"]
    assert policy["execution_horizon"] == 0 and policy["checkpoint"] == "reach_dma_small"
    assert policy["checkpoint_root"].endswith("mail_bringup/checkpoints")
    controller = launched[f"/{NAMESPACE}/franka_controller"]
    assert controller["auto_enable"] is False
    assert controller["robot_ip"] == launched[f"/{NAMESPACE}/sim_world"]["hostname"] != "127.0.0.1"
    assert launched[f"/{NAMESPACE}/sim_world"]["seed"] == 3
