"""`record_realsense_file` keeps every frame it is handed. librealsense's recorder compresses and writes on a
thread of its own and drops what it has not written when it is released; before the recorder was waited for,
frames of noise (which compress slowly) were lost silently: 1035 of 3000 kept on the 2-core machine."""

from __future__ import annotations

import time

import numpy as np
import pytest

N_FRAMES = 240  # noise at 640x480: ~3.5 s for the recorder's writer on a 2-core machine, far behind the feed


def noise_frames(n: int, h: int = 480, w: int = 640):
    rng = np.random.default_rng(0)
    for k in range(n):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[0, 0] = (k % 256, k // 256, 7)  # the frame's index, read back below
        yield img


def test_every_frame_handed_to_the_recorder_is_in_the_file(tmp_path):
    pytest.importorskip("pyrealsense2")
    from mail_policy_node.data.cameras import RealSenseCamera, _frames_written, record_realsense_file

    path = str(tmp_path / "noise.db3")
    assert record_realsense_file(path, noise_frames(N_FRAMES)) == N_FRAMES
    assert _frames_written(path) == N_FRAMES
    cam = RealSenseCamera(playback_file=path, realtime_playback=False)
    cam.open()
    got, deadline = [], time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not cam.ended:
            frame = cam.read(timeout=1.0)
            if frame is not None:
                got.append(int(frame.rgb[0, 0, 0]) + 256 * int(frame.rgb[0, 0, 1]))
    finally:
        cam.close()
    assert got == list(range(N_FRAMES))


def test_a_file_that_is_not_yet_a_recording_holds_no_frames(tmp_path):
    from mail_policy_node.data.cameras import _frames_written

    assert _frames_written(str(tmp_path / "absent.db3")) == 0
    empty = tmp_path / "empty.db3"
    empty.write_bytes(b"")  # what the recorder leaves before it creates its tables
    assert _frames_written(str(empty)) == 0
