"""Policy node as a real process over DDS: chunks from synchronised camera and joint-state topics,
checkpoint hot swap through the `checkpoint` parameter (refusals keep the old policy running, a valid
swap lands at a chunk boundary without a missed chunk), status published."""

import threading
import time

import numpy as np
import pytest

from tests.policy.ckpts import SIZE, make_checkpoint, make_nan_checkpoint
from tests.rosutil import node_process, probe, stop_process, wait_for

pytestmark = pytest.mark.ros


def set_checkpoint(node, value, timeout=120.0):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(node, "policy_node")
    assert client.wait_for_services(timeout_sec=30)
    future = client.set_parameters([Parameter("checkpoint", value=value)])
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.done(), "set_parameters did not answer"
    return future.result().results[0]


def feed_sensors(p, stop, lead=(0.0,)) -> threading.Thread:
    """Both cameras at 20 Hz (frame k filled with k % 250) and a joint state with each frame (arm at 0, the
    gripper open 4 cm: a non-zero state), stamped now + lead[0] (a list: the test may change it), until
    ``stop``. Returns the running thread."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from mail_policy_node.nodes.ros_convert import image_msg, to_time

    pubs = {c: p.node.create_publisher(Image, f"/camera/{c}/image_raw", qos_profile_sensor_data)
            for c in ("agentview", "wrist")}
    jpub = p.node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    names = [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"]

    def sensors():
        k = 0
        while not stop.is_set():
            t = time.time() + lead[0]
            for c, pub in pubs.items():
                pub.publish(image_msg(np.full((SIZE, SIZE, 3), k % 250, np.uint8), t, c))
            js = JointState(name=names, position=[0.0] * 7 + [0.02, 0.02])
            js.header.stamp = to_time(t + 0.001)
            jpub.publish(js)
            k += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=sensors, daemon=True)
    feeder.start()
    return feeder


def test_policy_node_publishes_chunks_and_hot_swaps(tmp_path):
    from mail_msgs.msg import ActionChunk, PolicyStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    root = tmp_path / "ckpts"
    make_checkpoint(root / "a", seed=0)
    make_checkpoint(root / "b", seed=1)
    make_checkpoint(root / "one_camera", seed=2, cameras=("agentview",))
    (root / "policy.pt").write_bytes(b"\x80\x04\x95")
    node = node_process("mail_policy_node.nodes.policy_node", "policy_node",
                        {"checkpoint_root": str(root), "checkpoint": "a", "rate_hz": 10.0})
    stop = threading.Event()
    try:
        with probe() as p:
            chunks = p.subscribe(ActionChunk, "/mail/action_chunk",
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
            status = p.subscribe(PolicyStatus, "/mail/policy_status",
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
            feeder = feed_sensors(p, stop)
            wait_for(lambda: len(chunks) >= 3, 90, what="first chunks from checkpoint a")
            a_id = chunks[-1].policy_id

            refused = {}
            for name in ("one_camera", "../outside", "policy.pt", "missing"):
                r = set_checkpoint(p.node, name)
                refused[name] = (r.successful, r.reason)
            n_before = len(chunks)
            wait_for(lambda: len(chunks) >= n_before + 2, 30, what="chunks continue after refusals")
            assert all(c.policy_id == a_id for c in chunks)

            r = set_checkpoint(p.node, "b")
            assert r.successful, r.reason
            # the load announces itself: a LOADING status naming b, while a still runs
            loading_b = wait_for(lambda: next((s for s in list(status) if s.state == PolicyStatus.STATE_LOADING
                                               and "'b'" in s.reason), None), 10, what="a status loading b")
            wait_for(lambda: chunks[-1].policy_id != a_id, 30, what="chunks from checkpoint b")
            wait_for(lambda: len(chunks) >= 3 + n_before + 4, 30, what="more chunks")
            # then LOADING until the swap at the next chunk boundary, then running b
            last_status = wait_for(lambda: status[-1] if status[-1].checkpoint == "b" and
                                   status[-1].state == PolicyStatus.STATE_RUNNING else None, 10,
                                   what="a status reporting b running")
            stop.set()
            feeder.join(timeout=5)
    finally:
        stop.set()
        out = stop_process(node)

    for name, (ok, _reason) in refused.items():
        assert not ok, f"{name} was accepted"
    assert "cameras" in refused["one_camera"][1]
    assert "outside" in refused["../outside"][1]
    assert "folder" in refused["policy.pt"][1] or "pickle" in refused["policy.pt"][1]
    assert "not found" in refused["missing"][1]
    seqs = [c.sequence for c in chunks]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"missed or repeated chunks: {seqs}\n{out[-2000:]}"
    ids = [c.policy_id for c in chunks]
    switch = ids.index(chunks[-1].policy_id)
    assert all(i == a_id for i in ids[:switch]) and all(i != a_id for i in ids[switch:])
    c = chunks[-1]
    assert (c.horizon, c.dimension, c.execute_horizon) == (3, 8, 3) and len(c.actions) == 24
    assert c.dimension_names[0] == "fr3_joint1" and c.checkpoint == "b"
    stamp = c.header.stamp.sec + 1e-9 * c.header.stamp.nanosec
    assert abs(stamp - time.time()) < 5.0
    assert loading_b.checkpoint == "a" and "keeps going" in loading_b.reason
    assert last_status.state == PolicyStatus.STATE_RUNNING and last_status.checkpoint == "b"
    assert last_status.chunks_published >= 1 and last_status.latency_p99_ms > 0


def test_inputs_whose_stamps_step_back_are_reported_and_the_policy_goes_on(tmp_path):
    """Camera frames and joint states stamped 0.45 s ahead (a sensor host whose clock ran ahead), then
    corrected (stamps step back 0.45 s). Before the fix nothing said so: the step showed up nowhere in
    PolicyStatus or the log. Now it is counted in PolicyStatus (sync_backward_stamp,
    sync_time_base_restart), logged, and chunks continue in the corrected time base."""
    from mail_msgs.msg import ActionChunk, PolicyStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    root = tmp_path / "ckpts"
    make_checkpoint(root / "a", seed=0)
    node = node_process("mail_policy_node.nodes.policy_node", "policy_node",
                        {"checkpoint_root": str(root), "checkpoint": "a", "rate_hz": 10.0, "max_age": 0.15})
    stop = threading.Event()
    lead = [0.45]
    try:
        with probe() as p:
            reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
            chunks = p.subscribe(ActionChunk, "/mail/action_chunk", reliable)
            status = p.subscribe(PolicyStatus, "/mail/policy_status",
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
            feeder = feed_sensors(p, stop, lead)
            wait_for(lambda: len(chunks) >= 3, 90, what="chunks with stamps ahead")
            n_ahead = len(chunks)
            lead[0] = 0.0  # the clock is corrected: every stamp steps back 0.45 s
            arrivals = p.arrivals["/mail/action_chunk"]

            def corrected():  # chunks computed from corrected stamps: stamped before they arrived
                return sum(1 for c, t in list(zip(chunks, arrivals))[n_ahead:] if stamp_of(c) < t)

            wait_for(lambda: corrected() >= 3, 30, what="chunks in the corrected time base")

            def reported():
                s = status[-1]
                counts = dict(zip(s.drop_causes, s.drop_counts))
                return counts if counts.get("sync_time_base_restart", 0) >= 1 else None

            counts = wait_for(reported, 10, what="a status reporting the time base restart")
            stop.set()
            feeder.join(timeout=5)
    finally:
        stop.set()
        out = stop_process(node)
    assert counts["sync_backward_stamp"] >= 1, counts
    # the log is throttled (one line per 5 s): the restart itself is asserted on the status above
    assert "input stamps went backwards" in out, out[-3000:]
    assert counts["sync_time_base_restart"] >= 1, counts
    seqs = [c.sequence for c in chunks]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def test_a_swap_to_a_policy_whose_chunks_are_nan_is_undone_while_chunks_keep_flowing(tmp_path):
    """A checkpoint that loads and warms up but yields NaN on every real observation is accepted by the
    swap (nothing can tell before it runs); after failed_chunks refusals the old one drives again, the
    `checkpoint` parameter reads the old name again, and the status and log say which one failed and why."""
    from mail_msgs.msg import ActionChunk, PolicyStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    root = tmp_path / "ckpts"
    make_checkpoint(root / "a", seed=0)
    make_nan_checkpoint(root / "nan")
    node = node_process("mail_policy_node.nodes.policy_node", "policy_node",
                        {"checkpoint_root": str(root), "checkpoint": "a", "rate_hz": 10.0, "failed_chunks": 3})
    stop = threading.Event()
    try:
        with probe() as p:
            chunks = p.subscribe(ActionChunk, "/mail/action_chunk",
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
            status = p.subscribe(PolicyStatus, "/mail/policy_status",
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
            feeder = feed_sensors(p, stop)
            wait_for(lambda: len(chunks) >= 3, 90, what="first chunks from checkpoint a")
            a_id = chunks[-1].policy_id
            r = set_checkpoint(p.node, "nan")
            assert r.successful, r.reason  # it loads and warms up: only running it shows the fault
            undone = wait_for(lambda: next((s for s in list(status) if "undone" in s.reason), None), 30,
                              what="a status saying the swap was undone")
            n = len(chunks)
            wait_for(lambda: len(chunks) >= n + 5, 30, what="chunks after the undo")
            from rclpy.parameter_client import AsyncParameterClient

            client = AsyncParameterClient(p.node, "policy_node")
            future = client.get_parameters(["checkpoint"])
            wait_for(future.done, 10, what="the checkpoint parameter")
            param = future.result().values[0].string_value
            stop.set()
            feeder.join(timeout=5)
    finally:
        stop.set()
        out = stop_process(node)
    assert all(c.policy_id == a_id for c in chunks), {c.policy_id for c in chunks}
    seqs = [c.sequence for c in chunks]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert undone.state == PolicyStatus.STATE_RUNNING and undone.checkpoint == "a", undone
    assert "'nan'" in undone.reason and "NaN" in undone.reason, undone.reason
    assert dict(zip(undone.drop_causes, undone.drop_counts)).get("nan_output", 0) >= 3
    assert param == "a"
    assert "swap undone: checkpoint 'nan'" in out, out[-3000:]


def stamp_of(chunk) -> float:
    return chunk.header.stamp.sec + 1e-9 * chunk.header.stamp.nanosec
