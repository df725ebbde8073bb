"""Camera sources for the camera node, without ROS: each yields `CameraFrame`s stamped with the time
the image was acquired (host clock, seconds), which is what the policy synchronises on.

- `RealSenseCamera`: a live Intel RealSense (by serial) or a librealsense recording (.db3) played back,
  which is also how it is tested without hardware (`record_realsense_file` writes such a recording).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)  # plumb_bob k1 k2 t1 t2 k3


@dataclass(frozen=True)
class CameraFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    stamp: float  # acquisition time, host clock [s]
    index: int  # frame number from the device
    depth: np.ndarray | None = None  # (H, W) uint16 in depth_scale units, aligned to colour, if enabled


class RealSenseCamera:
    """Colour (and optionally depth aligned to colour) from a RealSense device or a recording.

    Live frames use the device's global time domain when it offers one (host-synchronised hardware
    stamps); otherwise, and for recordings, the host time at which the frame set arrived.
    """

    def __init__(self, serial: str = "", width: int = 640, height: int = 480, fps: int = 30,
                 depth: bool = False, playback_file: str = "", realtime_playback: bool = True):
        import pyrealsense2 as rs  # imported here: the other sources must not need librealsense

        self._rs = rs
        self.serial, self.width, self.height, self.fps = serial, width, height, fps
        self.depth_enabled = depth
        self.playback_file = playback_file
        self.realtime_playback = realtime_playback
        self._pipeline = None
        self._align = None
        self._playback = None
        self.intrinsics: CameraIntrinsics | None = None

    def open(self) -> None:
        rs = self._rs
        cfg = rs.config()
        if self.playback_file:
            cfg.enable_device_from_file(self.playback_file, repeat_playback=False)
        else:
            if self.serial:
                cfg.enable_device(self.serial)
            cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
            if self.depth_enabled:
                cfg.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        pipeline = rs.pipeline()
        try:
            if self.playback_file:
                # librealsense's own real-time playback drops frames that are not read in time (seen: 1 of
                # 60 delivered); play every frame and pace it here from the recorded timestamps instead.
                # Switched off on the resolved device before the start: switched after it, a recording
                # stopped after 1-2 of 20 frames in 4 of 8 runs (0 of 24 this way).
                cfg.resolve(pipeline).get_device().as_playback().set_real_time(False)
            profile = pipeline.start(cfg)
        except RuntimeError as e:
            where = f"recording {self.playback_file}" if self.playback_file else f"serial {self.serial or '(any)'}"
            raise RuntimeError(f"RealSense camera ({where}) could not start: {e}") from e
        if self.playback_file:
            self._playback = profile.get_device().as_playback()
            self._playback.set_real_time(False)
        self._pace_origin = None
        stream = profile.get_stream(rs.stream.color).as_video_stream_profile()
        i = stream.get_intrinsics()
        self.intrinsics = CameraIntrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, tuple(i.coeffs))
        if self.depth_enabled:
            self._align = rs.align(rs.stream.color)
        self._pipeline = pipeline

    @property
    def ended(self) -> bool:
        """A recording has played to its end (a live camera never ends). A read that times out says
        only that no frame came in time: on a loaded machine a recording's next frame can be late."""
        return self._playback is not None and self._playback.current_status() == self._rs.playback_status.stopped

    def read(self, timeout: float = 1.0) -> CameraFrame | None:
        """The next frame, or None when none came within `timeout` (or a recording has ended)."""
        ok, frames = self._pipeline.try_wait_for_frames(int(timeout * 1000))
        host_now = time.time()
        if not ok:
            return None
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return None
        rgb = np.asanyarray(color.get_data()).copy()
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise RuntimeError(f"RealSense colour frame has shape {rgb.shape}; expected rgb8 (H, W, 3)")
        if self.playback_file and self.realtime_playback:
            device_t = color.get_timestamp() / 1000.0
            if self._pace_origin is None:
                self._pace_origin = (host_now - device_t, time.monotonic() - device_t)
            delay = self._pace_origin[1] + device_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            host_now = time.time()
        stamp = host_now
        if not self.playback_file and color.get_frame_timestamp_domain() == self._rs.timestamp_domain.global_time:
            stamp = color.get_timestamp() / 1000.0
        depth = None
        if self.depth_enabled:
            d = frames.get_depth_frame()
            depth = np.asanyarray(d.get_data()).copy() if d else None
        return CameraFrame(rgb, stamp, int(color.get_frame_number()), depth)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop()
            self._pipeline = None
            self._playback = None


