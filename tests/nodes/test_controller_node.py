"""Franka controller node as a real process over DDS, in dry-run mode (no robot: the arm echoes the
filtered command). Against a robot (the strict FR3 emulator) see tests/robot/."""

import math
import time

import numpy as np
import pytest

from mail_policy_node.control.safety import Limit
from tests.rosutil import node_process, probe, stop_process, wait_for

pytestmark = pytest.mark.ros

START = [0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785]


def make_chunk_msg(seq, stamp_s, targets, dt=0.1, task=""):
    from mail_policy_node.control.chunks import ActionChunk
    from mail_policy_node.nodes.ros_convert import chunk_to_msg
    from mail_policy_node.spec import FR3_JOINT_NAMES, GRIPPER_NAME

    return chunk_to_msg(ActionChunk(stamp=stamp_s, start_offset=0.0, dt=dt, actions=np.asarray(targets, float),
                                    names=FR3_JOINT_NAMES + (GRIPPER_NAME,), policy_id="test", sequence=seq,
                                    task=task))


@pytest.fixture
def controller():
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                        {"dry_run": True, "auto_enable": True, "watchdog_timeout": 0.3,
                         "relative_dynamics_factor": 1.0, "control_rate_hz": 100.0, "dry_run_start": START})
    yield proc
    stop_process(proc)


