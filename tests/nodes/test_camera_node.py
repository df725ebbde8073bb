"""Camera node with the realsense source, hardware-free: a librealsense recording played back."""

import numpy as np
import pytest

from tests.rosutil import node_process, probe, stop_process, wait_for

pytestmark = pytest.mark.ros


def synthetic_frames(n=60, h=48, w=64):
    frames = []
    for k in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = k * 4  # red encodes the frame index
        img[:, : w // 2, 1] = 200  # left half green: orientation check
        frames.append(img)
    return frames


def test_realsense_recording_is_published_as_stamped_images(tmp_path):
    from sensor_msgs.msg import CameraInfo, Image
    from rclpy.qos import qos_profile_sensor_data

    from mail_policy_node.data.cameras import record_realsense_file

    rec = tmp_path / "cam.db3"
    record_realsense_file(str(rec), synthetic_frames())
    with probe() as p:
        images = p.subscribe(Image, "/camera/agentview/image_raw", qos_profile_sensor_data)
        infos = p.subscribe(CameraInfo, "/camera/agentview/camera_info", qos_profile_sensor_data)
        proc = node_process("mail_policy_node.nodes.camera_node", "camera_agentview",
                            {"camera_name": "agentview", "source": "realsense", "playback_file": str(rec)})
        try:
            wait_for(lambda: len(images) >= 10, timeout=30, what="10 images from the camera node")
        except TimeoutError as exc:
            pytest.fail(f"{exc} (got {len(images)}); the camera node said:\n{stop_process(proc)}")
        out = stop_process(proc)
    m = images[-1]
    assert (m.height, m.width, m.encoding, m.step) == (48, 64, "rgb8", 192), out
    img = np.frombuffer(bytes(m.data), np.uint8).reshape(48, 64, 3)
    assert img[0, 0, 1] == 200 and img[0, -1, 1] == 0  # not mirrored or transposed
    red = [np.frombuffer(bytes(x.data), np.uint8)[0] for x in images]
    assert all(b > a for a, b in zip(red, red[1:])), "frames out of order"
    stamps = [x.header.stamp.sec + 1e-9 * x.header.stamp.nanosec for x in images]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), "stamps must increase"
    assert infos and infos[-1].k[0] > 0 and infos[-1].width == 64
    assert images[-1].header.frame_id == "agentview_optical_frame"


@pytest.mark.parametrize("slow_reader", [False, True])
def test_every_frame_of_a_recording_is_read_before_it_ends(tmp_path, slow_reader):
    """As the node reads a recording: every frame comes, fast reader or slow, and the end is the
    recording's end, not the first read that times out (CI once saw "finished after 1 frames" on 60;
    librealsense then stopped after 1-2 frames in half of the runs)."""
    import time

    from mail_policy_node.data.cameras import RealSenseCamera, record_realsense_file

    rec = tmp_path / "cam.db3"
    record_realsense_file(str(rec), synthetic_frames(n=20))
    for run in range(4):
        cam = RealSenseCamera(playback_file=str(rec), realtime_playback=False)
        cam.open()
        try:
            got, deadline = [], time.monotonic() + 30
            while time.monotonic() < deadline:
                if slow_reader:
                    time.sleep(0.03)  # the reader falls behind; non-real-time playback waits for it
                frame = cam.read(timeout=0.01 if slow_reader else 1.0)  # timeouts while playing: not the end
                if frame is None:
                    if cam.ended:
                        break
                    continue
                got.append(int(frame.rgb[0, 0, 0]))
            assert got == [4 * k for k in range(20)], (run, got)
        finally:
            cam.close()


# ---- a camera that cannot start, or stops, ends its node loudly ---------------------------------------

def _wait_exit(proc, timeout):
    import subprocess

    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # still running: the test fails with its output
        return None


