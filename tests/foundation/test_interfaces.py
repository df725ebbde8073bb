"""mail_msgs: import, DDS exchange between two processes, and rosbag2 round trip."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PEER = Path(__file__).with_name("chunk_peer.py")


def test_mail_msgs_import_and_constants():
    from mail_msgs.msg import ActionChunk, ControllerStatus, PolicyStatus

    from mail_policy_node.spec import ACTION_SPACES

    # every action space a chunk may name has its constant, as spec.py spells it (one home: spec.ACTION_SPACES)
    for space in ACTION_SPACES:
        assert getattr(ActionChunk, f"ACTION_SPACE_{space.upper()}", None) == space, space
    assert PolicyStatus.STATE_LOADING == 2 and PolicyStatus.STATE_ERROR == 3
    assert ControllerStatus.MODE_HOLDING == 2
    m = ActionChunk()
    m.actions = [1.5, -2.0]
    assert list(m.actions) == [1.5, -2.0]


@pytest.mark.ros
def test_two_processes_exchange_action_chunk_over_dds():
    talker = subprocess.Popen([sys.executable, str(PEER), "talk", "60"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        listener = subprocess.run([sys.executable, str(PEER), "listen", "45"],
                                  capture_output=True, text=True, timeout=90)
    finally:
        talker.terminate()
        talker.wait(timeout=10)
    assert listener.returncode == 0, f"no chunk received over DDS: {listener.stderr[-2000:]}"
    got = json.loads(listener.stdout.strip().splitlines()[-1])
    seq = got["sequence"]
    assert got["policy_id"] == "0123456789abcdef"
    assert got["action_space"] == "joint_position"
    assert got["names"][:1] == ["fr3_joint1"] and got["names"][-1] == "gripper"
    assert (got["horizon"], got["dimension"], got["dt_ns"]) == (5, 8, 100_000_000)
    np.testing.assert_allclose(got["actions"], [seq + 0.001 * i for i in range(40)])


def test_action_chunk_rosbag2_round_trip_deserialises_with_rclpy(tmp_path):
    from builtin_interfaces.msg import Time
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    from mail_msgs.msg import ActionChunk
    from mail_policy_node.data.rosbag_types import typestore

    sys.path.insert(0, str(PEER.parent))
    from chunk_peer import make_chunk

    store = typestore()
    msgs = [make_chunk(i, Time(sec=100 + i, nanosec=5)) for i in range(3)]
    bag = tmp_path / "chunks"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/mail/action_chunk", "mail_msgs/msg/ActionChunk", typestore=store)
        for m in msgs:
            # rclpy's bytes go into the bag as they are: the two serialisations must be interchangeable.
            writer.write(conn, m.header.stamp.sec * 10**9, serialize_message(m))
    assert list(bag.glob("*.mcap")), "no mcap file written"

    with Reader(bag) as reader:
        rows = list(reader.messages())
    assert len(rows) == 3
    for (conn, _t, raw), original in zip(rows, msgs):
        assert conn.msgtype == "mail_msgs/msg/ActionChunk"
        back = deserialize_message(raw, ActionChunk)
        assert back == original
        decoded = store.deserialize_cdr(raw, conn.msgtype)
        assert decoded.sequence == original.sequence
        np.testing.assert_array_equal(decoded.actions, np.asarray(original.actions))
        # and rosbags' own serialisation reads back in rclpy as the same message (bytes may differ
        # only in alignment padding, which rclpy leaves uninitialised)
        assert deserialize_message(bytes(store.serialize_cdr(decoded, conn.msgtype)), ActionChunk) == original
