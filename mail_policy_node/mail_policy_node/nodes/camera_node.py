"""Camera node: publishes sensor_msgs/Image + CameraInfo stamped with acquisition time.

Sources are made by name from the registry in data/cameras.py (`CAMERA_SOURCES`: `realsense`, a device
by serial or a librealsense recording via `playback_file`; `sim`, a camera of the simulated scene), and
the node asks only what the `CameraSource` protocols there list: a camera type is added there, not here.
Best-effort sensor-data QoS: a late frame is worth less than the next one. The achieved frame rate is
logged every 5 s and published on /camera/<name>/frame_rate. How frames are stamped (the time domain,
see data/cameras.py) is logged once, and again if it changes.

A captured source (read in a capture thread: RealSense) fails loudly: a camera that cannot start (no
device with that serial, a missing or unreadable recording), that gives no first frame within
`first_frame_timeout` s, or that stops giving frames for `frame_timeout_periods` frame periods
(unplugged) is logged as fatal with the reason, and the node exits with code 1 (the launch files
respawn camera nodes a limited number of times, so one that keeps failing ends visibly). A recording
that plays to its end is a normal end: the node stays up.
A stamp that is not after the previous frame's (a host clock step) is published as it is, counted and
logged (throttled): the policy node's synchroniser counts it too and, when the stamps go on from there,
restarts its history in the new time base (data/sync.py).

A managed (lifecycle) node: configure makes the source and checks it (the device is there, the
recording readable), activate streams (opens the device, or renders the simulated scene), deactivate
stops streaming (the device is closed, so another process may use it), cleanup lets the source go.
With `autostart` (the default, what the profiles use) it configures and activates itself at start, and
a camera that cannot start exits 1 as above; without, a failed configure leaves it unconfigured, saying
why, for its lifecycle manager to try again.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32, Float64MultiArray, String

from mail_policy_node.data.cameras import CameraError, camera_parameters, make_camera_source
from mail_policy_node.nodes import refuse_sim_time, run, shut_down, wait_for_listeners
from mail_policy_node.nodes.diagnostics import ERROR, OK, Diagnostics
from mail_policy_node.nodes.parameters import declare_table
from mail_policy_node.nodes.ros_convert import camera_info_msg, image_msg
from mail_policy_node.spec import camera_image_topic, camera_info_topic, relative

EXIT_FAILED = 1
_failures: list[str] = []  # why this process's camera failed (read by main() for the exit code)
LOG_EVERY_S = 5.0  # throttle for the recurring warnings below


class CameraNode(LifecycleNode):
    def __init__(self):
        super().__init__("camera_node")
        refuse_sim_time(self)
        p = self.params = declare_table(self, camera_parameters())  # read-only: these values hold for good
        self.frame_timeout_periods = p["frame_timeout_periods"]
        self.first_frame_timeout = p["first_frame_timeout"]
        name = p["camera_name"]
        self.frame_id = self.get_parameter("frame_id").value or f"{name}_optical_frame"
        self.image_pub = self.create_publisher(Image, relative(camera_image_topic(name)), qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, relative(camera_info_topic(name)), qos_profile_sensor_data)
        self.rate_pub = self.create_publisher(Float32, f"camera/{name}/frame_rate", 10)
        self.diagnostics = Diagnostics(self, hardware_id=self.get_parameter("serial").value or "")
        self.autostart = p["autostart"]
        self.source = None
        self.active = False  # streaming (lifecycle state active)
        self.frames = 0
        self.backward_stamps = 0  # frames stamped not after the previous one
        self.backlog_skipped = 0  # sim snapshots that arrived while the current scene loaded (not rendered)
        self._scene_loaded_ns = 0  # [ns, system clock] when the sim scene finished loading
        self._scene_rendered = False  # the current sim scene has had its first frame
        self.failure: str | None = None
        self.frame_rate = 0.0  # [frames/s] over the last window
        self.exit_code = 0
        self._stop = threading.Event()
        self._thread = None
        self._sim_subscribed = False
        # the capture thread asks the executor to end the process (a guard condition: only the spinning
        # side shuts the context down, whenever the failure happens)
        self._fail_guard = self.create_guard_condition(self._shut_down_on_failure)
        if self.autostart:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()
        else:
            self.get_logger().info("unconfigured: waiting for the lifecycle transition configure")

    # ---- lifecycle: configure = make and check the source, activate = stream, deactivate = stop ----
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.source = make_camera_source(self.params)  # the registry's factory for `source`
            self.source.check()  # e.g. no device with that serial, a missing or unreadable recording: now
        except Exception as exc:  # noqa: BLE001 - every reason a camera cannot start is reported
            reason = str(exc) if isinstance(exc, CameraError) else f"camera failed: {exc!r}"
            self.source = None
            if self.autostart:
                self._fail(reason)  # as before lifecycles: exit 1, the launch respawns it a limited number of times
            else:
                self.get_logger().error(f"configure failed: {reason}")
            return TransitionCallbackReturn.FAILURE
        if self.source.renders_sim_state and not self._sim_subscribed:
            self.get_logger().info("stamps: the sim world's state capture time (host clock)")
            # Rendered from the sim world's state snapshots, stamped with their capture time.
            from mail_policy_node.nodes.sim_world_node import SCENE_QOS, TOPIC_SIM_SCENE, TOPIC_SIM_STATE

            self.create_subscription(String, relative(TOPIC_SIM_SCENE), self._on_scene, SCENE_QOS)
            self.create_subscription(Float64MultiArray, relative(TOPIC_SIM_STATE), self._on_sim_state, 2)
            self._sim_subscribed = True
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.active = True
        if not self.source.renders_sim_state:  # a captured source: its frames are read in a thread
            self._stop.clear()
            self._thread = threading.Thread(target=self._capture, daemon=True)
            self._thread.start()
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.active = False
        self._stop_capture()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    on_shutdown = on_cleanup  # shutting down from any state lets go the same way

    def _stop_capture(self) -> None:
        """Stop the capture thread and close the device (the source stays, ready to open again)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if not self._thread.is_alive() and self.source is not None:
                self.source.close()
        self._thread = None

    def _release(self) -> None:
        self.active = False
        self._stop_capture()
        if self.source is not None:
            self.source.close()
        self.source = None

    def _on_scene(self, msg) -> None:
        if self.source is None:
            return
        scene = json.loads(msg.data)
        self.source.set_scene(scene["xml"], scene["task"], scene["params"])
        self._scene_loaded_ns = time.time_ns()
        self._scene_rendered, self.backlog_skipped = False, 0
        self.get_logger().info(f"rendering {self.params['camera_name']} of task {scene['task']} "
                               f"seed {scene['seed']}")

    def _on_sim_state(self, msg, info) -> None:
        from mail_policy_node.nodes.sim_world_node import unpack_state

        if not self.active or self.source is None or not self.source.ready:
            return
        # Loading a scene holds this executor for hundreds of ms, and the snapshots that come meanwhile wait in
        # the subscription's queue (its depth: 0.2 s of them at the world's 10 Hz). Rendered, they made the first
        # frames of every episode ~0.2 s old, so the policy planned its first chunk on the past and the
        # controller skipped that chunk's first actions. The scene's first frame is of a snapshot that came after
        # it had loaded. (The reception time is the system clock's, as time.time_ns(); 0 where the middleware
        # does not say: rendered.)
        if 0 < info.get("received_timestamp", 0) < self._scene_loaded_ns:
            self.backlog_skipped += 1
            return
        stamp, state = unpack_state(msg)
        self.image_pub.publish(image_msg(self.source.render(state), stamp, self.frame_id))
        self.frames += 1
        if not self._scene_rendered:
            self._scene_rendered = True
            self.get_logger().info(f"first frame of the scene; {self.backlog_skipped} snapshot(s) that queued while "
                                   "it loaded skipped")

    def _capture(self) -> None:
        """Blocking reads belong to the device, not the executor: a thread publishes each frame."""
        try:
            self._capture_frames()
        except Exception as exc:  # noqa: BLE001 - every reason a camera stops is reported, then exit 1
            if not self._stop.is_set():
                self._fail(str(exc) if isinstance(exc, CameraError) else f"camera failed: {exc!r}")

    def _capture_frames(self) -> None:
        if self.source.is_recording:
            # A recording is played once: wait (bounded) until someone listens, so it is not lost.
            wait_for_listeners(lambda: [] if self.image_pub.get_subscription_count() else ["a subscriber"],
                               10.0, self._stop.wait)
        if self._stop.is_set():
            return
        self.source.open()
        period = self.source.frame_period
        lost_after = max(self.frame_timeout_periods * period, 2 * period)
        read_timeout = min(1.0, lost_after / 4)
        note = f"; {self.source.setup_note}" if self.source.setup_note else ""
        self.get_logger().info(f"camera open: {period * 1e3:.1f} ms frame period; lost after {lost_after:.2f} s "
                               f"without a frame ({self.frame_timeout_periods} periods){note}")
        last_frame = time.monotonic()
        last_stamp, domain, reanchors = None, None, 0
        backward_logged_at = reanchor_logged_at = -float("inf")
        t_window, n_window = time.monotonic(), 0
        while not self._stop.is_set():
            frame = self.source.read(timeout=read_timeout)
            if frame is None:
                if self.source.ended:
                    self.get_logger().info(f"recording finished after {self.frames} frames")
                    break
                silent = time.monotonic() - last_frame
                if self.frames == 0 and silent > self.first_frame_timeout:
                    raise CameraError(f"no first frame {silent:.1f} s after the camera started "
                                      f"(first_frame_timeout {self.first_frame_timeout} s)")
                if self.frames and silent > lost_after:
                    raise CameraError(f"no frame for {silent:.2f} s ({self.frame_timeout_periods} x the "
                                      f"{period * 1e3:.1f} ms frame period) after {self.frames} frames: the camera "
                                      "stopped delivering (unplugged?)")
                continue
            last_frame = time.monotonic()
            if self.source.time_domain != domain:
                domain = self.source.time_domain
                self.get_logger().info(f"stamps: {domain}")
            if self.source.reanchors != reanchors and time.monotonic() - reanchor_logged_at >= LOG_EVERY_S:
                reanchors, reanchor_logged_at = self.source.reanchors, time.monotonic()
                self.get_logger().warn(f"playback timeline re-anchored ({reanchors} so far): "
                                       f"{self.source.last_reanchor}")
            if last_stamp is not None and frame.stamp <= last_stamp:
                self.backward_stamps += 1
                if time.monotonic() - backward_logged_at >= LOG_EVERY_S:
                    backward_logged_at = time.monotonic()
                    self.get_logger().warn(
                        f"frame stamp went back by {last_stamp - frame.stamp:.3f} s ({self.backward_stamps} so far; "
                        f"stamps: {domain}): published as it is (the policy's synchroniser restarts on a new "
                        "time base)")
            last_stamp = frame.stamp
            self.image_pub.publish(image_msg(frame.rgb, frame.stamp, self.frame_id))
            if self.source.intrinsics is not None:
                self.info_pub.publish(camera_info_msg(self.source.intrinsics, frame.stamp, self.frame_id))
            self.frames += 1
            n_window += 1
            self.diagnostics.update(OK, "streaming", {"frames": self.frames, "frames_per_s": self.frame_rate,
                                                      "backward_stamps": self.backward_stamps, "stamps": domain})
            if time.monotonic() - t_window >= 5.0:
                rate = self.frame_rate = n_window / (time.monotonic() - t_window)
                self.rate_pub.publish(Float32(data=float(rate)))
                self.get_logger().info(f"{rate:.1f} frames/s")
                t_window, n_window = time.monotonic(), 0

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.diagnostics.update(ERROR, reason, {"frames": self.frames}, force=True)
        self.exit_code = EXIT_FAILED  # for a `run` that exits with its node's exit_code
        _failures.append(reason)
        self.get_logger().fatal(f"{reason}; exiting with code {EXIT_FAILED}")
        self._fail_guard.trigger()

    def _shut_down_on_failure(self) -> None:
        if self.failure is not None:
            shut_down(self.context)

    def destroy_node(self):
        self._release()
        return super().destroy_node()


def main(args=None):
    run(CameraNode, args)
    if _failures:
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