def test_chunks_move_the_command_within_limits_and_watchdog_holds(controller):
    from mail_msgs.msg import ActionChunk, ControllerStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from mail_policy_node.control.limits import fr3_limits

    with probe() as p:
        commands = p.subscribe(JointState, "/mail/action_command")
        status = p.subscribe(ControllerStatus, "/mail/controller_status")
        pub = p.node.create_publisher(ActionChunk, "/mail/action_chunk",
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        wait_for(lambda: status and pub.get_subscription_count() > 0, 30, what="controller up")
        assert status[-1].mode == ControllerStatus.MODE_DISABLED  # nothing moves before the first chunk
        goal = np.array(START) + np.array([0.25, 0.0, 0.0, 0.0, 0.0, 0.0, -0.25])
        t_feed_end = time.time() + 2.5
        seq = 0
        while time.time() < t_feed_end:  # a policy at 10 Hz sending chunks of 5 x 0.1 s toward the goal
            now = time.time()
            pub.publish(make_chunk_msg(seq, now, [list(goal) + [0.04]] * 5, task="reach"))
            seq += 1
            time.sleep(0.1)
        n_before_silence = len(commands)
        wait_for(lambda: status[-1].mode == ControllerStatus.MODE_HOLDING, 2.0, what="watchdog hold")
        t_hold = time.time()
        tripped_after = t_hold - t_feed_end
        wait_for(lambda: len(commands) > n_before_silence + 60, 5, what="commands while holding")

    q = np.array([c.position[:7] for c in commands])
    v = np.array([c.velocity[:7] for c in commands])
    lim = fr3_limits()
    assert np.all(np.abs(v) <= lim.dq_max + 1e-9), "commanded velocity above the limit"
    assert np.all(q >= lim.q_min - 1e-9) and np.all(q <= lim.q_max + 1e-9)
    steps = np.abs(np.diff(q, axis=0)).max()
    assert steps <= 0.05 + 1e-9, f"per-cycle step {steps} above max_joint_step"
    reached = q[n_before_silence - 1]
    assert abs(reached[0] - goal[0]) < 0.05 and abs(reached[6] - goal[6]) < 0.05, reached
    assert np.allclose(v[-1], 0.0, atol=1e-6), "the hold must end at rest"
    assert tripped_after < 0.3 + 0.1 + 0.3, f"watchdog tripped {tripped_after:.2f} s after the last chunk"
    s = status[-1]
    assert s.watchdog_trips >= 1 and s.dry_run and s.chunks_received >= 20
    assert (s.active_policy_id, s.active_task) == ("test", "reach")  # who drove: the checkpoint and its task
    # a loaded machine may deliver a chunk after its last action was due (rejected as all-stale: correct)
    assert s.chunks_rejected < s.chunks_received / 2, (s.chunks_rejected, s.chunks_received)
    # cycles per limit: the 0.3 rad step asks for nothing the limits forbid, so the filter only smoothed
    # it (acceleration, jerk: listed by name, not counted in limit_hits)
    limits = dict(zip(s.limit_names, s.limit_counts))
    assert set(limits) <= {m.name.lower() for m in Limit}
    assert limits.get("jerk", 0) > 0 and s.limit_hits == 0, (limits, s.limit_hits)
    assert set(limits) <= {"acceleration", "jerk"}, limits


def test_malformed_and_nan_chunks_are_rejected_and_counted(controller):
    from mail_msgs.msg import ActionChunk, ControllerStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    with probe() as p:
        status = p.subscribe(ControllerStatus, "/mail/controller_status")
        pub = p.node.create_publisher(ActionChunk, "/mail/action_chunk",
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        wait_for(lambda: status and pub.get_subscription_count() > 0, 30, what="controller up")
        bad = make_chunk_msg(0, time.time(), [START + [0.04]] * 5)
        bad.horizon = 7  # does not match the data
        nan = make_chunk_msg(1, time.time(), [START[:6] + [float("nan"), 0.04]] * 5)
        pub.publish(bad)
        pub.publish(nan)
        wait_for(lambda: status[-1].chunks_rejected >= 2, 5, what="rejections counted")
        assert status[-1].commanded_position[:7] == pytest.approx(START, abs=1e-6)  # never moved


def test_estop_holds_and_blocks_enable_until_released(controller):
    from mail_msgs.msg import ActionChunk, ControllerStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    with probe() as p:
        status = p.subscribe(ControllerStatus, "/mail/controller_status")
        pub = p.node.create_publisher(ActionChunk, "/mail/action_chunk", reliable)
        estop = p.node.create_publisher(Bool, "/mail/estop", reliable)
        enable = p.node.create_client(Trigger, "/franka_controller/enable")

        def call_enable():
            assert enable.wait_for_service(timeout_sec=10)
            fut = enable.call_async(Trigger.Request())
            wait_for(fut.done, 10, what="enable answer")
            return fut.result()

        wait_for(lambda: status and pub.get_subscription_count() > 0 and estop.get_subscription_count() > 0,
                 30, what="controller up")
        goal = list(np.array(START) + 0.2)
        for seq in range(5):  # moving
            pub.publish(make_chunk_msg(seq, time.time(), [goal + [0.04]] * 5))
            time.sleep(0.1)
        wait_for(lambda: status[-1].mode == ControllerStatus.MODE_ENABLED, 5, what="enabled by the first chunk")
        estop.publish(Bool(data=True))
        wait_for(lambda: status[-1].mode == ControllerStatus.MODE_HOLDING, 2, what="e-stop hold")
        time.sleep(1.0)  # at rest by now (the hold decelerates within limits)
        refused = call_enable()
        estop.publish(Bool(data=False))
        wait_for(lambda: status[-1].reason != "", 2, what="status after release")
        time.sleep(0.3)
        accepted = call_enable()
        wait_for(lambda: status[-1].mode == ControllerStatus.MODE_ENABLED, 3, what="enabled after release")
    assert not refused.success, refused.message
    assert accepted.success, accepted.message


@pytest.mark.parametrize("params, message", [
    ({"dry_run": False}, "a live arm needs a robot address"),
    ({"robot_ip": "172.16.0.2", "auto_enable": True}, "auto_enable is for simulators on loopback only"),
    ({"relative_dynamics_factor": 1.5}, "relative_dynamics_factor must be in [0.01, 1.0], got 1.5"),  # its range
])
def test_controller_refuses_to_start_on_an_unsafe_configuration(params, message):
    """Code defaults are a dry run with no robot address; a live arm must be named, auto_enable never
    drives a real robot, and the node says why it refuses in one line (no traceback). Nothing here opens
    a connection: each refusal comes before connecting."""
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller", params)
    try:
        rc = proc.wait(timeout=60)
    finally:
        out = stop_process(proc)
    assert rc == 2, out[-2000:]
    assert message in out and "Traceback" not in out, out[-2000:]


def test_defaults_are_a_dry_run_without_a_robot():
    from mail_msgs.msg import ControllerStatus
    from sensor_msgs.msg import JointState

    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller", {})
    try:
        with probe() as p:
            status = p.subscribe(ControllerStatus, "/mail/controller_status")
            joints = p.subscribe(JointState, "/joint_states")
            wait_for(lambda: status and joints, 30, what="status and joint states")
            s = status[-1]
            assert s.dry_run and s.mode == ControllerStatus.MODE_DISABLED
            # the stand-in arm: joints at dry_run_start, the gripper width unknown (NaN), never "closed"
            j = joints[-1]
            assert j.position[:7] == pytest.approx(START)
            assert all(math.isnan(x) for x in j.position[7:9])
    finally:
        out = stop_process(proc)
    assert "no robot (a stand-in arm echoes the commands)" in out and "Traceback" not in out, out[-2000:]


def _call(p, client_name, timeout=10):
    from std_srvs.srv import Trigger

    client = p.node.create_client(Trigger, client_name)
    assert client.wait_for_service(timeout_sec=timeout), client_name
    fut = client.call_async(Trigger.Request())
    wait_for(fut.done, timeout, what=f"{client_name} answer")
    return fut.result()


def test_an_estop_survives_a_controller_restart_until_released(tmp_path):
    """The e-stop was a volatile Bool: a restarted controller forgot it and could be enabled. Now it is
    latched in a file (and a transient-local e-stop publisher's last value also reaches a new controller)."""
    from mail_msgs.msg import ControllerStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool

    latch = tmp_path / "estop_latched"
    params = {"dry_run": True, "dry_run_start": START, "estop_latch_file": str(latch)}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller", params)
    try:
        with probe() as p:
            status = p.subscribe(ControllerStatus, "/mail/controller_status")
            estop = p.node.create_publisher(Bool, "/mail/estop", reliable)
            wait_for(lambda: status and estop.get_subscription_count() >= 1, 30, what="controller up")
            estop.publish(Bool(data=True))
            wait_for(lambda: status[-1].estop_active, 5, what="e-stop active")
            assert latch.exists()
    finally:
        stop_process(proc)
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller", params)
    try:
        with probe() as p:
            status = p.subscribe(ControllerStatus, "/mail/controller_status")
            estop = p.node.create_publisher(Bool, "/mail/estop", reliable)
            wait_for(lambda: status and estop.get_subscription_count() >= 1, 30, what="controller up again")
            assert status[-1].estop_active
            refused = _call(p, "/franka_controller/enable")
            estop.publish(Bool(data=False))
            wait_for(lambda: not status[-1].estop_active, 5, what="released")
            accepted = _call(p, "/franka_controller/enable")
    finally:
        out = stop_process(proc)
    assert not refused.success and "e-stop" in refused.message, refused.message
    assert accepted.success, accepted.message
    assert not latch.exists()
    assert "E-STOP latched before this start" in out, out[-2000:]


def test_a_latched_estop_from_a_transient_local_publisher_reaches_a_late_controller():
    from mail_msgs.msg import ControllerStatus
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool

    with probe() as p:
        estop = p.node.create_publisher(Bool, "/mail/estop", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        estop.publish(Bool(data=True))  # before the controller exists
        status = p.subscribe(ControllerStatus, "/mail/controller_status")
        proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                            {"dry_run": True, "dry_run_start": START})
        try:
            wait_for(lambda: status and status[-1].estop_active, 30, what="the latched e-stop at start-up")
            refused = _call(p, "/franka_controller/enable")
        finally:
            stop_process(proc)
    assert not refused.success and "e-stop" in refused.message


def test_a_second_publisher_of_chunks_holds_the_arm_and_blocks_enable():
    """Two sources of chunks (a second policy node, a bag played back, a teleoperation tool left running):
    neither drives; the arm holds and enable is refused while both are there."""
    from mail_msgs.msg import ActionChunk, ControllerStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                        {"dry_run": True, "dry_run_start": START, "auto_enable": True,
                         "relative_dynamics_factor": 1.0, "watchdog_timeout": 0.5})
    try:
        with probe() as p, probe("intruder") as q:
            status = p.subscribe(ControllerStatus, "/mail/controller_status")
            pub = p.node.create_publisher(ActionChunk, "/mail/action_chunk", reliable)
            wait_for(lambda: status and pub.get_subscription_count() > 0, 30, what="controller up")
            goal = list(np.array(START) + 0.1)
            seq = 0

            def feed(n):
                nonlocal seq
                for _ in range(n):
                    pub.publish(make_chunk_msg(seq, time.time(), [goal + [0.04]] * 5))
                    seq += 1
                    time.sleep(0.1)

            feed(5)
            wait_for(lambda: status[-1].mode == ControllerStatus.MODE_ENABLED, 5, what="enabled by the first chunk")
            second = q.node.create_publisher(ActionChunk, "/mail/action_chunk", reliable)
            wait_for(lambda: second.get_subscription_count() > 0, 10, what="the second publisher matched")
            feed(3)
            wait_for(lambda: status[-1].mode == ControllerStatus.MODE_HOLDING, 5, what="hold")
            held = status[-1]
            refused = _call(p, "/franka_controller/enable")
            q.node.destroy_publisher(second)
            time.sleep(0.5)
            feed(2)
            accepted = _call(p, "/franka_controller/enable")
    finally:
        stop_process(proc)
    assert "2 publishers on /mail/action_chunk" in held.reason, held.reason
    assert dict(zip(held.rejection_names, held.rejection_counts)).get("ambiguous_source", 0) >= 1
    assert not refused.success and "2 publishers" in refused.message
    assert accepted.success, accepted.message


_DYING_LOOP = """
import sys
import mail_policy_node.nodes.franka_controller_node as node
real, calls = node.run_cycle, [0]


def run_cycle(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 150:
        raise RuntimeError("injected fault in the control loop")
    return real(*args, **kwargs)


node.run_cycle = run_cycle
node.main()
"""


def test_a_dead_control_loop_is_reported_as_error_and_ends_the_process(tmp_path):
    """The status said ENABLED after the control thread had died. The fault is injected with a fake (the
    loop's own code raising: nothing outside the process can cause it); the node must report ERROR with
    the reason, stop the arm, and exit with code 1 so the launch file ends the profile."""
    import subprocess
    import sys

    from mail_msgs.msg import ControllerStatus

    script = tmp_path / "dying_loop.py"
    script.write_text(_DYING_LOOP)
    with probe() as p:
        status = p.subscribe(ControllerStatus, "/mail/controller_status")
        proc = subprocess.Popen([sys.executable, str(script), "--ros-args", "-r", "__node:=franka_controller",
                                 "-p", "dry_run:=true"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            rc = proc.wait(timeout=60)
        finally:
            out = stop_process(proc)
        wait_for(lambda: any(s.mode == ControllerStatus.MODE_ERROR for s in status), 5, what="the ERROR status")
    assert rc == 1, out[-2000:]
    error = [s for s in status if s.mode == ControllerStatus.MODE_ERROR][-1]
    assert "control loop died" in error.reason and "injected fault" in error.reason
    assert "control loop died" in out


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


@pytest.mark.parametrize("behind_s, refused", [(0.01, False), (0.3, True)])
def test_a_controller_whose_clock_is_behind_refuses_chunks_from_its_future_and_reports_the_offset(behind_s, refused):
    """Chunks were accepted stamped up to 1 s ahead and the clock offset between the GPU box and the
    real-time PC was neither measured nor bounded. The controller's wall clock is put behind this process's
    with libfaketime (the one way to give one process on this kernel another wall clock): within
    max_clock_offset the chunks run; beyond it they are refused as stamped in the future; either way
    chunk_age_min_ms shows the offset."""
    import os

    from mail_msgs.msg import ActionChunk, ControllerStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    if not os.path.exists(FAKETIME):
        pytest.skip("needs libfaketime (scripts/setup_env.sh installs it; the core's clock tests are the twin)")
    env = {**os.environ, "LD_PRELOAD": FAKETIME, "FAKETIME": f"{-behind_s:+.3f}"}
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                        {"dry_run": True, "dry_run_start": START, "auto_enable": True, "max_clock_offset": 0.05},
                        env=env)
    try:
        with probe() as p:
            status = p.subscribe(ControllerStatus, "/mail/controller_status")
            pub = p.node.create_publisher(ActionChunk, "/mail/action_chunk",
                                          QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
            wait_for(lambda: status and pub.get_subscription_count() > 0, 30, what="controller up")
            for seq in range(10):
                pub.publish(make_chunk_msg(seq, time.time(), [START + [0.04]] * 5))
                time.sleep(0.1)
            wait_for(lambda: status[-1].chunks_received >= 10, 5, what="chunks counted")
            s = status[-1]
    finally:
        stop_process(proc)
    rejections = dict(zip(s.rejection_names, s.rejection_counts))
    if refused:
        assert rejections.get("stamp_in_future", 0) >= 9 and s.mode != ControllerStatus.MODE_ENABLED, (rejections, s)
        assert s.chunk_age_min_ms < -200.0, s.chunk_age_min_ms
    else:
        assert not rejections and s.mode == ControllerStatus.MODE_ENABLED, (rejections, s.reason)
        assert s.chunk_age_min_ms < 5.0, s.chunk_age_min_ms  # ~ the latency minus 10 ms


def test_auto_enable_is_not_re_armed_by_an_estop_release():
    """auto_enable (simulators) stayed armed through an e-stop: releasing it let the next chunk enable the
    arm without anyone asking. Now any e-stop, disable or enable call disarms it."""
    from mail_msgs.msg import ActionChunk, ControllerStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                        {"dry_run": True, "dry_run_start": START, "auto_enable": True})
    try:
        with probe() as p:
            status = p.subscribe(ControllerStatus, "/mail/controller_status")
            pub = p.node.create_publisher(ActionChunk, "/mail/action_chunk", reliable)
            estop = p.node.create_publisher(Bool, "/mail/estop", reliable)
            wait_for(lambda: status and pub.get_subscription_count() and estop.get_subscription_count(), 30,
                     what="controller up")
            estop.publish(Bool(data=True))
            wait_for(lambda: status[-1].estop_active, 5, what="e-stop")
            estop.publish(Bool(data=False))
            wait_for(lambda: not status[-1].estop_active, 5, what="released")
            for seq in range(5):
                pub.publish(make_chunk_msg(seq, time.time(), [START + [0.04]] * 5))
                time.sleep(0.1)
            wait_for(lambda: status[-1].chunks_received >= 5, 5, what="chunks counted")
            mode = status[-1].mode
    finally:
        stop_process(proc)
    assert mode == ControllerStatus.MODE_DISABLED, mode
