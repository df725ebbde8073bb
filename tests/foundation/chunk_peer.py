"""A separate process that talks or listens on /mail/action_chunk (used by test_dds.py).

talk:   publish ActionChunk messages (sequence 0, 1, ...) at 20 Hz until killed.
listen: wait for the first chunk, print its fields as one JSON line, exit 0 (exit 3 on timeout).
"""

import json
import sys
import time

import rclpy
from builtin_interfaces.msg import Duration
from mail_msgs.msg import ActionChunk
from rclpy.qos import QoSProfile, ReliabilityPolicy

from mail_policy_node.spec import FR3_JOINT_NAMES, GRIPPER_NAME, TOPIC_ACTION_CHUNK

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def make_chunk(seq: int, stamp) -> ActionChunk:
    names = list(FR3_JOINT_NAMES) + [GRIPPER_NAME]
    m = ActionChunk()
    m.header.stamp = stamp
    m.header.frame_id = "fr3_link0"
    m.policy_id = "0123456789abcdef"
    m.checkpoint = "peer-test"
    m.sequence = seq
    m.action_space = ActionChunk.ACTION_SPACE_JOINT_POSITION
    m.dimension_names = names
    m.dt = Duration(sec=0, nanosec=100_000_000)
    m.horizon = 5
    m.dimension = len(names)
    m.execute_horizon = 5
    m.actions = [float(seq) + 0.001 * i for i in range(m.horizon * m.dimension)]
    return m


def main(mode: str, timeout: float) -> int:
    rclpy.init()
    node = rclpy.create_node(f"chunk_{mode}")
    try:
        if mode == "talk":
            pub = node.create_publisher(ActionChunk, TOPIC_ACTION_CHUNK, QOS)
            seq = 0
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pub.publish(make_chunk(seq, node.get_clock().now().to_msg()))
                seq += 1
                rclpy.spin_once(node, timeout_sec=0.05)
            return 0
        received = []
        node.create_subscription(ActionChunk, TOPIC_ACTION_CHUNK, received.append, QOS)
        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        if not received:
            return 3
        m = received[0]
        print(json.dumps({"sequence": m.sequence, "policy_id": m.policy_id, "action_space": m.action_space,
                          "names": list(m.dimension_names), "horizon": m.horizon, "dimension": m.dimension,
                          "dt_ns": m.dt.nanosec, "actions": list(m.actions)}), flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 30.0))
