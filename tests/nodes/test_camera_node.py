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