@pytest.mark.parametrize("case", ["no_such_serial", "no_such_file", "not_a_recording"])
def test_a_camera_that_cannot_start_exits_non_zero_with_the_reason(tmp_path, case):
    """Before the fix the capture thread died with a traceback and the node stayed up publishing
    nothing, so the policy waited forever; now it exits 1 with the reason (the launch respawns it a
    limited number of times)."""
    params = {"camera_name": "agentview", "source": "realsense"}
    if case == "no_such_serial":
        params["serial"] = "123456789012"
        reason = "serial 123456789012"
    elif case == "no_such_file":
        params["playback_file"] = str(tmp_path / "missing.db3")
        reason = "no such file"
    else:
        junk = tmp_path / "junk.db3"
        junk.write_text("not a recording\n")
        params["playback_file"] = str(junk)
        reason = "not a librealsense recording"
    proc = node_process("mail_policy_node.nodes.camera_node", "camera_agentview", params)
    rc = _wait_exit(proc, 30)
    out = stop_process(proc)
    assert rc == 1, f"exit code {rc}; the camera node said:\n{out}"
    assert "could not start" in out and reason in out and "FATAL" in out, out


def test_a_camera_that_stops_delivering_frames_exits_non_zero(tmp_path):
    """A camera that goes silent mid-run (unplugged) must not leave a live node that publishes nothing.
    The silence comes from a recording of a camera that stopped for 4 s: played in real time, no
    frame reaches the node for 4 s, as with an unplugged device (a live device cannot be unplugged
    here). With frame_timeout_periods 15 (0.5 s at 30 fps) the node reports it and exits 1."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mail_policy_node.data.cameras import record_realsense_file

    rec = tmp_path / "dropout.db3"
    stamps = [k / 30 for k in range(20)] + [4.0 + k / 30 for k in range(20)]
    record_realsense_file(str(rec), synthetic_frames(n=40), timestamps=stamps)
    with probe() as p:
        images = p.subscribe(Image, "/camera/agentview/image_raw", qos_profile_sensor_data)
        proc = node_process("mail_policy_node.nodes.camera_node", "camera_agentview",
                            {"camera_name": "agentview", "source": "realsense", "playback_file": str(rec),
                             "frame_timeout_periods": 15})
        rc = _wait_exit(proc, 30)
        out = stop_process(proc)
    assert rc == 1, f"exit code {rc}; the camera node said:\n{out}"
    assert "no frame for" in out and "15 x the 33.3 ms frame period" in out, out
    assert 0 < len(images) <= 20, len(images)  # it ended in the silence, not after the recording


# ---- stamps: acquisition time on the host clock --------------------------------------------------------

def test_recording_frames_are_stamped_on_its_timeline_anchored_to_the_host_clock(tmp_path):
    """A recording made a day ago (global_time stamps of then) is played as if its camera were live
    now: stamps are host times (a live policy can match them with live joint states) that keep the
    recorded intervals, and the node says once which time domain it stamps in."""
    import time

    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mail_policy_node.data.cameras import record_realsense_file

    rec = tmp_path / "yesterday.db3"
    day_ago = time.time() - 86400.0
    recorded = [day_ago + k / 30 for k in range(15)] + [day_ago + 0.8 + k / 30 for k in range(15)]
    record_realsense_file(str(rec), synthetic_frames(n=30), timestamps=recorded, domain="global_time")
    with probe() as p:
        images = p.subscribe(Image, "/camera/agentview/image_raw", qos_profile_sensor_data)
        proc = node_process("mail_policy_node.nodes.camera_node", "camera_agentview",
                            {"camera_name": "agentview", "source": "realsense", "playback_file": str(rec)})
        try:
            wait_for(lambda: len(images) >= 25, 30, what="25 images")
            time.sleep(0.5)
        finally:
            out = stop_process(proc)
        arrivals = list(p.arrivals["/camera/agentview/image_raw"])
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in images]
    index = [int(np.frombuffer(bytes(m.data), np.uint8)[0]) // 4 for m in images]
    for s, a in zip(stamps, arrivals):
        assert a - 0.5 < s <= a + 0.005, (s, a)  # host time, at or a little before it arrived
    # the recorded intervals, 0.8 s gap included, unless playback fell behind and re-anchored (logged)
    if "re-anchored" not in out:
        for (i, s), (j, t) in zip(zip(index, stamps), zip(index[1:], stamps[1:])):
            assert t - s == pytest.approx(recorded[j] - recorded[i], abs=1e-6), (i, j)
    assert out.count("stamps: recording (global_time in the file)") == 1, out


def read_all(cam, timeout=30.0, on_frame=None):
    import time

    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = cam.read(timeout=0.2)
        if frame is None:
            if cam.ended:
                return got
            continue
        got.append((frame, time.time()))
        if on_frame is not None:
            on_frame(len(got) - 1)
    raise TimeoutError(f"recording not finished after {timeout} s ({len(got)} frames)")


def test_playback_stamps_are_the_recorded_acquisition_times_not_the_read_times(tmp_path):
    """Before the fix a played-back frame was stamped with the time it was read: a reader 80 ms late
    stamped its frame 80 ms late. Now every frame carries its place on the recording's timeline
    (anchored at the first frame), so the recorded intervals survive a late reader."""
    import time

    from mail_policy_node.data.cameras import RealSenseCamera, record_realsense_file

    rec = tmp_path / "cam.db3"
    recorded = [k / 30 for k in range(10)] + [0.5 + k / 30 for k in range(10)]  # a 0.2 s dropout inside
    record_realsense_file(str(rec), synthetic_frames(n=20), timestamps=recorded)
    cam = RealSenseCamera(playback_file=str(rec))
    cam.timeline.max_lag = 1.0  # this test's late reader must not count as falling behind
    t_open = time.time()
    cam.open()
    try:
        got = read_all(cam, on_frame=lambda k: time.sleep(0.08) if k == 4 else None)
    finally:
        cam.close()
    frames = [f for f, _ in got]
    assert [int(f.rgb[0, 0, 0]) // 4 for f in frames] == list(range(20))
    stamps = [f.stamp for f in frames]
    assert [b - a for a, b in zip(stamps, stamps[1:])] == pytest.approx(
        [b - a for a, b in zip(recorded, recorded[1:])], abs=1e-6)
    assert t_open <= stamps[0] and all(s <= read + 1e-3 for s, (_, read) in zip(stamps, got))
    assert cam.timeline.reanchors == 0
    assert cam.time_domain.startswith("recording (hardware_clock in the file)")


def test_a_recording_whose_clock_goes_back_is_re_anchored_forward(tmp_path):
    """A recording that starts again (or a camera reset while recording): its clock goes back, the
    stamps must not. The timeline re-anchors at that frame; the intervals on each side are kept."""
    from mail_policy_node.data.cameras import RealSenseCamera, record_realsense_file

    rec = tmp_path / "loop.db3"
    recorded = [k / 30 for k in range(10)] * 2
    record_realsense_file(str(rec), synthetic_frames(n=20), timestamps=recorded)
    cam = RealSenseCamera(playback_file=str(rec))
    cam.timeline.max_lag = 1.0
    cam.open()
    try:
        stamps = [f.stamp for f, _ in read_all(cam)]
    finally:
        cam.close()
    assert len(stamps) == 20 and all(b > a for a, b in zip(stamps, stamps[1:]))
    assert cam.timeline.reanchors == 1 and "went back" in cam.timeline.last_reanchor
    assert [b - a for a, b in zip(stamps[10:], stamps[11:])] == pytest.approx([1 / 30] * 9, abs=1e-6)


class SoftwareColourCamera:
    """A librealsense software device with one colour sensor, streaming into a frame queue: real
    librealsense frames whose timestamp, domain and arrival metadata the test sets, as a device's
    firmware and USB backend would. (A pipeline cannot open a software device in librealsense 2.59,
    so the live read path is tested through `frame_timing` + `FrameClock`, which it calls.)"""

    def __init__(self, w=8, h=6, global_time_option=None):
        import pyrealsense2 as rs

        self.rs, self.w, self.h = rs, w, h
        self.dev = rs.software_device()
        self.sensor = self.dev.add_sensor("Color")
        if global_time_option is not None:
            self.sensor.add_option(rs.option.global_time_enabled, rs.option_range(0, 1, 1, 0), True)
            self.sensor.set_option(rs.option.global_time_enabled, float(global_time_option))
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.color, 0, 0, w, h, 30, 3
        vs.fmt = rs.format.rgb8
        self.profile = self.sensor.add_video_stream(vs).as_video_stream_profile()
        self.queue = rs.frame_queue(64, keep_frames=True)
        self.sensor.open(self.profile)
        self.sensor.start(self.queue)
        self.k = 0

    def push(self, timestamp_ms, domain, arrival=None):
        rs = self.rs
        if arrival is not None:
            self.sensor.set_metadata(rs.frame_metadata_value.time_of_arrival, int(round(arrival * 1000)))
        f = rs.software_video_frame()
        f.pixels, f.bpp, f.stride = np.zeros((self.h, self.w, 3), np.uint8), 3, 3 * self.w
        f.timestamp, f.domain, f.frame_number = timestamp_ms, getattr(rs.timestamp_domain, domain), self.k
        f.profile = self.profile
        self.sensor.on_video_frame(f)
        self.k += 1

    def take(self):
        return self.queue.wait_for_frame(1000)

    def close(self):
        self.sensor.stop()
        self.sensor.close()


def test_live_hardware_clock_frames_are_stamped_at_arrival_not_when_read():
    """Global time off or unsupported: frames carry the device clock. They are mapped to the host
    clock from their arrival times, so a frame read 300 ms after it arrived keeps its arrival time,
    and a device clock that starts again (a reset) keeps the stamps on the host clock."""
    import time

    from mail_policy_node.data.cameras import FrameClock, frame_timing

    cam = SoftwareColourCamera()
    clock = FrameClock(window=30)
    delays = [0.003, 0.001, 0.004, 0.002, 0.0015]  # USB transfer: acquisition -> arrival on the host
    try:
        acquired, arrived = [], []
        t0 = time.time()
        for k in range(20):
            acquired.append(time.time())
            # the device's own clock, in ms; the device resets at k = 10 and its clock starts again
            device_ms = (5000.0 + 1000.0 * (acquired[-1] - t0) if k < 10 else
                         12.0 + 1000.0 * (acquired[-1] - acquired[10]))
            arrived.append(acquired[-1] + delays[k % len(delays)])
            cam.push(device_ms, "hardware_clock", arrival=arrived[-1])
            time.sleep(1 / 30)
        time.sleep(0.3)  # then read, late
        stamps = []
        for k in range(20):
            domain, device_t, arrival = frame_timing(cam.take())
            assert domain == "hardware_clock" and arrival == pytest.approx(arrived[k], abs=2e-3)
            stamps.append(clock.stamp(domain, device_t, arrival, read_time=time.time()))
    finally:
        cam.close()
    # acquisition time + the least transport delay seen so far (ms rounding of the metadata aside)
    errors = [s - a for s, a in zip(stamps, acquired)]
    assert all(-0.002 < e < 0.006 for e in errors), errors
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert clock.mapper.resets == 1 and clock.describe().startswith("hardware_clock")


@pytest.mark.parametrize("domain", ["global_time", "system_time"])
def test_live_host_domain_frames_keep_their_own_timestamp(domain):
    """global_time (device clock translated by librealsense) and system_time (librealsense's arrival
    time) are host times already: the frame's timestamp is the stamp, whenever the frame is read."""
    import time

    from mail_policy_node.data.cameras import FrameClock, frame_timing

    cam = SoftwareColourCamera()
    clock = FrameClock()
    try:
        t_acq = time.time() - 0.25
        cam.push(1000.0 * t_acq, domain)
        time.sleep(0.05)
        stamp = clock.stamp(*frame_timing(cam.take()), read_time=time.time())
        cam.push(1000.0 * (time.time() + 5.0), domain)  # a stamp after the read: capped at the read time
        read = time.time()
        capped = clock.stamp(*frame_timing(cam.take()), read_time=read)
    finally:
        cam.close()
    assert stamp == pytest.approx(t_acq, abs=1e-3)
    assert capped == read and clock.describe().startswith(domain)


