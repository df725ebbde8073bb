"""Chunk recorder node: writes the stack's ActionChunks, PolicyStatus and commanded actions into a new
rosbag2 (mcap), so `mail-il replay` can score what the live policy node produced."""

from __future__ import annotations

import threading

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState

from mail_msgs.msg import ActionChunk, PolicyStatus
from mail_policy_node.nodes import refuse_sim_time, run
from mail_policy_node.nodes.diagnostics import OK, Diagnostics
from mail_policy_node.nodes.parameters import declare_table
from mail_policy_node.parameters import Parameter
from mail_policy_node.spec import TOPIC_ACTION_CHUNK, TOPIC_ACTION_COMMAND, TOPIC_POLICY_STATUS, relative

RECORDED = ((TOPIC_ACTION_CHUNK, ActionChunk, "mail_msgs/msg/ActionChunk"),
            (TOPIC_POLICY_STATUS, PolicyStatus, "mail_msgs/msg/PolicyStatus"),
            (TOPIC_ACTION_COMMAND, JointState, "sensor_msgs/msg/JointState"))

CHUNK_RECORDER_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("output_bag", "", "a new folder (it must not exist yet) the chunks are recorded into, as mcap; "
              "required"),
)


class ChunkRecorderNode(Node):
    def __init__(self):
        super().__init__("chunk_recorder")
        refuse_sim_time(self)
        path = declare_table(self, CHUNK_RECORDER_PARAMETERS)["output_bag"]
        if not path:
            raise ValueError("chunk_recorder needs the `output_bag` parameter (a folder that does not exist yet)")
        from rosbags.rosbag2 import StoragePlugin, Writer

        from mail_policy_node.data.rosbag_types import typestore

        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.lock = threading.Lock()
        self.count = 0
        self.diagnostics = Diagnostics(self, hardware_id=str(path))
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls, msgtype in RECORDED:
            conn = self.writer.add_connection(topic, msgtype, typestore=typestore())
            self.create_subscription(cls, relative(topic), lambda m, c=conn: self.write(c, m), reliable)

    def write(self, conn, msg) -> None:
        stamp = msg.header.stamp
        with self.lock:
            self.writer.write(conn, stamp.sec * 1_000_000_000 + stamp.nanosec, serialize_message(msg))
            self.count += 1
            self.diagnostics.update(OK, "recording", {"messages": self.count})

    def destroy_node(self):
        with self.lock:
            self.writer.close()
        self.get_logger().info(f"recorded {self.count} messages")
        return super().destroy_node()


def main(args=None):
    run(ChunkRecorderNode, args)


if __name__ == "__main__":
    main()
