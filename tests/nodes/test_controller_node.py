"""Franka controller node as a real process over DDS, in dry-run mode (no robot: the arm echoes the
filtered command). The franky-sim variant is in test_sim_profile.py."""

import time

import numpy as np
import pytest

from mail_policy_node.control.safety import Limit
from tests.rosutil import node_process, probe, stop_process, wait_for

pytestmark = pytest.mark.ros

START = [0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785]


def make_chunk_msg(seq, stamp_s, targets, dt=0.1):
    from mail_policy_node.control.chunks import ActionChunk
    from mail_policy_node.nodes.ros_convert import chunk_to_msg
    from mail_policy_node.spec import FR3_JOINT_NAMES, GRIPPER_NAME

    return chunk_to_msg(ActionChunk(stamp=stamp_s, start_offset=0.0, dt=dt, actions=np.asarray(targets, float),
                                    names=FR3_JOINT_NAMES + (GRIPPER_NAME,), policy_id="test", sequence=seq))


@pytest.fixture
def controller():
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                        {"dry_run": True, "auto_enable": True, "watchdog_timeout": 0.3,
                         "control_rate_hz": 100.0, "dry_run_start": START})
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
        goal = np.array(START) + np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, -0.3])
        t_feed_end = time.time() + 2.5
        seq = 0
        while time.time() < t_feed_end:  # a policy at 10 Hz sending chunks of 5 x 0.1 s toward the goal
            now = time.time()
            pub.publish(make_chunk_msg(seq, now, [list(goal) + [0.04]] * 5))
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


def test_controller_refuses_limits_franky_would_clip():
    """A relative dynamics factor under the safety filter's limits would make franky clip the filter's
    commands (tracking errors, reflex stops): the node does not start, and says what to change."""
    proc = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                        {"dry_run": True, "relative_dynamics_factor": 0.2, "velocity_scale": 0.5})
    try:
        rc = proc.wait(timeout=60)
    finally:
        out = stop_process(proc)
    assert rc != 0
    assert "relative_dynamics_factor is too low" in out and "velocity" in out, out[-2000:]
