"""640x480 camera images between processes go through Fast DDS shared memory (the project's profile
with a 32 MB segment): at 30 Hz best effort, essentially none are lost. With the default 512 KB segment
they fall back to fragmented UDP, which drops frames under best effort (ENVIRONMENT.md)."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.rosutil import probe

pytestmark = pytest.mark.ros
N = 90


def test_640x480_images_arrive_complete_and_intact(monkeypatch):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mail_policy_node.rosenv import FASTDDS_PROFILE
    from tests.rosutil import private_domain

    # the stack's own shared-memory profile (the rest of the suite runs over UDP), in a domain of its own
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))
    with private_domain():
        _exchange(Image, qos_profile_sensor_data)


def _exchange(Image, qos_profile_sensor_data):
    with probe() as p:
        got = p.subscribe(Image, "/camera/big/image_raw", qos_profile_sensor_data)
        peer = subprocess.Popen([sys.executable, str(Path(__file__).with_name("image_peer.py")), str(N)])
        try:
            peer.wait(timeout=60)
            time.sleep(0.3)
        finally:
            peer.kill()
        received = len(got)
        latencies = np.array(p.arrivals["/camera/big/image_raw"]) - np.array(
            [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in got])
    assert received >= 0.9 * N, f"only {received}/{N} 640x480 frames arrived"
    m = got[-1]
    assert (m.height, m.width, len(m.data)) == (480, 640, 480 * 640 * 3)
    idx = [np.frombuffer(bytes(x.data[:3]), np.uint8)[0] for x in got]
    assert all(b > a for a, b in zip(idx, idx[1:])), "frames out of order"
    print(f"640x480: {received}/{N} frames, latency p50 {np.median(latencies) * 1e3:.1f} ms")
