#!/usr/bin/env bash
# The install recipe for a machine with ROS 2 Jazzy from apt (Ubuntu 24.04, Python 3.12): the GPU box
# and the real-time PC of the real robot, and docker/Dockerfile, which runs this script too.
#
#   env/install_ros_host.sh [--apt] [--gpu | --gpu-wheels DIR] [--venv DIR] [--workspace DIR]
#                           [--only apt|python|build] [--dry-run]
#
# Steps, in this order:
#   apt     the apt packages listed below: installed with --apt (through sudo unless root), else checked
#   python  a venv over the system site packages (--venv, default .venv-ros in the checkout), so apt's
#           rclpy, numpy 1.26 and OpenCV stay visible, holding env/requirements.txt less what apt
#           provides: the PyPI ROS wheels (ros-jazzy-*, catkin-pkg), numpy, and opencv-python-headless
#           (it needs numpy 2, under which ROS's message libraries, built against apt's numpy 1.26, do
#           not load). apt's numpy and setuptools are pip constraints, so nothing upgrades them.
#           --gpu adds the Mamba kernels of env/requirements-gpu.txt compiled here (nvcc of torch's CUDA
#           major version; every architecture upstream lists, which takes hours; MAX_JOBS caps nvcc
#           jobs); --gpu-wheels DIR installs kernel wheels built before (docker/Dockerfile's kernels stage).
#   build   the colcon workspace (--workspace, default ros2_ws) built by colcon running in the venv
#           (python -m colcon), so the nodes' scripts start with the venv's interpreter and see torch.
# --only STEP (repeatable) runs only those steps; docker/Dockerfile runs one per layer.
# --dry-run prints every command and every file it would write, runs nothing, and reports the machine
# check instead of enforcing it.
#
# Machines without ROS from apt (development, CI, the simulated demo on Debian 12) use `make env`
# (scripts/setup_env.sh) instead. Tests point MAIL_HOST_PYTHON (default /usr/bin/python3) and
# MAIL_ROS_SETUP (default /opt/ros/jazzy/setup.bash) at stand-ins.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
HOST_PY="${MAIL_HOST_PYTHON:-/usr/bin/python3}"   # apt's interpreter: apt's ROS is built for it
ROS_SETUP="${MAIL_ROS_SETUP:-/opt/ros/jazzy/setup.bash}"
PY_VERSION=3.12
APT_PACKAGES=(ros-jazzy-ros-base ros-jazzy-rosbag2-storage-mcap python3-colcon-common-extensions
  build-essential python3-dev python3-venv python3-numpy python3-opencv libusb-1.0-0)
# Lines of env/requirements.txt that apt provides here (see python above).
FROM_APT='^(ros-jazzy-|catkin-pkg|numpy|opencv-python)'
# mamba_ssm's package __init__ imports these; the kernels themselves are installed without dependencies
# (mamba-ssm also declares Mamba-3 packages the project does not use).
KERNEL_IMPORTS=(einops==0.8.2 transformers==4.57.6)
# What building the kernels without build isolation needs beside torch (as in the kernels stage).
KERNEL_BUILD_TOOLS=(wheel==0.45.1 ninja==1.13.0)

APT=0 GPU=none GPU_WHEELS="" DRY_RUN=0 STEPS=()
VENV="$ROOT/.venv-ros" WS="$ROOT/ros2_ws"

die() { printf 'install_ros_host: %s\n' "$1" >&2; exit "${2:-1}"; }
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  printf 'apt packages: %s\n' "${APT_PACKAGES[*]}"
}
need_value() { [ "$2" -ge 2 ] || die "$1 needs a value (--help)" 2; }

while [ $# -gt 0 ]; do
  case $1 in
    --apt) APT=1 ;;
    --gpu) GPU=build ;;
    --gpu-wheels) need_value "$1" $#; GPU=wheels GPU_WHEELS=$2; shift ;;
    --venv) need_value "$1" $#; VENV=$2; shift ;;
    --workspace) need_value "$1" $#; WS=$2; shift ;;
    --only)
      need_value "$1" $#
      case $2 in apt|python|build) STEPS+=("$2") ;; *) die "--only takes apt, python or build, not '$2'" 2 ;; esac
      shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (--help lists the options)" 2 ;;
  esac
  shift
