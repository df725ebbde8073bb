"""The policy node's `real_time_chunking` parameter, real processes over DDS: two policy nodes on one tiny
DDPM checkpoint (J = 6, a real safetensors checkpoint), replanning every tick (execution_horizon 1), fed the
same constant camera frames and joint state by this process; one with real-time chunking, one without.
Each new chunk's first action is compared with what the node's previous chunk planned for that time: with
real-time chunking the new chunk is pulled to the overlap, so that jump is much smaller; without, each
chunk starts wherever its noise puts it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.rosutil import feed_constant_sensors, node_process, probe, stop_process, wait_for

pytestmark = pytest.mark.ros
NODES = {"rtc": True, "plain": False}  # node suffix -> its real_time_chunking parameter
ARM = [0.1] * 7
FINGERS = [0.02, 0.02]


@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory):
    from tests.policy.ckpts import make_checkpoint

    root = tmp_path_factory.mktemp("rtc_ckpts")
    make_checkpoint(root / "ddpm", preset="d_ma_ddpm", j=6)
    return root


def boundary_jumps(msgs) -> list[float]:
    """For each chunk after the first (consecutive sequences only): the largest joint change between its first
    action and the previous chunk's plan at that action's due time."""
    from mail_policy_node.nodes.ros_convert import chunk_from_msg

    chunks = [chunk_from_msg(m) for m in msgs]
    jumps = []
    for old, new in zip(chunks, chunks[1:]):
        if new.sequence != old.sequence + 1:
            continue
        due = new.due_times()[0]
        planned = np.array([np.interp(due, old.due_times(), old.actions[:, k]) for k in range(7)])
        jumps.append(float(np.abs(new.actions[0, :7] - planned).max()))
    return jumps


def test_real_time_chunking_through_the_node_keeps_the_overlap(checkpoint_root):
    from mail_msgs.msg import ActionChunk
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from tests.policy.ckpts import SIZE

    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    with probe() as p:
        chunks = {n: p.subscribe(ActionChunk, f"/{n}/action_chunk", reliable) for n in NODES}
        nodes = {n: node_process("mail_policy_node.nodes.policy_node", f"policy_{n}",
                                 {"checkpoint_root": str(checkpoint_root), "checkpoint": "ddpm", "rate_hz": 10.0,
                                  "execution_horizon": 1, "real_time_chunking": rtc, "cpu_threads": 1},
                                 remaps={"/mail/action_chunk": f"/{n}/action_chunk",
                                         "/mail/policy_status": f"/{n}/policy_status"})
                 for n, rtc in NODES.items()}
        stop = threading.Event()
        feeder = threading.Thread(target=feed_constant_sensors, args=(p, stop, 120, SIZE, ARM, FINGERS),
                                  daemon=True)
        feeder.start()
        try:
            for n in NODES:
                wait_for(lambda n=n: len(chunks[n]) >= 21, 120, what=f"21 chunks from the {n} node")
        finally:
            stop.set()
            feeder.join(timeout=5)
            outputs = {n: stop_process(proc) for n, proc in nodes.items()}
    jumps = {n: boundary_jumps(chunks[n][:21]) for n in NODES}
    for n in NODES:
        assert len(jumps[n]) >= 15, (n, outputs[n][-2000:])
        assert all(c.execute_horizon == 1 and c.horizon == 6 for c in chunks[n]), n
    rtc, plain = np.median(jumps["rtc"]), np.median(jumps["plain"])
    assert plain > 0.01, plain  # without, each chunk starts where its noise puts it
    assert rtc < 0.5 * plain, (rtc, plain)
