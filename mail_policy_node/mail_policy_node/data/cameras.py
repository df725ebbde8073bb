"""Camera sources for the camera node, without ROS: each yields `CameraFrame`s stamped with the time
the image was acquired (host clock, seconds), which is what the policy synchronises on.

- `RealSenseCamera` (source ``realsense``): a live Intel RealSense (by serial) or a librealsense recording
  (.db3) played back, which is also how it is tested without hardware (`record_realsense_file` writes one).
- `SimSceneCamera` (source ``sim``): renders a camera of the simulated scene from the sim world's state.

What the node asks of a source is written down once, in the `CameraSource` protocols below, and the
`source` parameter's values are the registry `CAMERA_SOURCES`. Adding a camera type: a class that
implements `CapturedSource` (check, open, read, close and a few properties; the node reads its frames in
a thread of their own), and one `register_camera_source(name, factory, description)` at the end of this
file; the node and its `source` parameter pick it up by name (tests/data/test_camera_sources.py).

Time domains (librealsense stamps each frame in one of three; `FrameClock` turns them into host time):
- global_time: the device's hardware clock translated to host time by librealsense. Asked for on every
  sensor that has the `global_time_enabled` option; the frame timestamp is used as it is.
- system_time: the host time at which librealsense received the frame (devices or kernels without
  hardware timestamps in the frame metadata); used as it is.
- hardware_clock: the device's own clock (global time off or unsupported). Mapped to host time by a
  `ClockMapper` fed with the frame's host arrival time (librealsense's time_of_arrival metadata, else
  the time it was read): host stamp = device time + min(arrival - device time) over the last second of
  frames, i.e. the acquisition time plus the least transport delay seen; a device clock that goes back
  (a reset) restarts the mapping. Never the read time, which adds however long the frame waited.
Every live stamp is capped at the time the frame was read (a frame is not acquired after it is read).

Recordings carry the domain and timestamps of the session they were recorded in (another day, another
host, or a software device's own clock), which the live policy cannot synchronise with joint states.
Played back, a frame is stamped on the recording's own timeline anchored to the host clock at the first
frame: stamp = host time at the first frame + (recorded timestamp - first recorded timestamp), and in
real-time playback it is released at that moment. So the recorded frame intervals (and dropouts) are
kept and stamps are host times a live policy can match with live joint states. If the reader falls
behind by more than `PlaybackTimeline.max_lag`, or the recording's clock goes back (a recording that
starts again, a device reset while recording), the timeline is re-anchored at the current frame:
stamps jump forward, never back, and `reanchors` counts it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..parameters import Parameter, default_of
from .sync import ClockMapper


class CameraError(RuntimeError):
    """The camera cannot start or deliver frames (the camera node exits non-zero with the reason)."""


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)  # plumb_bob k1 k2 t1 t2 k3


def intrinsics_from_fovy(width: int, height: int, fovy_deg: float) -> CameraIntrinsics:
    """A pinhole camera of vertical field of view `fovy_deg` (MuJoCo's camera fovy), square pixels."""
    import math

    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return CameraIntrinsics(width, height, f, f, width / 2, height / 2)


@dataclass(frozen=True)
class CameraFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    stamp: float  # acquisition time, host clock [s]
    index: int  # frame number from the device
    depth: np.ndarray | None = None  # (H, W) uint16 in depth_scale units, aligned to colour, if enabled


@runtime_checkable
class CameraSource(Protocol):
    """What the camera node (nodes/camera_node.py) asks of every camera source. Failure is a CameraError
    with the reason (the node logs it and exits 1, or, managed, stays unconfigured saying why). A source
    gets its frames to the node in one of two ways, which `renders_sim_state` says; the protocol of each
    (`CapturedSource`, `RenderedSource`) lists the rest."""

    @property
    def renders_sim_state(self) -> bool:
        """False: the node reads frames in a capture thread of its own (`CapturedSource`). True: frames are
        rendered from the sim world's state snapshots as the node receives them (`RenderedSource`), stamped
        with each snapshot's capture time; no capture thread."""

    def check(self) -> None:
        """Raise CameraError now, with the reason, if the source cannot start (no such device, an unreadable
        recording), so that configure fails at once rather than at the first read. Quick, no streaming
        started; a source with nothing to check returns."""

    def close(self) -> None:
        """Stop and let the device go (another process may open it); open() may follow again. Never raises
        for a source that is not open."""


@runtime_checkable
class CapturedSource(CameraSource, Protocol):
    """A camera the node reads: open, then read in a loop from the node's capture thread, then close."""

    def open(self) -> None:
        """Start delivering frames. May block for seconds (a device starting); CameraError when it cannot."""

    def read(self, timeout: float = 1.0) -> CameraFrame | None:
        """The next frame, blocking at most `timeout` s; None when none came in time (the node decides when
        silence means a lost camera) or the source has ended (see `ended`). CameraError: the device failed."""

    @property
    def frame_period(self) -> float:
        """[s] between frames as streamed (valid after open): the node sizes its lost-camera timeout on it."""

    @property
    def intrinsics(self) -> CameraIntrinsics | None:
        """The colour stream's intrinsics (after open), published as CameraInfo; None: none published."""

    @property
    def time_domain(self) -> str | None:
        """How the last frame was stamped, in words for the log (None before the first frame)."""

    @property
    def is_recording(self) -> bool:
        """Frames come from a recording played once, not a live camera: the node waits (bounded) for a
        subscriber before open so that they are not lost, and the recording's end is a normal end."""

    @property
    def ended(self) -> bool:
        """A recording has delivered its last frame: the node stops reading and stays up. A live camera never
        ends (False)."""

    @property
    def reanchors(self) -> int:
        """Times the stamps' timeline was re-anchored (a recording's clock went back, or playback fell
        behind): stamps jumped forward. 0 for a live camera."""

    @property
    def last_reanchor(self) -> str:
        """Why the timeline was last re-anchored ('' if never), for the log."""

    @property
    def setup_note(self) -> str:
        """One line for the log once open: how the device was set up for stamping (e.g. which sensors'
        global time was switched on); '' when there is nothing to say."""


@runtime_checkable
class RenderedSource(CameraSource, Protocol):
    """A camera of the simulated scene: the node hands it each scene and state the sim world publishes."""

    def set_scene(self, xml: str, task: str, params: dict) -> None:
        """Load the scene the sim world publishes (once per episode): compiles the model and makes the
        renderer (tens to hundreds of ms, on the node's executor). CameraError: the scene lacks this camera."""

    @property
    def ready(self) -> bool:
        """A scene is loaded: render() may be called."""

    def render(self, state: dict) -> np.ndarray:
        """(H, W, 3) uint8 of the scene in `state` (a sim world state snapshot: qpos, mocap_pos, mocap_quat,
        time)."""


DOMAIN_DESCRIPTIONS = {
    "global_time": "global_time: the device clock translated to host time by librealsense",
    "system_time": "system_time: host time at which librealsense received the frame",
    "hardware_clock": "hardware_clock: the device clock, mapped to host time from the frames' arrival times "
                      "(ClockMapper)",
}


class FrameClock:
    """Host-clock acquisition stamps for live RealSense frames from their timestamp domain (see the
    module's docstring). `domain` names the last frame's domain; `describe()` says how it is stamped."""

    def __init__(self, window: int = 30):
        self.mapper = ClockMapper(window)
        self.domain: str | None = None

    def stamp(self, domain: str, device_time: float, arrival: float | None, read_time: float) -> float:
        """`domain`: the timestamp domain's name; `device_time`: the frame timestamp [s] in that domain;
        `arrival`: host time the frame arrived (None: unknown, the read time is used); `read_time`: host
        time the frame was read."""
        self.domain = domain
        if domain in ("global_time", "system_time"):
            stamp = device_time
        else:
            stamp = self.mapper.update(device_time, read_time if arrival is None else arrival)
        return min(stamp, read_time)

    def describe(self) -> str:
        return DOMAIN_DESCRIPTIONS.get(self.domain or "", f"{self.domain}: mapped to host time like hardware_clock")


def frame_timing(frame) -> tuple[str, float, float | None]:
    """(timestamp domain name, timestamp [s], host arrival time [s] or None) of a librealsense frame."""
    import pyrealsense2 as rs

    toa = rs.frame_metadata_value.time_of_arrival
    arrival = frame.get_frame_metadata(toa) / 1000.0 if frame.supports_frame_metadata(toa) else None
    return frame.get_frame_timestamp_domain().name, frame.get_timestamp() / 1000.0, arrival


class PlaybackTimeline:
    """Stamps and release times for a recording played back (see the module's docstring)."""

    def __init__(self, max_lag: float = 0.1):
        self.max_lag = max_lag
        self.reanchors = 0
        self.last_reanchor = ""  # why the timeline was last re-anchored, for the log
        self._host_off = self._mono_off = None
        self._last_device: float | None = None
        self._last_stamp = -float("inf")

    def place(self, device_time: float, host_now: float, mono_now: float, realtime: bool = True) -> tuple[float, float]:
        """(host stamp, monotonic release time) of the frame recorded at `device_time` [s]."""
        if self._host_off is None:
            self._anchor(device_time, host_now, mono_now)
        elif device_time < self._last_device:
            self._anchor(device_time, host_now, mono_now,
                         f"the recording's clock went back by {self._last_device - device_time:.3f} s")
        elif realtime and mono_now - (device_time + self._mono_off) > self.max_lag:
            self._anchor(device_time, host_now, mono_now, f"playback fell "
                         f"{mono_now - (device_time + self._mono_off):.3f} s behind the recording's timeline")
        self._last_device = device_time
        stamp = max(device_time + self._host_off, self._last_stamp + 1e-6)  # never back, never twice
        self._last_stamp = stamp
        return stamp, device_time + self._mono_off

    def _anchor(self, device_time: float, host_now: float, mono_now: float, reason: str = "") -> None:
        self._host_off, self._mono_off = host_now - device_time, mono_now - device_time
        if reason:
            self.reanchors += 1
            self.last_reanchor = reason


def enable_global_time(device) -> list[str]:
    """Switch librealsense's global time on for every sensor of `device` that offers it (hardware
    stamps translated to host time); returns the names of those sensors."""
    import pyrealsense2 as rs

    opt, names = rs.option.global_time_enabled, []
    for sensor in device.query_sensors():
        if sensor.supports(opt) and not sensor.is_option_read_only(opt):
            sensor.set_option(opt, 1.0)
            names.append(sensor.get_info(rs.camera_info.name) if sensor.supports(rs.camera_info.name) else "?")
    return names


class RealSenseCamera:
    """Colour (and optionally depth aligned to colour) from a RealSense device or a recording, stamped
    as the module's docstring says. `time_domain` describes how the last frame was stamped. A
    `CapturedSource`."""

    renders_sim_state = False

    def __init__(self, serial: str = "", width: int = 640, height: int = 480, fps: int = 30,
                 depth: bool = False, playback_file: str = "", realtime_playback: bool = True):
        import pyrealsense2 as rs  # imported here: the other sources must not need librealsense

        self._rs = rs
        self.serial, self.width, self.height, self.fps = serial, width, height, fps
        self.depth_enabled = depth
        self.playback_file = playback_file
        self.realtime_playback = realtime_playback
        self.frame_period = 1.0 / fps  # the recording's own rate once a recording is opened
        self._pipeline = None
        self._align = None
        self._playback = None
        self._held = None  # playback: the next frame, read but not due yet: (frame, release time)
        self.clock = FrameClock(window=max(5, int(fps)))
        self.timeline = PlaybackTimeline()
        self._recorded_domain: str | None = None  # playback: the domain the file's frames carry
        self.global_time_sensors: list[str] = []  # sensors whose global time this camera switched on
        self.intrinsics: CameraIntrinsics | None = None

    def _where(self) -> str:
        return f"recording {self.playback_file}" if self.playback_file else f"serial {self.serial or '(any)'}"

    @property
    def is_recording(self) -> bool:
        return bool(self.playback_file)

    @property
    def reanchors(self) -> int:
        return self.timeline.reanchors

    @property
    def last_reanchor(self) -> str:
        return self.timeline.last_reanchor

    @property
    def setup_note(self) -> str:
        """Live: the sensors whose global time this camera switched on (the frames' stamps depend on it)."""
        if self.playback_file:
            return ""
        return "global time switched on for " + (", ".join(self.global_time_sensors) or "no sensor (unsupported)")

    def check(self) -> None:
        """Fail now, with the reason, if the camera is not there (no RealSense with this serial
        connected) or the recording cannot be played (missing, not a librealsense recording, no colour
        stream). Without it a missing device costs librealsense's 15 s wait in pipeline.start()."""
        rs = self._rs
        if not self.playback_file:
            serials = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()
                       if d.supports(rs.camera_info.serial_number)]
            if not serials or (self.serial and self.serial not in serials):
                raise CameraError(f"RealSense camera ({self._where()}) could not start: "
                                  + (f"connected are {', '.join(serials)}" if serials else "no RealSense connected"))
            return
        if not os.path.exists(self.playback_file):
            raise CameraError(f"RealSense {self._where()} could not start: no such file")
        if not os.path.isfile(self.playback_file):
            raise CameraError(f"RealSense {self._where()} could not start: not a file")
        cfg = rs.config()
        try:
            cfg.enable_device_from_file(self.playback_file, repeat_playback=False)
            profile = cfg.resolve(rs.pipeline())
            colour = [s for s in profile.get_streams() if s.stream_type() == rs.stream.color]
        except RuntimeError as e:
            raise CameraError(f"RealSense {self._where()} could not start: not a librealsense recording ({e})") from e
        if not colour:
            raise CameraError(f"RealSense {self._where()} could not start: the recording has no colour stream")

    def open(self) -> None:
        rs = self._rs
        self.check()
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
            raise CameraError(f"RealSense camera ({self._where()}) could not start: {e}") from e
        if self.playback_file:
            self._playback = profile.get_device().as_playback()
            self._playback.set_real_time(False)
        else:
            self.global_time_sensors = enable_global_time(profile.get_device())
        stream = profile.get_stream(rs.stream.color).as_video_stream_profile()
        if stream.fps() > 0:
            self.frame_period = 1.0 / stream.fps()
        i = stream.get_intrinsics()
        self.intrinsics = CameraIntrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, tuple(i.coeffs))
        if self.depth_enabled:
            self._align = rs.align(rs.stream.color)
        self._held = None
        self._pipeline = pipeline

    @property
    def time_domain(self) -> str | None:
        """How the last frame was stamped (None before the first frame)."""
        if self.playback_file:
            if self._recorded_domain is None:
                return None
            paced = "released in real time" if self.realtime_playback else "read as fast as possible"
            return (f"recording ({self._recorded_domain} in the file): the recording's timeline, anchored to the host "
                    f"clock at its first frame, {paced}")
        return None if self.clock.domain is None else self.clock.describe()

    @property
    def ended(self) -> bool:
        """A recording has played to its end (a live camera never ends). A read that times out says
        only that no frame came in time: on a loaded machine a recording's next frame can be late."""
        return (self._playback is not None and self._held is None
                and self._playback.current_status() == self._rs.playback_status.stopped)

    def read(self, timeout: float = 1.0) -> CameraFrame | None:
        """The next frame, or None when none came within `timeout` (or a recording has ended). A
        recording's frame that is not due within `timeout` is held for the next call."""
        if self._held is None:
            t_end = time.monotonic() + timeout
            ok, frames = self._pipeline.try_wait_for_frames(int(timeout * 1000))
            host_now, mono_now = time.time(), time.monotonic()
            if not ok:
                return None
            if self._align is not None:
                frames = self._align.process(frames)
            color = frames.get_color_frame()
            if not color:
                return None
            rgb = np.asanyarray(color.get_data()).copy()
            if rgb.ndim != 3 or rgb.shape[2] != 3:
                raise CameraError(f"RealSense colour frame has shape {rgb.shape}; expected rgb8 (H, W, 3)")
            depth = None
            if self.depth_enabled:
                d = frames.get_depth_frame()
                depth = np.asanyarray(d.get_data()).copy() if d else None
            domain, device_time, arrival = frame_timing(color)
            if not self.playback_file:
                return CameraFrame(rgb, self.clock.stamp(domain, device_time, arrival, host_now),
                                   int(color.get_frame_number()), depth)
            self._recorded_domain = domain
            stamp, due = self.timeline.place(device_time, host_now, mono_now, self.realtime_playback)
            frame = CameraFrame(rgb, stamp, int(color.get_frame_number()), depth)
            if not self.realtime_playback:
                return frame
            self._held = (frame, due)
            timeout = max(0.0, t_end - time.monotonic())
        frame, due = self._held
        wait = due - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        if wait > 0:
            time.sleep(wait)
        self._held = None
        return frame

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop()
            self._pipeline = None
            self._playback = None
            self._held = None


