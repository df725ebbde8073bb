"""scripts/run_tests.sh against a ROS test file whose process hangs where pytest-timeout cannot interrupt it (as a
Fast DDS deadlock inside a C call does): the file is killed at ROS_FILE_TIMEOUT, said so, and run once more; in
the loopback namespace everything it started ends with it. The hang is made here (SIGALRM blocked, so
pytest-timeout's signal never arrives), because the Fast DDS deadlock cannot be caused on demand."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HANGS_ONCE = '''
import os, signal, subprocess, sys, time
from pathlib import Path
import pytest

pytestmark = pytest.mark.ROS_MARK


@pytest.mark.timeout(3)
def test_hangs_the_first_time():
    marker = Path(os.environ["HANG_MARKER"])
    if marker.exists():
        return
    marker.write_text("hung once")
    # something the file started, in a session of its own (as the tests' launched stacks are)
    subprocess.Popen(["sleep", os.environ["HANG_TOKEN"]], start_new_session=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(600)
'''


# the generated files' marker, spelled so that run_tests.sh's grep for ROS files does not take this file for one
# (it selected none of its tests with -m ros: exit 5, a failed run)
ROS_MARK = "r" + "os"


def _processes_with(arg: bytes) -> list[int]:
    """PIDs of the processes with ``arg`` among their command line's arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if arg in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_a_ros_file_that_hangs_is_killed_at_its_limit_and_run_once_more(tmp_path):
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "pytest.ini").write_text("[pytest]\nmarkers =\n    ros: a ROS file\n")
    (tests / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    (tests / "test_hangs.py").write_text(HANGS_ONCE.replace("ROS_MARK", ROS_MARK))
    token = f"{600 + (os.getpid() % 1000) / 1000 + time.time() % 1:.6f}"  # a sleep no one else runs
    env = {**os.environ, "TESTS": str(tests), "PY": sys.executable, "ROS_FILE_TIMEOUT": "12",
           "HANG_MARKER": str(tmp_path / "marker"), "HANG_TOKEN": token}
    try:
        t0 = time.monotonic()
        out = subprocess.run(["bash", str(ROOT / "scripts/run_tests.sh"), "-q", "-p", "no:cacheprovider"],
                             cwd=tests, env=env, capture_output=True, text=True, timeout=240)
        took = time.monotonic() - t0
        log = out.stdout + out.stderr
        assert (tmp_path / "marker").exists(), log  # the hang happened
        assert "test_hangs.py: killed after 12 s without an end (hung); running it once more" in log, log
        assert out.returncode == 0 and "all test runs passed" in log, log  # the rerun passed
        assert 12 <= took < 120, took
        if os.environ.get("MAIL_NETNS") == "loopback":  # a PID namespace per file: nothing it started is left
            assert _processes_with(token.encode()) == [], log
    finally:
        for pid in _processes_with(token.encode()):
            os.kill(pid, 9)


SLOW = '''
import time, pytest

pytestmark = pytest.mark.ROS_MARK


def test_slow():
    time.sleep(120)
'''


@pytest.mark.slow
def test_ctrl_c_still_reaches_a_ros_file(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the foreground process group) ends the ROS file's pytest at once. Under a
    plain `timeout` (its own process group) it never arrived: the file ran on to its end."""
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "pytest.ini").write_text("[pytest]\nmarkers =\n    ros: a ROS file\n")
    (tests / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    (tests / "test_slow.py").write_text(SLOW.replace("ROS_MARK", ROS_MARK))
    env = {**os.environ, "TESTS": str(tests), "PY": sys.executable}
    run = subprocess.Popen(["bash", str(ROOT / "scripts/run_tests.sh"), "-q", "-p", "no:cacheprovider", "-s"],
                           cwd=tests, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # its own process group, as a terminal's foreground job
    try:
        slow = str(tests / "test_slow.py").encode()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _processes_with(slow):  # until the ROS file's pytest runs
            time.sleep(0.2)
        assert _processes_with(slow), "the ROS file's pytest did not start"
        time.sleep(3)  # inside its test
        t0 = time.monotonic()
        os.killpg(run.pid, 2)
        log = run.communicate(timeout=60)[0]
        assert time.monotonic() - t0 < 20, log
        assert "KeyboardInterrupt" in log and "some test runs FAILED" in log, log
        assert not _processes_with(slow), log
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait()
        for pid in _processes_with(slow):  # what escaped the group, were Ctrl-C lost again
            os.kill(pid, 9)
