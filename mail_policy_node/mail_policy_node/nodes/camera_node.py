"""Camera node: publishes sensor_msgs/Image + CameraInfo stamped with acquisition time.

Sources: `realsense` (a device by serial, or a librealsense recording via `playback_file`) and `sim`
(renders a camera of the simulated scene). Best-effort sensor-data QoS: a late frame is worth less than
the next one. The achieved frame rate is logged every 5 s and published on /camera/<name>/frame_rate.
"""

from __future__ import annotations

import json
import threading
import time

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32, Float64MultiArray, String

from mail_policy_node.nodes import run, wait_for_listeners
from mail_policy_node.nodes.ros_convert import camera_info_msg, image_msg
from mail_policy_node.spec import camera_image_topic, camera_info_topic


def make_source(node: Node):
    p = {name: node.get_parameter(name).value for name in
         ("source", "camera_name", "serial", "width", "height", "fps", "depth", "playback_file")}
    if p["source"] == "realsense":
        from mail_policy_node.data.cameras import RealSenseCamera

        return RealSenseCamera(p["serial"], p["width"], p["height"], p["fps"], p["depth"], p["playback_file"])
    if p["source"] == "sim":
        from mail_policy_node.data.cameras import SimSceneCamera

        return SimSceneCamera(p["camera_name"], p["width"], p["height"])
    raise ValueError(f"unknown camera source {p['source']!r}; use realsense or sim")


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera_node")
        self.declare_parameter("camera_name", "agentview")
        self.declare_parameter("source", "realsense")
        self.declare_parameter("serial", "")
        self.declare_parameter("width", 640)
        self.declare_parameter("height", 480)
        self.declare_parameter("fps", 30)
        self.declare_parameter("depth", False)
        self.declare_parameter("playback_file", "")
        self.declare_parameter("frame_id", "")
        name = self.get_parameter("camera_name").value
        self.frame_id = self.get_parameter("frame_id").value or f"{name}_optical_frame"
        self.image_pub = self.create_publisher(Image, camera_image_topic(name), qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, camera_info_topic(name), qos_profile_sensor_data)
        self.rate_pub = self.create_publisher(Float32, f"/camera/{name}/frame_rate", 10)
        self.source = make_source(self)
        self.frames = 0
        self._stop = threading.Event()
        self._thread = None
        if self.get_parameter("source").value == "sim":
            # Rendered from the sim world's state snapshots, stamped with their capture time.
            from mail_policy_node.nodes.sim_world_node import SCENE_QOS, TOPIC_SIM_SCENE, TOPIC_SIM_STATE

            self.create_subscription(String, TOPIC_SIM_SCENE, self._on_scene, SCENE_QOS)
            self.create_subscription(Float64MultiArray, TOPIC_SIM_STATE, self._on_sim_state, 2)
        else:
            self._thread = threading.Thread(target=self._capture, daemon=True)
            self._thread.start()

    def _on_scene(self, msg) -> None:
        scene = json.loads(msg.data)
        self.source.set_scene(scene["xml"], scene["task"], scene["params"])
        self.get_logger().info(f"rendering {self.source.camera} of task {scene['task']} seed {scene['seed']}")

    def _on_sim_state(self, msg) -> None:
        from mail_policy_node.nodes.sim_world_node import unpack_state

        if not self.source.ready:
            return
        stamp, state = unpack_state(msg)
        self.image_pub.publish(image_msg(self.source.render(state), stamp, self.frame_id))
        self.frames += 1

    def _capture(self) -> None:
        """Blocking reads belong to the device, not the executor: a thread publishes each frame."""
        if getattr(self.source, "playback_file", ""):
            # A recording is played once: wait (bounded) until someone listens, so it is not lost.
            wait_for_listeners(lambda: [] if self.image_pub.get_subscription_count() else ["a subscriber"],
                               10.0, self._stop.wait)
        self.source.open()
        t_window, n_window = time.monotonic(), 0
        while not self._stop.is_set():
            frame = self.source.read(timeout=1.0)
            if frame is None:
                if getattr(self.source, "ended", False):
                    self.get_logger().info(f"recording finished after {self.frames} frames")
                    break
                continue
            self.image_pub.publish(image_msg(frame.rgb, frame.stamp, self.frame_id))
            if self.source.intrinsics is not None:
                self.info_pub.publish(camera_info_msg(self.source.intrinsics, frame.stamp, self.frame_id))
            self.frames += 1
            n_window += 1
            if time.monotonic() - t_window >= 5.0:
                rate = n_window / (time.monotonic() - t_window)
                self.rate_pub.publish(Float32(data=float(rate)))
                self.get_logger().info(f"{rate:.1f} frames/s")
                t_window, n_window = time.monotonic(), 0

    def destroy_node(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._thread is None or not self._thread.is_alive():
            self.source.close()
        return super().destroy_node()


def main(args=None):
    run(CameraNode, args)


if __name__ == "__main__":
    main()