TIMESTAMP_DOMAINS = ("hardware_clock", "global_time", "system_time")
# librealsense's recorder compresses and writes frames on a thread of its own and drops what it has not
# written when it is released: fed as fast as frames were made, it kept 1035 of 3000 noisy 640x480 frames
# (it wrote ~70 a second on a 2-core machine) and buffered the rest in memory (16 GB for 700 s of frames).
# So the frames handed over run at most RECORDER_BACKLOG ahead of the file, and the recorder is released
# only once the file holds them all; a writer that makes no progress for RECORDER_STALL_S is an error.
RECORDER_BACKLOG = 60
RECORDER_STALL_S = 30.0


def record_realsense_file(path: str, frames: Iterable[np.ndarray], fps: int = 30, *,
                          timestamps: Sequence[float] | None = None, domain: str = "hardware_clock",
                          intrinsics: CameraIntrinsics | None = None) -> int:
    """Write RGB frames (H, W, 3 uint8, all one size) as a librealsense recording (.db3) through a
    software device, so RealSenseCamera plays it back exactly as it would a real camera's file.

    `frames` may be any iterable (a generator rendering one frame at a time keeps a long recording
    out of memory). Frame k is stamped `timestamps[k]` [s] (default k / fps) in timestamp domain
    `domain` (hardware_clock, global_time or system_time); `intrinsics` default to a 2 * atan(1 / 1.8)
    horizontal field of view centred on the image. Returns the number of frames written, once the file
    holds every one (the recorder writes behind; see RECORDER_BACKLOG); on an error the partial file is
    removed. Measured on a 2-core machine: 300 rendered 640x480 frames in about 1 s, frames of noise
    (which compress slowly) about 70 a second."""
    import pyrealsense2 as rs

    if not str(path).endswith(".db3"):
        raise ValueError(f"librealsense recordings must end in .db3, got {path}")
    if domain not in TIMESTAMP_DOMAINS:
        raise ValueError(f"domain must be one of {TIMESTAMP_DOMAINS}, got {domain!r}")
    if fps <= 0 or int(fps) != fps:
        raise ValueError(f"fps must be a positive integer (a RealSense stream profile's rate), got {fps}")
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("no frames to record") from None
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frame 0: expected (H, W, 3) uint8, got {first.shape} {first.dtype}")
    h, w = first.shape[:2]
    if intrinsics is not None and (intrinsics.width, intrinsics.height) != (w, h):
        raise ValueError(f"intrinsics are for {intrinsics.width}x{intrinsics.height}, frames are {w}x{h}")
    dev = rs.software_device()
    sensor = dev.add_sensor("Color")
    k_in = intrinsics or CameraIntrinsics(w, h, 0.9 * w, 0.9 * w, w / 2, h / 2)
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = w, h, k_in.fx, k_in.fy, k_in.cx, k_in.cy
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.color, 0, 0, w, h, int(fps), 3
    vs.fmt, vs.intrinsics = rs.format.rgb8, intr
    profile = sensor.add_video_stream(vs).as_video_stream_profile()
    rs_domain = getattr(rs.timestamp_domain, domain)
    recorder = rs.recorder(str(path), dev)
    queue = rs.frame_queue(4)
    n = 0
    try:
        sensor.open(profile)
        sensor.start(queue)
        for k, img in enumerate(_chain(first, it)):
            img = np.asarray(img)
            if img.shape != (h, w, 3) or img.dtype != np.uint8:
                raise ValueError(f"frame {k}: expected ({h}, {w}, 3) uint8, got {img.shape} {img.dtype}")
            if timestamps is not None and k >= len(timestamps):
                raise ValueError(f"{len(timestamps)} timestamps for more frames")
            f = rs.software_video_frame()
            f.pixels, f.bpp, f.stride = np.ascontiguousarray(img), 3, 3 * w
            t = k / fps if timestamps is None else float(timestamps[k])
            f.timestamp, f.domain, f.frame_number = 1000.0 * t, rs_domain, k
            f.profile = profile
            sensor.on_video_frame(f)
            queue.wait_for_frame(1000)  # raises if the software device did not deliver it
            n += 1
            if n % (RECORDER_BACKLOG // 2) == 0:
                _wait_written(path, n - RECORDER_BACKLOG)
        _wait_written(path, n)
    except BaseException:
        _stop_sensor(sensor)
        del recorder
        if os.path.exists(path):
            os.remove(path)
        raise
    _stop_sensor(sensor)
    del recorder  # the file is finalised when the recorder is released
    return n


def _frames_written(path: str) -> int | None:
    """Colour frames in a librealsense recording (.db3: a rosbag2 SQLite file), read while it is written:
    0 before the recorder made its tables, None when a page is being written at that moment."""
    import sqlite3

    if not os.path.exists(path):
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.DatabaseError:
        return None
    try:
        return db.execute("SELECT COUNT(*) FROM messages JOIN topics ON messages.topic_id = topics.id "
                          "WHERE topics.name LIKE '%/Color_0/image/data%'").fetchone()[0]
    except sqlite3.OperationalError:  # no such table yet
        return 0
    except sqlite3.DatabaseError:  # "malformed": read in the middle of the writer's page update
        return None
    finally:
        db.close()


def _wait_written(path: str, count: int) -> None:
    """Until the recording holds ``count`` frames; RuntimeError when the writer stops making progress."""
    written, progress_at = 0, time.monotonic()
    while True:
        now_written = _frames_written(path) or 0
        if now_written > written:
            written, progress_at = now_written, time.monotonic()
        if written >= count:
            return
        if time.monotonic() - progress_at > RECORDER_STALL_S:
            raise RuntimeError(f"librealsense's recorder wrote {written} of {count} frames to {path} and made no "
                               f"progress for {RECORDER_STALL_S:.0f} s")
        time.sleep(0.02)


def _stop_sensor(sensor) -> None:
    for step in (sensor.stop, sensor.close):
        try:
            step()
        except RuntimeError:  # not started / not opened
            pass


def _chain(first, rest):
    yield first
    yield from rest


class SimSceneCamera:
    """Renders one camera of the simulated task scene from state snapshots (the `sim` camera source).

    The physics runs elsewhere (franky-sim in the sim world process); this holds its own MjModel
    compiled from the same MJCF and renders whenever a state snapshot arrives, so rendering never
    slows the physics. Snapshot: dict(qpos, mocap_pos, mocap_quat, time) as FrankySimScene captures.
    A `RenderedSource`."""

    renders_sim_state = True

    def __init__(self, camera: str, width: int = 128, height: int = 128):
        self.camera, self.width, self.height = camera, width, height
        self._model = self._data = self._renderer = self._task = None
        self._params: dict = {}

    def check(self) -> None:
        """Nothing to check before a scene arrives: the camera's name is checked against each scene."""

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
            raise CameraError(f"the simulated scene has no camera {self.camera!r}")
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


# ---- the sources by name: the camera node's `source` parameter --------------------------------------------
@dataclass(frozen=True)
class CameraSourceType:
    name: str  # the value of the camera node's `source` parameter
    factory: Callable[[Mapping[str, object]], CameraSource]  # the node's parameter values -> a new source
    description: str  # what it is, for the parameter's description (`ros2 param describe`)


CAMERA_SOURCES: dict[str, CameraSourceType] = {}


def register_camera_source(name: str, factory: Callable[[Mapping[str, object]], CameraSource],
                           description: str) -> CameraSourceType:
    """Make `name` a value of the camera node's `source` parameter: the node calls `factory` with its
    parameter values (camera_parameters(): camera_name, width, height, fps, ...) at configure."""
    if name in CAMERA_SOURCES:
        raise ValueError(f"camera source {name!r} is registered already")
    if not name.isidentifier() or not description.strip():
        raise ValueError(f"camera source {name!r}: a name must be an identifier, and have a description")
    CAMERA_SOURCES[name] = entry = CameraSourceType(name, factory, description)
    return entry


def unregister_camera_source(name: str) -> CameraSourceType:
    """Remove a source (tests that register one put the registry back this way)."""
    return CAMERA_SOURCES.pop(name)


def make_camera_source(params: Mapping[str, object]) -> CameraSource:
    """The source `params["source"]` names, made from the camera node's parameter values. ValueError names
    the registered sources for an unknown one; TypeError says when a factory made no `CameraSource`."""
    name = params["source"]
    if name not in CAMERA_SOURCES:
        raise ValueError(f"unknown camera source {name!r}; registered: {', '.join(CAMERA_SOURCES)}")
    source = CAMERA_SOURCES[name].factory(params)
    kind = RenderedSource if getattr(source, "renders_sim_state", None) else CapturedSource
    if not isinstance(source, CameraSource) or not isinstance(source, kind):
        raise TypeError(f"camera source {name!r} made a {type(source).__name__}, which does not implement "
                        f"{kind.__name__} (data/cameras.py)")
    return source


def _realsense(p: Mapping) -> RealSenseCamera:
    return RealSenseCamera(p["serial"], p["width"], p["height"], p["fps"], p["depth"], p["playback_file"])


def _sim(p: Mapping) -> SimSceneCamera:
    return SimSceneCamera(p["camera_name"], p["width"], p["height"])


register_camera_source("realsense", _realsense, "a device (by serial) or a recording (playback_file)")
register_camera_source("sim", _sim, "renders the simulated scene from the sim world's state")


def camera_parameters() -> tuple[Parameter, ...]:
    """The camera node's parameters (nodes/camera_node.py declares exactly these), with the `source`
    values registered now. The RealSense stream's defaults are RealSenseCamera's."""
    sources = "; ".join(f"{t.name}: {t.description}" for t in CAMERA_SOURCES.values())
    return (
        Parameter("autostart", True, "configure (check the source) and activate (stream) at start; false: a "
                  "managed node that waits unconfigured for its lifecycle transitions"),
        Parameter("camera_name", "agentview", "the camera's name: it publishes camera/<name>/image_raw and "
                  "camera_info; with the sim source, the simulated scene's camera of that name"),
        Parameter("source", "realsense", sources, choices=tuple(CAMERA_SOURCES)),
        Parameter("serial", default_of(RealSenseCamera, "serial"),
                  "RealSense serial number; '' = any connected device"),
        Parameter("width", default_of(RealSenseCamera, "width"), "[px] image width", 1, 4096),
        Parameter("height", default_of(RealSenseCamera, "height"), "[px] image height", 1, 4096),
        # RealSense colour streams run at 6, 15, 30, 60 or 90 frames per second
        Parameter("fps", default_of(RealSenseCamera, "fps"), "[1/s] RealSense frame rate (a stream profile's); "
                  "the sim source renders at the sim world's state_rate_hz", 1, 90),
        Parameter("depth", default_of(RealSenseCamera, "depth"), "RealSense: also stream depth, aligned to colour"),
        Parameter("playback_file", default_of(RealSenseCamera, "playback_file"),
                  "a librealsense .db3 recording played instead of the device; '' = the device"),
        Parameter("frame_id", "", "frame_id of the images; '' = <camera_name>_optical_frame"),
        Parameter("frame_timeout_periods", 30, "no frame for this many frame periods after the first: the camera "
                  "is lost (unplugged) and the node exits 1", 1, 1000),
        Parameter("first_frame_timeout", 10.0, "[s] no first frame this long after the camera started: the node "
                  "exits 1", 0.1, 600.0),
    )


def __getattr__(name: str):
    # CAMERA_PARAMETERS: the table as camera_parameters() makes it when asked, with the sources registered then
    if name == "CAMERA_PARAMETERS":
        return camera_parameters()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
