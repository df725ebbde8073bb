"""The `sim` profile through the real `ros2 launch`, as a user runs it from a colcon install (started
in a temporary folder, so nothing is found relative to the checkout): the closed loop until a chunk
reaches the controller and the arm moves, a checkpoint hot swap with `ros2 param set`, the controller
enabled with `ros2 service call`, a camera respawned after the graph's delay, every topic inside the
`namespace`, and the launch ending by itself when the controller dies. The `mail-il up` twin:
tests/bringup/test_closed_loop_trained.py."""

import os
import signal
import time

import numpy as np
import pytest

from mail_bringup.graph import RESPAWN_DELAY_S
from tests.launch import Launch, alive, install_env, ros2, ros2_until, share
from tests.rosutil import private_domain, probe, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FIRST_CHUNK_S = 180  # generous: start-up on a loaded 2-core machine (about 20-40 s when idle)


def sim_host(domain: int) -> str:
    """A loopback address of this graph's own for franky-sim (another graph may use 127.0.0.1)."""
    return f"127.0.{domain}.{1 + os.getpid() % 250}"


def watch(p, namespace: str = ""):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    from mail_msgs.msg import ActionChunk, ControllerStatus

    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    return (p.subscribe(ActionChunk, f"{namespace}/mail/action_chunk", reliable),
            p.subscribe(JointState, f"{namespace}/joint_states", qos_profile_sensor_data),
            p.subscribe(ControllerStatus, f"{namespace}/mail/controller_status", 10))


def moved(joints, since: int = 0) -> float:
    """Largest arm-joint displacement [rad] between joint states since index `since` and the newest."""
    if len(joints) <= since + 1:
        return 0.0
    q = np.array([j.position[:7] for j in joints[since:]])
    return float(np.max(np.abs(q - q[0])))


def test_sim_profile_from_the_plain_install_closes_the_loop_and_hot_swaps(tmp_path):
    with private_domain() as domain, probe("sim_launch_probe") as p:
        env = install_env("plain")
        chunks, joints, _ = watch(p)
        launch = Launch(env, "sim", f"robot_ip:={sim_host(domain)}", cwd=tmp_path)
        try:
            wait_for(lambda: chunks or launch.proc.poll() is not None, FIRST_CHUNK_S, what="the first chunk")
            assert chunks, launch.output()
            first_chunk_s = time.monotonic() - launch.started
            # the nodes joined this test's graph, which the launch names (mail_policy_node.rosenv)
            assert f"ROS_DOMAIN_ID={domain} " in launch.output() and "discovery LOCALHOST" in launch.output()
            # the shipped checkpoint, from the install's share directory (checkpoint_root's default)
            assert chunks[0].checkpoint == "reach_dma_small"
            wait_for(lambda: moved(joints) > 0.02, 60, what="the arm to move")

            root = str(share("plain").resolve() / "checkpoints")
            got = ros2_until(env, "param", "get", "/policy_node", "checkpoint_root", "--no-daemon", "--spin-time", "3")
            assert root in got.stdout, got.stdout + got.stderr
            # hot swap: the same weights under another name (an absolute path inside the root)
            swap = ros2_until(env, "param", "set", "/policy_node", "checkpoint", f"{root}/reach_dma_small",
                              "--no-daemon", "--spin-time", "3")
            assert "Set parameter successful" in swap.stdout, swap.stdout + swap.stderr
            wait_for(lambda: chunks[-1].checkpoint == f"{root}/reach_dma_small", 60, what="the swapped policy's chunks")
            # each parameter explains itself: description, range, read-only
            described = ros2_until(env, "param", "describe", "/policy_node", "rate_hz", "checkpoint", "--no-daemon",
                                   "--spin-time", "3").stdout
            assert "control ticks per second" in described and "Min value: 0.0" in described, described
            assert "Max value: 200.0" in described and "Read only: true" in described, described
            refused = ros2_until(env, "param", "set", "/policy_node", "checkpoint", "../../..", "--no-daemon",
                                 "--spin-time", "3")
            said = refused.stdout + refused.stderr
            assert "Setting parameter failed" in said and "outside the checkpoint root" in said, said
            n = len(chunks)
            wait_for(lambda: len(chunks) > n + 3, 30, what="chunks after the refused swap")  # the policy runs on

            rc = launch.interrupt(timeout=30)  # Ctrl-C
            assert rc == 0, launch.output()[-3000:]
            assert not [pid for pid in launch.pids().values() if alive(pid)]
        finally:
            launch.close()
    print(f"ros2 launch sim (plain install): first chunk after {first_chunk_s:.1f} s")


