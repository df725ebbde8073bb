#!/usr/bin/env bash
# The test suite: everything that needs no ROS graph in one pytest process, then each file with
# ROS-graph tests (marker `ros`) in a pytest process of its own. Several rclpy contexts created one
# after another in one process were seen to stop discovering peers late in a long run (a probe that
# heard nothing), while every such file passes on its own; a process per file keeps the graph of one
# file from depending on what the files before it did.
#
# Loopback only: the pytest runs happen inside a network namespace of their own whose only interface is
# loopback (as root, where `unshare` works; MAIL_NETNS=loopback tells the tests). Nothing a test starts
# (DDS participants, franky-sim, `ros2 launch`) can reach the network or be reached from it, and graphs
# running side by side on this machine (another checkout's tests, a demo) cannot hear each other's
# discovery. A private /dev/shm keeps Fast DDS shared-memory ports apart too, and a private /run/netns
# lets tests create namespaces and veth pairs of their own inside (tests/bringup/test_loopback_namespace.py
# checks both). Only the test runs go in: the environment set-up before them (make env) needs the network
# for pip. Elsewhere (not root, no unshare), or with MAIL_NETNS=off, the tests run in the host's network.
set -u
if [ -z "${MAIL_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null \
    && unshare --net --mount sh -c 'ip link set lo up' 2>/dev/null; then
  export MAIL_NETNS=loopback
  # shellcheck disable=SC2016  # expanded by the inner shell
  exec unshare --net --mount --propagation private bash -c '
    set -e
    ip link set lo up
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm
    mkdir -p /run/netns && mount -t tmpfs -o mode=755 tmpfs /run/netns
    exec bash "$0" "$@"' "$0" "$@"
fi
[ "${MAIL_NETNS:-}" = loopback ] && echo "tests run in a loopback-only network namespace"

PY="${PY:-.venv/bin/python}"
MW_PY="${MW_PY:-.venv-metaworld/bin/python}"  # Meta-World's venv (make metaworld-env), over .venv
TESTS="${TESTS:-tests}"   # a folder or file to run only part of the suite, e.g. TESTS=tests/launch
status=0
"$PY" -m pytest -m "not ros" "$TESTS" "$@" || status=1
# tests/metaworld again under Meta-World's own interpreter (metaworld pins mujoco 3.3.0, the project 4.0.0):
# under .venv above its Meta-World modules skip. Run for the whole suite or a part inside tests/metaworld.
here=$(pwd -P)
target=$(realpath -m -- "$TESTS")
mw_tests=""
if [ "$target" = "$here/tests" ]; then
  mw_tests=tests/metaworld
elif [ "$target" = "$here/tests/metaworld" ] || [[ "$target" == "$here/tests/metaworld/"* ]]; then
  mw_tests=$TESTS
fi
if [ -n "$mw_tests" ]; then
  if [ -x "$MW_PY" ]; then
    echo "tests/metaworld under $MW_PY (Meta-World v3, mujoco 3.3.0)"
    "$MW_PY" -m pytest -m "not ros" "$mw_tests" "$@" || status=1
  else
    echo "$MW_PY is missing (make metaworld-env creates it): the Meta-World tests were skipped"
  fi
fi
# A ROS file's process can hang where pytest-timeout cannot interrupt it: inside a C call, with the GIL held.
# Fast DDS 2.14 deadlocks now and then when a process destroys a writer while discovery is checking a remote
# participant's liveliness (eProsima/Fast-DDS#6502, open; seen twice here, each time in the test process's
# teardown, after its tests had passed). So each file runs with a limit, ROS_FILE_TIMEOUT seconds (the longest
# file takes about 8 minutes), and is run once more if it was killed at it, saying so. Inside the loopback
# namespace each file also runs in a PID namespace of its own: killing it ends everything it started (the
# launched stack, the emulator, a ros2 daemon), so nothing is left running beside the rerun.
# `timeout --foreground` keeps the file in the terminal's process group, so Ctrl-C still reaches its pytest.
ROS_FILE_TIMEOUT="${ROS_FILE_TIMEOUT:-900}"
pid_namespace=()
if [ "${MAIL_NETNS:-}" = loopback ]; then
  # bash as the namespace's first process reaps what its children leave (pytest would leave zombies)
  # shellcheck disable=SC2016  # expanded by the inner shell
  pid_namespace=(unshare --pid --fork --kill-child --mount-proc bash -c '"$@"; exit $?' _)
fi
run_ros_file() {
  timeout --foreground -s KILL "$ROS_FILE_TIMEOUT" "${pid_namespace[@]}" "$PY" -m pytest -m ros "$@"
}
mapfile -t ros_files < <(grep -rl "pytest.mark.ros" "$TESTS" --include='test_*.py' | sort)
for f in "${ros_files[@]}"; do
  started=$SECONDS
  run_ros_file "$f" "$@"
  rc=$?
  if [ "$rc" = 137 ] && [ $((SECONDS - started)) -ge "$ROS_FILE_TIMEOUT" ]; then
    echo "$f: killed after ${ROS_FILE_TIMEOUT} s without an end (hung); running it once more"
    run_ros_file "$f" "$@"
    rc=$?
  fi
  [ "$rc" = 0 ] || status=1
done
[ "$status" = 0 ] && echo "all test runs passed" || echo "some test runs FAILED"
exit $status