def test_global_time_is_switched_on_where_a_sensor_offers_it():
    from mail_policy_node.data.cameras import enable_global_time

    with_option, without = SoftwareColourCamera(global_time_option=0), SoftwareColourCamera()
    try:
        assert enable_global_time(with_option.dev) == ["Color"]
        assert with_option.sensor.get_option(with_option.rs.option.global_time_enabled) == 1.0
        assert enable_global_time(without.dev) == []
    finally:
        with_option.close()
        without.close()


# ---- recordings for profile tests -----------------------------------------------------------------------

def test_simulator_frames_recorded_at_640x480_30fps_play_back_exactly(tmp_path):
    """What a profile test feeds its camera nodes with: a few hundred 640x480 frames rendered from the
    simulator, streamed from a generator (never all in memory), with the sim camera's intrinsics."""
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    from mail_policy_node.data.cameras import RealSenseCamera, intrinsics_from_fovy, record_realsense_file
    from mail_policy_node.sim.env import TaskEnv

    n, keep = 300, {}
    with TaskEnv("reach", image_size=(480, 640), cameras=("agentview",)) as env:
        env.reset(seed=0)
        intr = intrinsics_from_fovy(640, 480, env.camera_fovy("agentview"))

        def frames():
            img = None
            for k in range(n):
                if k % 10 == 0:  # the arm moves a little between renders
                    q = env.joint_state()
                    env.step(np.r_[q[:7] + 0.02, 0.04])
                    img = env.render("agentview")
                out = img.copy()
                out[0, :4] = k % 256  # every frame distinct
                if k % 37 == 0:
                    keep[k] = out
                yield out

        rec = tmp_path / "agentview.db3"
        assert record_realsense_file(str(rec), frames(), fps=30, intrinsics=intr) == n
    cam = RealSenseCamera(playback_file=str(rec), realtime_playback=False)
    cam.open()
    try:
        got = [f for f, _ in read_all(cam, timeout=60)]
    finally:
        cam.close()
    assert len(got) == n and [f.index for f in got] == list(range(n))
    for k, img in keep.items():
        assert np.array_equal(got[k].rgb, img), k
    assert got[0].rgb.shape == (480, 640, 3) and got[0].rgb.std() > 10  # a rendered scene, not a blank
    assert cam.frame_period == pytest.approx(1 / 30)
    assert [b.stamp - a.stamp for a, b in zip(got, got[1:])] == pytest.approx([1 / 30] * (n - 1), abs=1e-6)
    assert (cam.intrinsics.fx, cam.intrinsics.cy) == pytest.approx((intr.fx, intr.cy), rel=1e-5)