done
[ ${#STEPS[@]} -gt 0 ] || STEPS=(apt python build)
VENV=$(realpath -m "$VENV") WS=$(realpath -m "$WS")
[ -z "$GPU_WHEELS" ] || GPU_WHEELS=$(realpath -m "$GPU_WHEELS")
selected() { [[ " ${STEPS[*]} " == *" $1 "* ]]; }

# Every command is printed as it runs (like `set -x`); in a dry run it is only printed.
quote() {  # words as one would type them: single quotes only where needed
  local a safe='^[A-Za-z0-9_./=:,+@%*-]+$' out=()
  for a in "$@"; do
    if [[ $a =~ $safe ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s' "${out[*]}"
}
run() {
  printf '+ %s\n' "$(quote "$@")"
  [ "$DRY_RUN" = 1 ] || "$@"
}
run_to() {  # run_to FILE COMMAND...: the command's output into FILE
  local file=$1; shift
  printf '+ %s > %s\n' "$(quote "$@")" "$(quote "$file")"
  [ "$DRY_RUN" = 1 ] || "$@" > "$file"
}
write() {  # write FILE: standard input into FILE, shown in full
  local text; text=$(cat)
  printf "+ cat > %s <<'EOF'\n%s\nEOF\n" "$(quote "$1")" "$text"
  [ "$DRY_RUN" = 1 ] || printf '%s\n' "$text" > "$1"
}

# What this machine lacks, one line each. $1=1: before the apt step, which installs ROS and the apt
# packages, so only what apt cannot fix.
machine_problems() {
  local version missing=() p
  if [ ! -x "$HOST_PY" ]; then
    echo "$HOST_PY not found: ROS 2 Jazzy's apt packages are built for Ubuntu 24.04's Python $PY_VERSION"
  else
    version=$("$HOST_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$version" = "$PY_VERSION" ] \
      || echo "$HOST_PY is Python $version, not $PY_VERSION: ROS 2 Jazzy's apt packages are built for Ubuntu 24.04's Python $PY_VERSION"
  fi
  [ -z "${ROS_DISTRO:-}" ] || [ "$ROS_DISTRO" = jazzy ] || echo "this shell has ROS $ROS_DISTRO sourced, not jazzy"
  [ "$1" = 1 ] || [ -f "$ROS_SETUP" ] \
    || echo "$ROS_SETUP not found: ROS 2 Jazzy is not installed from apt (ros-jazzy-ros-base, from the ROS 2 apt repository)"
  if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    echo "no apt-get / dpkg-query: not an Ubuntu machine"
    return
  fi
  [ "$1" = 1 ] && return
  for p in "${APT_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] \
    || echo "apt packages not installed: ${missing[*]} (run this script with --apt, or: sudo apt-get install ${missing[*]})"
}

check_machine() {  # $1: 1 (before the apt step), 0, or after-apt
  local problems
  problems=$(machine_problems "$1")
  if [ "$DRY_RUN" = 1 ]; then
    printf '# machine check: %s\n' "${problems:-a ROS 2 Jazzy machine from apt}" | sed '2,$s/^/# machine check: /'
  elif [ -n "$problems" ]; then
    {
      echo "install_ros_host: this is not a ROS 2 Jazzy machine from apt (Ubuntu 24.04, Python $PY_VERSION):"
      printf '%s\n' "$problems" | sed 's/^/  - /'
      [ "$1" = after-apt ] || echo "Nothing was installed."
      echo "Machines without ROS from apt (development, CI, the simulated demo) use \`make env\` (scripts/setup_env.sh)."
    } >&2
    exit 1
  fi
}

step_apt() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  run "${sudo[@]}" apt-get update
  run "${sudo[@]}" apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
}

step_python() {
  local py="$VENV/bin/python" req="$VENV/mail-requirements.txt" con="$VENV/mail-constraints.txt" extra=()
  run "$HOST_PY" -m venv --system-site-packages "$VENV"
  run touch "$VENV/COLCON_IGNORE"          # colcon must not look for packages in the venv
  write "$VENV/.gitignore" <<< '*'         # nor git, when the venv lies in the checkout
  grep -Ev "$FROM_APT" "$HERE/requirements.txt" | grep -Ev '^[[:space:]]*(#|$)' | write "$req"
  # shellcheck disable=SC2016  # Python code, not shell
  run_to "$con" "$py" -c 'import numpy, setuptools; print(f"numpy=={numpy.__version__}\nsetuptools=={setuptools.__version__}")'
  [ "$GPU" = none ] || extra=("${KERNEL_IMPORTS[@]}")
  run "$py" -m pip install -c "$con" -r "$req" "${extra[@]}"
  case $GPU in
    wheels)
      [ "$DRY_RUN" = 1 ] || compgen -G "$GPU_WHEELS/*.whl" >/dev/null || die "no kernel wheels (*.whl) in $GPU_WHEELS"
      run "$py" -m pip install --no-deps "$GPU_WHEELS"/*.whl ;;
    build)
      run "$py" -m pip install -c "$con" "${KERNEL_BUILD_TOOLS[@]}"
      # Compiled against the torch just installed (no build isolation), never a prebuilt wheel fetched
      # by the kernels' setup.py.
      run env MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
        "$py" -m pip install --no-build-isolation --no-deps -r "$HERE/requirements-gpu.txt" ;;
  esac
  if [ "$GPU" != none ]; then  # fail here, not in the policy node, when the kernels do not load
    run "$py" -c 'import torch, causal_conv1d
from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn
from mamba_ssm.ops.triton.selective_state_update import selective_state_update'
  fi
}

step_build() {
  [ "$DRY_RUN" = 1 ] || [ -x "$VENV/bin/python" ] || die "no venv at $VENV: run the python step first"
  printf '+ source %s\n' "$(quote "$ROS_SETUP")"
  if [ "$DRY_RUN" = 0 ]; then
    set +eu  # ROS setup files read unset variables and may end with a failed test
    # shellcheck disable=SC1090
    source "$ROS_SETUP"
    set -eu
  fi
  run "$VENV/bin/python" -m colcon build --symlink-install --base-paths "$WS/src" --build-base "$WS/build" \
    --install-base "$WS/install" --log-base "$WS/log"
}

if selected apt && [ "$APT" = 1 ]; then
  check_machine 1
  step_apt
  [ "$DRY_RUN" = 1 ] || check_machine after-apt   # what apt was to install is there now
else
  check_machine 0
fi
if selected python; then step_python; fi
if selected build; then
  step_build
  echo "# ready$([ "$DRY_RUN" = 1 ] && echo ' after a real run'); in each new shell:"
  echo "source $(quote "$ROS_SETUP") && source $(quote "$VENV/bin/activate") && source $(quote "$WS/install/setup.bash")"
fi
