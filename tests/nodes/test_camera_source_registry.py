"""The camera node takes a camera type registered outside it by name: tests/data/pattern_camera.py (a
source that draws its frames) registered in the node's process, nothing changed in nodes/camera_node.py."""

from pathlib import Path

import numpy as np
import pytest

from tests.rosutil import node_process, probe, stop_process, wait_for

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]


def test_a_registered_camera_source_is_published_by_the_camera_node():
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    with probe() as p:
        images = p.subscribe(Image, "/camera/agentview/image_raw", qos_profile_sensor_data)
        infos = p.subscribe(CameraInfo, "/camera/agentview/camera_info", qos_profile_sensor_data)
        proc = node_process("tests.data.pattern_camera", "camera_agentview",
                            {"camera_name": "agentview", "source": "pattern", "width": 64, "height": 48, "fps": 30},
                            cwd=REPO)
        try:
            wait_for(lambda: len(images) >= 10 and infos, timeout=30, what="10 images and a camera_info")
        except TimeoutError as exc:
            pytest.fail(f"{exc} (got {len(images)}); the camera node said:\n{stop_process(proc)}")
        out = stop_process(proc)
    m = images[-1]
    assert (m.height, m.width, m.encoding) == (48, 64, "rgb8"), out
    img = np.frombuffer(bytes(m.data), np.uint8).reshape(48, 64, 3)
    assert img[0, 0, 1] == 200 and img[0, -1, 1] == 0
    red = [int(np.frombuffer(bytes(x.data), np.uint8)[0]) for x in images]
    assert all(b > a for a, b in zip(red, red[1:])), red
    assert infos[-1].width == 64 and infos[-1].k[0] > 0
    assert "drawing 64x48" in out and "stamps: host clock when drawn" in out, out


def test_an_unknown_camera_source_stops_the_node_naming_the_registered_ones():
    proc = node_process("mail_policy_node.nodes.camera_node", "camera_agentview",
                        {"camera_name": "agentview", "source": "pattern"})
    try:
        rc = proc.wait(timeout=30)
    finally:
        out = stop_process(proc)
    assert rc == 2 and "source must be one of: realsense, sim; got 'pattern'" in out, (rc, out)
