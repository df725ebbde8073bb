"""Faults between policy and controller, with real processes over DDS (controller in dry run):
the policy node killed (SIGKILL) or hung (SIGSTOP: alive but silent). In both cases the controller
must hold (decelerate to rest) within the watchdog timeout + one cycle after the last chunk, and must
not resume by itself when the policy comes back."""

import signal
import threading
import time

import numpy as np
import pytest

from tests.nodes.test_controller_node import START
from tests.policy.ckpts import SIZE, make_checkpoint
from tests.rosutil import node_process, private_domain, probe, stop_process, wait_for

pytestmark = pytest.mark.ros
WATCHDOG = 0.3
STATUS_PERIOD = 0.1


@pytest.fixture
def domain():
    with private_domain() as d:
        yield d


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_controller_holds_when_the_policy_dies_or_hangs(tmp_path, fault, domain):
    from mail_msgs.msg import ActionChunk, ControllerStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from mail_policy_node.nodes.ros_convert import image_msg

    make_checkpoint(tmp_path / "tiny", seed=0, joint=False)
    stop = threading.Event()
    policy = controller = None
    try:
        # the probe joins the graph first: with localhost discovery a participant that comes up after
        # many others on the host was seen to hear nobody (its announcements still went out)
        with probe() as p:
            chunks = p.subscribe(ActionChunk, "/mail/action_chunk",
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
            status = p.subscribe(ControllerStatus, "/mail/controller_status")
            commands = p.subscribe(JointState, "/mail/action_command")
            policy = node_process("mail_policy_node.nodes.policy_node", "policy_node",
                                  {"checkpoint_root": str(tmp_path), "checkpoint": "tiny", "rate_hz": 10.0})
            controller = node_process("mail_policy_node.nodes.franka_controller_node", "franka_controller",
                                      {"dry_run": True, "auto_enable": True, "watchdog_timeout": WATCHDOG,
                                       "dry_run_start": START, "max_tracking_error": 0.0})
            pubs = {c: p.node.create_publisher(Image, f"/camera/{c}/image_raw", qos_profile_sensor_data)
                    for c in ("agentview", "wrist")}

            def cameras():
                k = 0
                while not stop.is_set():
                    now = time.time()
                    for c, pub in pubs.items():
                        pub.publish(image_msg(np.full((SIZE, SIZE, 3), k % 250, np.uint8), now, c))
                    k += 1
                    time.sleep(0.05)

            feeder = threading.Thread(target=cameras, daemon=True)
            feeder.start()
            wait_for(lambda: len(chunks) >= 5 and status and status[-1].mode == ControllerStatus.MODE_ENABLED,
                     90, what=f"policy driving the controller ({len(chunks)} chunks, "
                     f"mode {status[-1].mode if status else None}: {status[-1].reason if status else None})")
            policy.send_signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
            t_fault = time.time()
            wait_for(lambda: status[-1].mode == ControllerStatus.MODE_HOLDING, 5, what="hold after the fault")
            t_hold_seen = time.time()
            t_last_chunk = p.arrivals["/mail/action_chunk"][-1]
            wait_for(lambda: len(commands) > 10 and np.allclose(commands[-1].velocity[:7], 0.0, atol=1e-9), 5,
                     what="at rest")
            if fault == "hung":
                policy.send_signal(signal.SIGCONT)  # the policy comes back: chunks flow again
                n = len(chunks)
                wait_for(lambda: len(chunks) > n + 2, 30, what="chunks after the policy recovered")
                time.sleep(0.5)
                assert status[-1].mode == ControllerStatus.MODE_HOLDING, "resumed without an explicit enable"
            stop.set()
            feeder.join(timeout=5)
    finally:
        stop.set()
        if fault == "hung" and policy is not None:
            policy.send_signal(signal.SIGCONT)
        outputs = [stop_process(proc) if proc is not None else "" for proc in (policy, controller)]
        print("policy output:\n" + outputs[0][-1500:] + "\ncontroller output:\n" + outputs[1][-1500:])
    hold_after_last_chunk = t_hold_seen - t_last_chunk
    # the watchdog trips WATCHDOG after the last chunk (or when its actions ran out, whichever is first);
    # the status that shows it is published every STATUS_PERIOD; DDS and scheduling add a little
    assert hold_after_last_chunk <= WATCHDOG + 0.01 + STATUS_PERIOD + 0.25, hold_after_last_chunk
    print(f"{fault}: hold seen {hold_after_last_chunk * 1e3:.0f} ms after the last chunk, "
          f"{(t_hold_seen - t_fault) * 1e3:.0f} ms after the fault")
