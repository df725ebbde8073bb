"""Fixtures for the control core tests: a reference pose, and franky-sim on loopback for the
hardware-in-the-loop tests (marked ``franky_sim``; skipped only when the simulator cannot start)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

READY_POSE = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])  # TCP at about (0.31, 0, 0.49) m
# A loopback address of our own (all of 127/8 is loopback on Linux), so a franky-sim another engineer
# runs on 127.0.0.1 is never the one these tests connect to and move.
SIM_HOST = f"127.77.{os.getpid() // 250 % 250 + 1}.{os.getpid() % 250 + 1}"


def _franky_sim_command() -> list[str] | None:
    exe = os.path.join(os.path.dirname(sys.executable), "franky-sim")
    if not os.path.exists(exe):
        exe = shutil.which("franky-sim")
    return None if exe is None else [exe, "-s", "mujoco", "--hostname", SIM_HOST]


@pytest.fixture(scope="module")
def franky_sim():
    """A franky-sim process bound to 127.0.0.1, stopped (SIGINT, then kill) after the module."""
    try:
        import franky
        import franky_sim  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"franky / franky-sim not installed: {exc}")
    cmd = _franky_sim_command()
    if cmd is None:
        pytest.skip("franky-sim executable not found")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30.0
    import franky

    robot = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            robot = franky.Robot(SIM_HOST, realtime_config=franky.RealtimeConfig.Ignore)
            break
        except Exception:
            time.sleep(0.2)
    if robot is not None and proc.poll() is not None:  # connected, but not to our process
        robot = None
    if robot is None:
        err = proc.stderr.read() if proc.poll() is not None else "no connection within 30 s"
        proc.kill()
        proc.wait()
        pytest.skip(f"franky-sim could not start: {err[-500:]}")
    del robot  # the tests connect through the adapter
    yield SIM_HOST
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
