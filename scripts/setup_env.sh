#!/usr/bin/env bash
# Create or update .venv with everything the project needs: ROS 2 Jazzy (PyPI wheels), mail_msgs built
# into the venv, torch (CPU here), the simulator, bag tools and the project's own packages (editable).
# Idempotent: each step records a hash of its inputs and is skipped when nothing changed, so a re-run
# takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MAIL_VENV:-$ROOT/.venv}"
BUILD="$ROOT/build"
PY="${PYTHON:-python3}"
cd "$ROOT"

SETUP_TAG=setup
# shellcheck source=scripts/setup_steps.sh
source "$ROOT/scripts/setup_steps.sh"  # log, quiet, inputs_hash, step_done, mark_done

# 1. System libraries: libusb for pyrealsense2; libfaketime for the tests that give one process another
#    wall clock (a controller whose clock is behind). Only touched when missing (needs root, as on CI).
missing=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing+=(libfaketime)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "warning: ${missing[*]} missing and cannot apt-get: RealSense / libfaketime tests will skip"
  fi
fi

# 2. The virtual environment and pinned Python packages.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
h=$(inputs_hash env/requirements.txt)
if ! step_done pip "$h"; then
  log "installing pinned packages (env/requirements.txt), about 2 minutes on a fresh machine"
  quiet pip-upgrade "$VENV/bin/python" -m pip install --disable-pip-version-check 'pip==26.3'
  quiet pip-install "$VENV/bin/python" -m pip install --disable-pip-version-check -r env/requirements.txt
  rm -f "$VENV"/.stamp-msgs   # the CMake exports below are rewritten again after a reinstall
  mark_done pip "$h"
fi

# 3. mail_msgs, built with plain CMake into the venv. The ROS wheels' exported CMake files name the
#    interpreter of the machine that built them; point them at this venv's interpreter first.
h=$(inputs_hash env/requirements.txt mail_msgs/CMakeLists.txt mail_msgs/package.xml mail_msgs/msg/*.msg)
if ! step_done msgs "$h"; then
  log "building mail_msgs into the venv"
  inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  # nothing to rewrite (grep exit 1) when pip kept the ROS wheels already rewritten by an earlier run
  { grep -rl '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$inc#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g"
  rm -rf "$BUILD/mail_msgs" && mkdir -p "$BUILD/mail_msgs"
  (
    cd "$BUILD/mail_msgs"
    export AMENT_PREFIX_PATH="$VENV"
    cmake "$ROOT/mail_msgs" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >cmake.log 2>&1 \
      && make -j"$(nproc)" >make.log 2>&1 && make install >install.log 2>&1
  ) || { log "mail_msgs build failed; see $BUILD/mail_msgs/*.log"; tail -n 30 "$BUILD"/mail_msgs/*.log; exit 1; }
  mark_done msgs "$h"
fi

# 4. The project's own packages, editable, so a change in the tree needs no re-install. "compat" mode
#    puts the package folders on sys.path through a .pth file, so the checkout's top-level folders of
#    the same names (ROS package roots) cannot shadow the Python packages as namespace packages.
h=$(inputs_hash mail_policy_node/setup.py mail_policy_node/setup.cfg mail_bringup/setup.py mail_bringup/setup.cfg)
if ! step_done project "$h"; then
  log "installing mail_policy_node and mail_bringup (editable)"
  quiet pip-project "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e mail_policy_node -e mail_bringup
  mark_done project "$h"
fi

# 5. Test tools: the real ROS 2 launch system, `ros2` command line and colcon (../shared/ros2-tools; a
#    user with ROS 2 from apt has them already), then the colcon workspace ros2_ws built with them twice:
#    --symlink-install (what the README tells users) and a plain install (what a deployment does), each
#    in its own folder under build/, so tests run `ros2 launch` from both (tests/launch). A fresh clone
#    without ../shared skips this; those tests skip there.
TOOLS="${MAIL_ROS2_TOOLS:-$ROOT/../shared/ros2-tools}"
if [ -x "$TOOLS/install.sh" ]; then
  h=$(inputs_hash "$TOOLS/install.sh" "$VENV/.stamp-pip" <(ls "$TOOLS/wheels"))
  if ! step_done ros2-tools "$h"; then
    log "installing launch, launch_ros, the ros2 command line and colcon from $TOOLS (test tools)"
    quiet ros2-tools bash "$TOOLS/install.sh" "$VENV"
    mark_done ros2-tools "$h"
  fi
  # What a build depends on: the packages' file names (a new file is a new link or install entry), the
  #    contents the build reads (all of them for a plain install, which copies the code), the venv underneath.
  files=$(find mail_msgs mail_policy_node mail_bringup -type f -not -path '*/__pycache__/*' -not -name '*.pyc' \
            -not -path '*.egg-info/*' | LC_ALL=C sort)
  meta=$(printf '%s\n' "$files" | grep -E '(package\.xml|setup\.py|setup\.cfg|CMakeLists\.txt|\.msg|resource/[^/]+)$')
  for kind in symlink plain; do
    if [ "$kind" = symlink ]; then
      # shellcheck disable=SC2086  # file names without spaces, one per word
      h=$( { printf '%s\n' "$files"; cat $meta "$VENV/.stamp-msgs" "$VENV/.stamp-ros2-tools"; } | sha256sum | cut -c1-16)
    else
      # shellcheck disable=SC2086
      h=$( { sha256sum $files; cat "$VENV/.stamp-msgs" "$VENV/.stamp-ros2-tools"; } | sha256sum | cut -c1-16)
    fi
    base="$BUILD/colcon-$kind"
    if ! step_done "colcon-$kind" "$h" || [ ! -f "$base/install/setup.bash" ]; then
      log "building ros2_ws with colcon ($kind install) into ${base#"$ROOT"/}"
      rm -rf "$base"
      flag=(); [ "$kind" = symlink ] && flag=(--symlink-install)
      t0=$(date +%s)
      quiet "colcon-$kind" env -C "$ROOT/ros2_ws" AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" \
        "$VENV/bin/colcon" --log-base "$base/log" build "${flag[@]}" --build-base "$base/build" \
        --install-base "$base/install" --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
      log "colcon ($kind install): $(( $(date +%s) - t0 )) s"
      mark_done "colcon-$kind" "$h"
    fi
  done
fi

log "ready: $VENV ($(du -sh "$VENV" | cut -f1))"
