"""The Franka controller as a managed (lifecycle) node, driven through its real lifecycle services
(lifecycle_msgs over DDS, as `ros2 lifecycle set` and a lifecycle manager call them) against the strict FR3
emulator over the libfranka protocol: started with `autostart` false it waits unconfigured and holds no
connection; configure connects and streams joint states; enable is refused until activate; activate lets
the policy's chunks drive; deactivate holds the arm to rest and refuses enable; cleanup lets the robot go (a
second client can connect: franky-sim serves one). The autostart default (configure and activate at start)
is what every profile test runs."""

import os
import time

import numpy as np
import pytest

from mail_policy_node.sim.franky import loopback_candidates
from tests.robot.stack import Emulator, task_start
from tests.rosutil import node_process, probe, stop_process, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.franky_sim]


def call(p, srv_type, name: str, request, timeout: float = 30.0):
    client = p.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), name
    future = client.call_async(request)
    wait_for(future.done, timeout, what=name)
    return future.result()


def another_client_reads(host: str, timeout: float = 15.0) -> np.ndarray:
    """Connect a franky client of this test's own, read the joints, disconnect. franky-sim serves one
    client at a time (a second one waits, measured), so this answers only while the controller holds no
    connection; TimeoutError otherwise."""
    import gc
    import threading

    import franky

    got = []

    def read():
        robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
        got.append(np.array(robot.state.q))
        del robot
        gc.collect()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not got:
        raise TimeoutError(f"a second client could not read the robot at {host} within {timeout} s")
    return got[0]


def test_the_controller_lifecycle_on_the_emulated_fr3(tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    from mail_msgs.msg import ActionChunk, ControllerStatus
    from tests.nodes.test_controller_node import make_chunk_msg

    host = next(loopback_candidates(os.getpid() + 11))
    emu = Emulator(host, tmp_path / "emulator")
    q0, _ = task_start()
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                        {"robot_ip": host, "dry_run": False, "realtime": False, "autostart": False,
                         "relative_dynamics_factor": 0.3, "watchdog_timeout": 0.5})
    states = []

    def state() -> str:
        states.append(call(p, GetState, "/franka_controller/get_state", GetState.Request()).current_state.label)
        return states[-1]

    def transition(tid: int) -> bool:
        return call(p, ChangeState, "/franka_controller/change_state",
                    ChangeState.Request(transition=Transition(id=tid))).success

    def enable() -> tuple[bool, str]:
        r = call(p, Trigger, "/franka_controller/enable", Trigger.Request())
        return r.success, r.message

    def drive(seconds: float, offset: np.ndarray) -> None:
        end, seq = time.time() + seconds, int(time.time() * 10)
        while time.time() < end:
            pub.publish(make_chunk_msg(seq, time.time(), [list(q0 + offset) + [0.08]] * 5))
            seq += 1
            time.sleep(0.1)

    try:
        with probe() as p:
            joints = p.subscribe(JointState, "/joint_states")
            status = p.subscribe(ControllerStatus, "/mail/controller_status")
            pub = p.node.create_publisher(ActionChunk, "/mail/action_chunk",
                                          QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
            # unconfigured: no connection, nothing published, enable refused
            wait_for(lambda: state() == "unconfigured", 60, what="the node up, unconfigured")
            assert np.allclose(another_client_reads(host), q0, atol=1e-2)  # the robot is free
            assert joints == []
            ok, why = enable()
            assert not ok and "unconfigured" in why, why

            # configure: connects and reads the arm; still inactive, so enable is refused
            assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
            wait_for(lambda: len(joints) > 10, 30, what="joint states after configure")
            assert np.max(np.abs(np.array(joints[-1].position[:7]) - q0)) < 1e-2
            ok, why = enable()
            assert not ok and "inactive" in why, why

            # activate: the enable service works, and chunks drive the arm
            assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active"
            wait_for(lambda: pub.get_subscription_count() > 0, 10, what="the chunk subscription")
            ok, why = enable()
            assert ok, why
            drive(2.0, np.array([0.1, 0, 0, 0, 0, 0, 0]))
            moved = abs(joints[-1].position[0] - q0[0])
            assert moved > 0.03, moved

            # deactivate: holds to rest, then disabled; enable refused again; the chunks change nothing
            assert transition(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
            wait_for(lambda: status[-1].mode == ControllerStatus.MODE_DISABLED, 10, what="disabled at rest")
            ok, why = enable()
            assert not ok and "inactive" in why, why
            n = len(joints)
            drive(1.0, np.array([0.2, 0, 0, 0, 0, 0, 0]))
            after = np.array([j.position[:7] for j in joints[n:]])
            assert np.ptp(after, axis=0).max() < 2e-3, "the arm moved while inactive"

            # cleanup: the connection is let go: another client can take the robot
            assert transition(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
            assert np.allclose(another_client_reads(host), after[-1], atol=1e-2)
    finally:
        out = stop_process(proc)
        summary = emu.finish()
    assert proc.returncode == 0, out
    assert summary["reflexes"] == [], summary["reflexes"]
    assert summary["commands"] > 0  # it drove while active
