#!/usr/bin/env bash
# Create or update .venv-metaworld: Meta-World v3 (metaworld 3.1.1, mujoco 3.3.0) in a venv of its own,
# able to import everything of the main venv (.venv, made by `make env`): torch, safetensors, rosbags,
# the project's packages. metaworld pins mujoco 3.3.0 and the project 4.0.0, so the two cannot share one
# venv; this one holds only what .venv lacks (env/requirements-metaworld.txt, installed --no-deps) and a
# .pth file that appends .venv's site-packages and the project's package folders to sys.path after its
# own: mujoco 3.3.0 here comes first and shadows .venv's 4.0.0, everything else comes from .venv.
# Idempotent like scripts/setup_env.sh: a step is skipped when the hash of its inputs is unchanged.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAIN="${MAIL_VENV:-$ROOT/.venv}"
VENV="${MAIL_METAWORLD_VENV:-$ROOT/.venv-metaworld}"
BUILD="$ROOT/build"
cd "$ROOT"

SETUP_TAG=setup-metaworld
# shellcheck source=scripts/setup_steps.sh
source "$ROOT/scripts/setup_steps.sh"  # log, quiet, inputs_hash, step_done, mark_done

if [ ! -x "$MAIN/bin/python" ]; then
  log "the main venv $MAIN is missing: run 'make env' first (make metaworld-env does)"; exit 1
fi
main_site=$("$MAIN/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# 1. The venv, on the main venv's interpreter (the same Python: .venv's compiled packages load here).
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$MAIN/bin/python" -m venv --without-pip "$VENV"
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# 2. The pinned packages, with .venv's pip (--no-deps: the rest comes from .venv, see the requirements).
h=$(inputs_hash env/requirements-metaworld.txt)
if ! step_done pip "$h"; then
  log "installing env/requirements-metaworld.txt into $VENV (about 10 s on a fresh machine)"
  quiet metaworld-pip "$MAIN/bin/python" -m pip --python "$VENV/bin/python" install --disable-pip-version-check \
    --no-deps -r env/requirements-metaworld.txt
  mark_done pip "$h"
fi

# 3. .venv's packages after this venv's own: its site-packages and the folders of its editable installs
#    (plain path lines: .venv's own .pth files, e.g. the ROS wheels' re-exec bootstrap, are not run here).
{
  echo "$main_site"
  cat "$main_site"/__editable__.*.pth 2>/dev/null | grep '^/' || true
} > "$site/zz_main_venv.pth"

# 4. `mail-il` on this venv's interpreter: .venv-metaworld/bin/mail-il metaworld ... (the __main__ guard: worker
#    processes are spawned, and a spawned child imports the main script again)
printf '#!%s\nimport sys\nfrom mail_policy_node.cli import main\nif __name__ == "__main__":\n    sys.exit(main())\n' \
  "$VENV/bin/python" > "$VENV/bin/mail-il"
chmod +x "$VENV/bin/mail-il"

# 5. Check the result once per change (here or in .venv): mujoco 3.3.0 from here, torch and the project
#    from .venv.
h=$(inputs_hash "$VENV/.stamp-pip" "$site/zz_main_venv.pth" "$MAIN/.stamp-pip" "$MAIN/.stamp-project")
if ! step_done check "$h"; then
  quiet metaworld-check env -u PYTHONPATH MUJOCO_GL=egl "$VENV/bin/python" -c "
import mujoco, torch, metaworld, mail_policy_node.training.episodes, sys
assert mujoco.__version__ == '3.3.0', mujoco.__version__
assert mujoco.__file__.startswith('$VENV'), mujoco.__file__
print('mujoco', mujoco.__version__, 'torch', torch.__version__, 'python', sys.version.split()[0])"
  mark_done check "$h"
fi
log "ready: $VENV ($(du -sh "$VENV" | cut -f1); mujoco 3.3.0 + metaworld 3.1.1 over $MAIN)"