def test_enable_service_respawn_and_the_controller_ending_the_launch(tmp_path):
    from mail_msgs.msg import ControllerStatus

    with private_domain() as domain, probe("sim_launch_probe") as p:
        env = install_env("symlink")
        chunks, joints, status = watch(p, "/lab")
        outside = watch(p)  # the same topics without the namespace: nothing may arrive there
        launch = Launch(env, "sim", f"robot_ip:={sim_host(domain)}", "auto_enable:=false", "namespace:=lab",
                        cwd=tmp_path)
        try:
            wait_for(lambda: chunks or launch.proc.poll() is not None, FIRST_CHUNK_S, what="the first chunk")
            assert chunks, launch.output()
            # every topic of the profile is inside the namespace (relative names), so two arms can share a graph:
            # nothing publishes the names without it (this test's own subscriptions there are all they have)
            topics = ros2(env, "topic", "list", "--no-daemon", "--spin-time", "3", timeout=60).stdout.split()
            assert {"/lab/joint_states", "/lab/mail/action_chunk", "/lab/camera/wrist/image_raw"} <= set(topics)
            for name in [t for t in topics if not t.startswith("/lab/")] + ["/mail/action_chunk", "/joint_states"]:
                if name not in ("/rosout", "/parameter_events", "/diagnostics"):
                    assert p.node.count_publishers(name) == 0, (name, topics)
            assert not any(outside), [len(x) for x in outside]
            # chunks arrive, but the controller waits for the enable service: the arm stays where it is
            wait_for(lambda: len(chunks) > 10, 60, what="more chunks")
            assert status and status[-1].mode == ControllerStatus.MODE_DISABLED
            assert moved(joints) < 2e-3

            # a managed node, configured and activated by its autostart
            got = ros2_until(env, "lifecycle", "get", "/lab/franka_controller", "--no-daemon", "--spin-time", "3",
                             ok=lambda r: r.stdout.startswith("active"))
            assert got.stdout.startswith("active"), got.stdout + got.stderr
            call = ros2(env, "service", "call", "/lab/franka_controller/enable", "std_srvs/srv/Trigger", timeout=60)
            assert call.returncode == 0 and "success=True" in call.stdout, call.stdout + call.stderr
            since = len(joints)
            wait_for(lambda: moved(joints, since) > 0.02, 60, what="the arm to move after enable")

            # a camera that dies comes back after the graph's respawn delay
            label, camera = next((k, v) for k, v in launch.pids().items() if k.startswith("camera_node-"))
            os.kill(camera, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: launch.pids()[label] != camera, 30, what="the camera respawned")
            assert time.monotonic() - killed >= RESPAWN_DELAY_S - 0.2

            # the controller is the end of the profile: the launch stops every node and exits by itself
            controller = launch.pid("franka_controller_node")
            os.kill(controller, signal.SIGKILL)
            rc = launch.wait(timeout=60)
            assert rc == 1, launch.output()[-3000:]  # the profile stopped on a fault: ros2 launch says so
            assert "profile sim stops: franka_controller exited with code -9" in launch.output()
            assert not [pid for pid in launch.pids().values() if alive(pid)]
        finally:
            launch.close()

