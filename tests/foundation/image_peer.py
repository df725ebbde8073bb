"""Publishes N 640x480 rgb8 images at 30 Hz, best effort (sensor-data QoS), once a subscriber is there.
Each image's first pixel holds its index."""

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from mail_policy_node.nodes.ros_convert import image_msg


def main(n: int) -> int:
    rclpy.init()
    node = rclpy.create_node("image_peer")
    pub = node.create_publisher(Image, "/camera/big/image_raw", qos_profile_sensor_data)
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the subscriber's matching settle on both sides
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for k in range(n):
        img[0, 0] = k % 256
        pub.publish(image_msg(img, time.time(), "big"))
        time.sleep(1 / 30)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
