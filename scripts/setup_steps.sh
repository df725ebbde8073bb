# Sourced by scripts/setup_env.sh and scripts/setup_metaworld_env.sh: their logging and hash-stamped steps.
# Needs VENV (where the stamps live), BUILD (build/setup-logs) and SETUP_TAG (the log prefix) set first.
# shellcheck shell=bash

log() { printf '[%s] %s\n' "$SETUP_TAG" "$*"; }
# Run a step with its output in build/setup-logs/NAME.log, shown only when it fails.
quiet() {
  local name=$1; shift
  mkdir -p "$BUILD/setup-logs"
  "$@" >"$BUILD/setup-logs/$name.log" 2>&1 || { log "$name failed:"; tail -40 "$BUILD/setup-logs/$name.log"; exit 1; }
}
# A step is skipped when the hash of its inputs equals the one stamped when it last ran.
inputs_hash() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
step_done() { [ -f "$VENV/.stamp-$1" ] && [ "$(cat "$VENV/.stamp-$1")" = "$2" ]; }
mark_done() { echo "$2" > "$VENV/.stamp-$1"; }
