#!/usr/bin/env bash
# Entry point of the MaIL images (docker/Dockerfile: GPU + ROS 2 from apt; docker/Dockerfile.cpu:
# CPU, ROS 2 from PyPI wheels in a venv).
#
#   entrypoint.sh PROFILE [ARG ...]    start a whole bringup profile (real_robot, sim, replay)
#   entrypoint.sh node NAME [ARG ...]  start one node of $MAIL_PROFILE (one container per node, as in
#                                      docker/compose.yaml); ARGs are ROS arguments, e.g. -p dry_run:=true
#   entrypoint.sh help                 this text
#   entrypoint.sh COMMAND [ARG ...]    anything else runs as given (bash, mail-il train ..., ros2 topic ...)
#
# A profile starts with `ros2 launch mail_bringup PROFILE.launch.py ARG ...` where ROS 2 is installed
# (arguments: robot_ip:=..., checkpoint:=...), else with `mail-il up PROFILE ARG ...` (arguments:
# node.param:=value). A node starts as `python3 -m mail_policy_node.nodes.<executable>` with the
# profile's parameter file, so it is the container's main process and gets the stop signal itself.
#
# Environment:
#   MAIL_ROS_SETUP        ROS setup file, sourced when it exists (default /opt/ros/jazzy/setup.bash)
#   MAIL_WS_SETUP         colcon workspace setup file; required where ROS is installed
#                         (default /opt/mail/ros2_ws/install/setup.bash)
#   MAIL_PROFILE          the profile whose parameter file `node` uses (default real_robot)
#   MAIL_PARAMS_DIR       folder of the profiles' YAML files (default /opt/mail/mail_bringup/config)
#   MAIL_PYTHON           interpreter for `node` (default python3)
#   MAIL_ENTRYPOINT_PRINT=1  print the command (shell-quoted, one line) instead of running it
set -uo pipefail

PROFILES=(real_robot sim replay)   # = mail_bringup.graph.PROFILES (tests/deploy checks)
ROS_SETUP="${MAIL_ROS_SETUP:-/opt/ros/jazzy/setup.bash}"
WS_SETUP="${MAIL_WS_SETUP:-/opt/mail/ros2_ws/install/setup.bash}"
PARAMS_DIR="${MAIL_PARAMS_DIR:-/opt/mail/mail_bringup/config}"

die() {
  printf 'entrypoint: %s\n' "$1" >&2
  exit "${2:-2}"
}

usage() {
  sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

is_profile() {
  local p
  for p in "${PROFILES[@]}"; do
    [ "$p" = "$1" ] && return 0
  done
  return 1
}

# Console script of a node (graph.py's NodeSpec.executable); its module is mail_policy_node.nodes.<it>.
node_executable() {
  case "$1" in
    camera_*) echo camera_node ;;
    policy_node) echo policy_node ;;
    franka_controller) echo franka_controller_node ;;
    sim_world) echo sim_world_node ;;
    bag_player) echo bag_player_node ;;
    chunk_recorder) echo chunk_recorder_node ;;
    *) return 1 ;;
  esac
}

# Source a setup file. ROS setup scripts read unset variables and may return non-zero, so neither
# `set -u` nor a failed last line of theirs may end this script.
source_setup() {
  set +u
  # shellcheck disable=SC1090  # the path is only known at run time
  source "$1"
  set -u
}

run() {
  if [ "${MAIL_ENTRYPOINT_PRINT:-0}" = 1 ]; then
    local out
    printf -v out '%q ' "$@"
    printf '%s\n' "${out% }"
    exit 0
  fi
  exec "$@"
}

# ---- environment: ROS from apt + the colcon workspace, or nothing to source (PyPI ROS in a venv) ----
ros_installed=0
workspace_missing=""
if [ -f "$ROS_SETUP" ]; then
  ros_installed=1
  source_setup "$ROS_SETUP"
  if [ -f "$WS_SETUP" ]; then
    source_setup "$WS_SETUP"
  else
    workspace_missing="workspace not built: $WS_SETUP does not exist (run colcon build in its workspace, or set MAIL_WS_SETUP)"
  fi
fi

need_workspace() {
  [ -z "$workspace_missing" ] || die "$workspace_missing" 3
}

[ $# -gt 0 ] || { usage >&2; exit 2; }
cmd="$1"
shift

case "$cmd" in
  help | -h | --help)
    usage
    exit 0
    ;;
  node)
    [ $# -gt 0 ] || die "usage: entrypoint.sh node NAME [ROS ARG ...]"
    name="$1"
    shift
    profile="${MAIL_PROFILE:-real_robot}"
    is_profile "$profile" || die "unknown profile '$profile' in MAIL_PROFILE; profiles: ${PROFILES[*]}"
    exe="$(node_executable "$name")" ||
      die "unknown node '$name'; nodes: camera_<name> policy_node franka_controller sim_world bag_player chunk_recorder"
    params="$PARAMS_DIR/$profile.yaml"
    [ -f "$params" ] || die "parameter file $params not found (set MAIL_PARAMS_DIR)" 3
    need_workspace
    run "${MAIL_PYTHON:-python3}" -m "mail_policy_node.nodes.$exe" --ros-args -r "__node:=$name" \
      --params-file "$params" "$@"
    ;;
esac

if is_profile "$cmd"; then
  if [ "$ros_installed" = 1 ]; then
    need_workspace
    command -v ros2 >/dev/null || die "$ROS_SETUP was sourced but there is no ros2 command" 3
    run ros2 launch mail_bringup "$cmd.launch.py" "$@"
  fi
  command -v mail-il >/dev/null ||
    die "neither ROS 2 ($ROS_SETUP) nor the mail-il command is installed; cannot start profile '$cmd'" 3
  run mail-il up "$cmd" "$@"
fi

# Anything else is a command to run as given: a shell, mail-il, ros2, a script.
if command -v "$cmd" >/dev/null; then
  [ -z "$workspace_missing" ] || printf 'entrypoint: warning: %s\n' "$workspace_missing" >&2
  run "$cmd" "$@"
fi
die "unknown profile or command '$cmd'; profiles: ${PROFILES[*]} (entrypoint.sh help for usage)"
