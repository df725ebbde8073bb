"""Bag player node: publishes a recorded rosbag2 (mcap or sqlite3) in real time into a running stack.

Camera images, camera info and joint states are published with their recorded types and relative
timing; header stamps are shifted by one constant so the newest message is "now" when it is published
(the policy's max-age check then sees them as live), which keeps every time difference between streams
exactly as recorded. Only observations are replayed: commanded actions (``/mail/action_command``) and
other topics are skipped. Publishing starts, within one bounded wait, once every camera image topic
has a subscriber and, with ``wait_for_policy``, the policy node reports a loaded checkpoint and
at least ``wait_for_chunk_subscribers`` subscribers matched by its chunk publisher (the chunk recorder).
So the beginning of the recording is not lost: a policy node subscribes before its checkpoint has
loaded (frames that arrive meanwhile are not run), and chunks published before the recorder is
matched are not delivered (the first 3 of 10 under load). The count comes from the publisher's side
of the match, the side that decides delivery; the player's own view of the graph was not enough.
"""

from __future__ import annotations

import importlib
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from std_msgs.msg import String

from mail_policy_node.nodes import construct, forward_python_logging, refuse_sim_time, shut_down, wait_for_listeners
from mail_policy_node.nodes.diagnostics import OK, Diagnostics
from mail_policy_node.nodes.parameters import declare_table
from mail_policy_node.nodes.ros_convert import from_time, to_time
from mail_policy_node.parameters import Parameter
from mail_policy_node.spec import TOPIC_EPISODE, TOPIC_JOINT_STATES, relative

CAMERA_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo")

BAG_PLAYER_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("bag", "", "the recorded rosbag2 folder (mcap or sqlite3) to play; required"),
    Parameter("rate", 1.0, "playback speed; 1.0 = the recorded timing", 0.01, 100.0),
    Parameter("wait_for_subscribers", 10.0, "[s] at most, before publishing, for a subscriber on every camera "
              "image topic (and the policy, with wait_for_policy); then it plays anyway", 0.0, 3600.0),
    Parameter("wait_for_policy", False, "also wait for the policy node to report a loaded checkpoint"),
    Parameter("wait_for_chunk_subscribers", 0, "with wait_for_policy: ... and this many subscribers matched by its "
              "chunk publisher (the chunk recorder)", 0, 100),
)


def replayed(conn) -> bool:
    """Observations (camera images and info, the arm's joint states) and episode events."""
    return conn.msgtype in CAMERA_TYPES or conn.topic in (TOPIC_JOINT_STATES, TOPIC_EPISODE)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class BagPlayerNode(Node):
    def __init__(self):
        super().__init__("bag_player")
        refuse_sim_time(self)
        p = declare_table(self, BAG_PLAYER_PARAMETERS)
        self.bag, self.rate, self.wait_for = p["bag"], p["rate"], p["wait_for_subscribers"]
        self.wait_for_policy, self.wait_for_chunk_subscribers = p["wait_for_policy"], p["wait_for_chunk_subscribers"]
        self.policy_ready = False
        if self.wait_for_policy:
            from mail_msgs.msg import PolicyStatus

            from mail_policy_node.spec import TOPIC_POLICY_STATUS

            def on_status(m):
                self.policy_ready = self.policy_ready or (
                    bool(m.policy_id) and m.state != PolicyStatus.STATE_LOADING
                    and m.chunk_subscribers >= self.wait_for_chunk_subscribers)

            self.create_subscription(PolicyStatus, relative(TOPIC_POLICY_STATUS), on_status, 10)
        if not self.bag:
            raise ValueError("bag_player needs the `bag` parameter (a rosbag2 folder)")
        self.done = False
        self.diagnostics = Diagnostics(self, hardware_id=self.bag)

    def play(self) -> int:
        from rosbags.rosbag2 import Reader

        with Reader(self.bag) as reader:
            conns = [c for c in reader.connections if replayed(c)]
            if not conns:
                raise ValueError(f"{self.bag} has no camera, joint-state or episode topics to replay")
            pubs = {}
            for c in conns:
                cls = String if c.topic == TOPIC_EPISODE else message_class(c.msgtype)
                qos = 10 if c.topic == TOPIC_EPISODE else qos_profile_sensor_data
                pubs[c.topic] = (self.create_publisher(cls, relative(c.topic), qos), cls)  # into this node's namespace
            cameras = [p for t, (p, cls) in pubs.items() if t.endswith(("/image_raw", "/compressed"))]
            self.wait_until_ready(cameras)
            t0_wall, t0_bag, shift, n = None, None, None, 0
            for conn, t_ns, raw in reader.messages(connections=conns):
                pub, cls = pubs[conn.topic]
                msg = deserialize_message(bytes(raw), cls)
                t_bag = t_ns * 1e-9
                if t0_bag is None:
                    t0_wall, t0_bag = time.time(), t_bag
                    shift = t0_wall - t_bag
                delay = t0_wall + (t_bag - t0_bag) / self.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                if hasattr(msg, "header"):
                    msg.header.stamp = to_time(from_time(msg.header.stamp) + shift)
                pub.publish(msg)
                n += 1
                self.diagnostics.update(OK, "playing", {"messages": n, "bag_time_s": t_bag - t0_bag})
            self.get_logger().info(f"replayed {n} messages from {self.bag} "
                                   f"({(t_bag - t0_bag) if t0_bag is not None else 0:.1f} s of recording)")
        self.done = True
        self.diagnostics.update(OK, "played", {"messages": n}, force=True)
        return n

    def waiting_for(self, cameras) -> list[str]:
        """What publishing still waits for (empty: ready)."""
        missing = [p.topic_name for p in cameras if p.get_subscription_count() == 0]
        if self.wait_for_policy and not self.policy_ready:
            missing.append(f"a policy with a loaded checkpoint and {self.wait_for_chunk_subscribers} "
                           "chunk subscriber(s)")
        return missing

    def wait_until_ready(self, cameras) -> None:
        missing = wait_for_listeners(lambda: self.waiting_for(cameras), self.wait_for,
                                     lambda dt: rclpy.spin_once(self, timeout_sec=dt))
        if missing:
            self.get_logger().warn(f"still waiting for {', '.join(missing)} after {self.wait_for} s; playing "
                                   "anyway (the first frames may not be run or their chunks not recorded)")


def main(args=None):
    rclpy.init(args=args)
    node = construct(BagPlayerNode)
    forward_python_logging(node)
    try:
        node.play()
        # stay up briefly so late subscribers drain their queues, then exit (the profile ends)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        shut_down()


if __name__ == "__main__":
    main()