def record_realsense_file(path: str, frames: list[np.ndarray], fps: int = 30) -> None:
    """Write RGB frames (H, W, 3 uint8, all one size) as a librealsense recording (.db3) through a
    software device, so RealSenseCamera can play it back exactly as it would a real camera's file."""
    import pyrealsense2 as rs

    if not str(path).endswith(".db3"):
        raise ValueError(f"librealsense recordings must end in .db3, got {path}")
    h, w = frames[0].shape[:2]
    dev = rs.software_device()
    sensor = dev.add_sensor("Color")
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = w, h, 0.9 * w, 0.9 * w, w / 2, h / 2
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.color, 0, 0, w, h, fps, 3
    vs.fmt, vs.intrinsics = rs.format.rgb8, intr
    profile = sensor.add_video_stream(vs)
    recorder = rs.recorder(str(path), dev)
    queue = rs.frame_queue(len(frames) + 1)
    sensor.open(profile)
    sensor.start(queue)
    for k, img in enumerate(frames):
        if img.shape != (h, w, 3) or img.dtype != np.uint8:
            raise ValueError(f"frame {k}: expected ({h}, {w}, 3) uint8, got {img.shape} {img.dtype}")
        f = rs.software_video_frame()
        f.pixels, f.bpp, f.stride = np.ascontiguousarray(img), 3, 3 * w
        f.timestamp, f.domain, f.frame_number = 1000.0 * k / fps, rs.timestamp_domain.hardware_clock, k
        f.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(f)
        queue.wait_for_frame(1000)
    sensor.stop()
    sensor.close()
    del recorder  # the file is finalised when the recorder is released


class SimSceneCamera:
    """Renders one camera of the simulated task scene from state snapshots (the `sim` camera source).

    The physics runs elsewhere (franky-sim in the sim world process); this holds its own MjModel
    compiled from the same MJCF and renders whenever a state snapshot arrives, so rendering never
    slows the physics. Snapshot: dict(qpos, mocap_pos, mocap_quat, time) as FrankySimScene captures."""

    def __init__(self, camera: str, width: int = 128, height: int = 128):
        self.camera, self.width, self.height = camera, width, height
        self._model = self._data = self._renderer = self._task = None
        self._params: dict = {}

    def set_scene(self, xml: str, task: str, params: dict) -> None:
        import os

        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        from mail_policy_node.sim.scene import scene_renderer
        from mail_policy_node.sim.tasks import get_task

        self.close()
        self._mj = mujoco
        self._model = mujoco.MjModel.from_xml_string(xml)
        if mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera) < 0:
            raise ValueError(f"the simulated scene has no camera {self.camera!r}")
        self._data = mujoco.MjData(self._model)
        self._task, self._params = get_task(task), params
        self._renderer = scene_renderer(self._model, self.height, self.width)

    @property
    def ready(self) -> bool:
        return self._renderer is not None

    def render(self, state: dict) -> np.ndarray:
        d = self._data
        d.qpos[:] = state["qpos"]
        d.mocap_pos[:] = state["mocap_pos"]
        d.mocap_quat[:] = state["mocap_quat"]
        self._task.update(self._model, d, self._params, state["time"])
        self._mj.mj_forward(self._model, d)
        self._renderer.update_scene(d, camera=self.camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