def test_the_camera_lifecycle_streams_only_while_active(tmp_path):
    """A managed camera (autostart false) through its real lifecycle services: nothing before activate
    (configure only checks the recording), frames while active, none after deactivate, frames again on a
    second activate; a configure that fails (no such recording) leaves it unconfigured and alive."""
    import time

    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mail_policy_node.data.cameras import record_realsense_file

    rec = tmp_path / "cam.db3"
    record_realsense_file(str(rec), synthetic_frames(n=60))

    def call(p, srv, name, request):
        client = p.node.create_client(srv, name)
        assert client.wait_for_service(timeout_sec=30), name
        future = client.call_async(request)
        wait_for(future.done, 30, what=name)
        return future.result()

    def change(p, node, tid):
        return call(p, ChangeState, f"/{node}/change_state", ChangeState.Request(transition=Transition(id=tid))).success

    def state(p, node):
        return call(p, GetState, f"/{node}/get_state", GetState.Request()).current_state.label

    with probe() as p:
        images = p.subscribe(Image, "/camera/agentview/image_raw", qos_profile_sensor_data)
        proc = node_process("mail_policy_node.nodes.camera_node", "camera_agentview",
                            {"camera_name": "agentview", "source": "realsense", "playback_file": str(rec),
                             "autostart": False})
        broken = node_process("mail_policy_node.nodes.camera_node", "camera_broken",
                              {"camera_name": "broken", "source": "realsense",
                               "playback_file": str(tmp_path / "missing.db3"), "autostart": False})
        try:
            assert state(p, "camera_agentview") == "unconfigured"
            assert change(p, "camera_agentview", Transition.TRANSITION_CONFIGURE)
            time.sleep(1.0)
            assert images == [] and state(p, "camera_agentview") == "inactive"
            assert change(p, "camera_agentview", Transition.TRANSITION_ACTIVATE)
            wait_for(lambda: len(images) >= 10, 30, what="frames while active")
            assert change(p, "camera_agentview", Transition.TRANSITION_DEACTIVATE)
            time.sleep(0.5)  # frames already on their way
            n = len(images)
            time.sleep(1.0)
            assert len(images) == n, "frames while inactive"
            assert change(p, "camera_agentview", Transition.TRANSITION_ACTIVATE)
            wait_for(lambda: len(images) >= n + 10, 30, what="frames after a second activate")

            assert not change(p, "camera_broken", Transition.TRANSITION_CONFIGURE)
            assert state(p, "camera_broken") == "unconfigured" and broken.poll() is None
        finally:
            out = stop_process(proc)
            said = stop_process(broken)
    assert proc.returncode == 0, out
    assert "configure failed" in said and "missing.db3" in said, said
