"""Camera types are added in one place, data/cameras.py: the `CameraSource` protocols say what the camera
node asks of a source, and `register_camera_source` makes it a value of the node's `source` parameter.
Shown with tests/data/pattern_camera.py, a source that draws its frames (registered here, removed after)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mail_policy_node.data import cameras
from mail_policy_node.data.cameras import (CameraError, CameraSource, CapturedSource, RenderedSource,
                                           camera_parameters, make_camera_source)
from tests.data import pattern_camera

REPO = Path(__file__).resolve().parents[2]


def node_params(**kw) -> dict:
    """The camera node's parameter values as it passes them to a factory (defaults, then `kw`)."""
    return {p.name: p.default for p in camera_parameters()} | kw


@pytest.fixture
def pattern():
    before = dict(cameras.CAMERA_SOURCES)
    pattern_camera.register()
    try:
        yield
    finally:
        pattern_camera.unregister()
        assert cameras.CAMERA_SOURCES == before


def test_each_shipped_source_implements_the_protocol_of_its_kind():
    """Made as the node makes them (no device is touched before open: librealsense is only imported)."""
    pytest.importorskip("pyrealsense2")
    realsense = make_camera_source(node_params(source="realsense"))
    playback = make_camera_source(node_params(source="realsense", playback_file="/tmp/x.db3"))
    sim = make_camera_source(node_params(source="sim", camera_name="agentview"))
    for live_or_file in (realsense, playback):
        assert isinstance(live_or_file, CameraSource) and isinstance(live_or_file, CapturedSource)
        assert not live_or_file.renders_sim_state
    assert not realsense.is_recording and playback.is_recording and not playback.ended
    assert isinstance(sim, CameraSource) and isinstance(sim, RenderedSource) and sim.renders_sim_state
    assert not sim.ready
    sim.check()  # nothing to check before a scene arrives


def test_a_registered_source_is_made_by_name_and_delivers_frames(pattern):
    source = make_camera_source(node_params(source="pattern", width=8, height=6, fps=90))
    assert isinstance(source, pattern_camera.PatternCamera) and isinstance(source, CapturedSource)
    source.check()
    source.open()
    try:
        frames = [source.read(timeout=1.0) for _ in range(3)]
    finally:
        source.close()
    assert [f.index for f in frames] == [0, 1, 2] and frames[2].rgb[0, 0, 0] == 2
    assert frames[0].rgb.shape == (6, 8, 3) and frames[1].stamp > frames[0].stamp
    assert source.intrinsics.width == 8 and source.time_domain == "host clock when drawn"
    with pytest.raises(CameraError, match="no left half"):
        make_camera_source(node_params(source="pattern", width=1)).check()


def test_the_source_parameter_lists_the_registered_sources(pattern):
    source = {p.name: p for p in camera_parameters()}["source"]
    assert source.choices == ("realsense", "sim", "pattern")
    assert "pattern: draws a test pattern" in source.full_description()
    source.check("pattern")
    assert {p.name: p for p in cameras.CAMERA_PARAMETERS}["source"].choices == source.choices


def test_an_unknown_source_is_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match="unknown camera source 'usb'; registered: realsense, sim"):
        make_camera_source(node_params(source="usb"))
    with pytest.raises(ValueError, match="source must be one of: realsense, sim; got 'usb'"):
        {p.name: p for p in camera_parameters()}["source"].check("usb")  # the node refuses it at start


def test_a_factory_that_makes_no_camera_source_is_refused():
    cameras.register_camera_source("broken", lambda p: object(), "makes no camera")
    try:
        with pytest.raises(TypeError, match="camera source 'broken' made a object, which does not implement "
                                            "CapturedSource"):
            make_camera_source(node_params(source="broken"))
        with pytest.raises(ValueError, match="'broken' is registered already"):
            cameras.register_camera_source("broken", lambda p: object(), "again")
    finally:
        cameras.unregister_camera_source("broken")


def test_the_data_package_stays_free_of_rclpy():
    import subprocess

    code = "import sys, mail_policy_node.data.cameras; sys.exit('rclpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
