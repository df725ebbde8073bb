#!/usr/bin/env bash
# Builds the git-ignored folder that a GPU call carries beside the tracked tree. Run it here, on the CPU
# machine: the GPU machine reaches no package index. The versions are the ones the project's own venvs hold
# (env/requirements*.txt), so the GPU runs the packages the tests ran.
#
#   bash scripts/gpu/pack_carry.sh metaworld   # .mwwheels/  for metaworld_env.sh (needs make metaworld-env)
#   bash scripts/gpu/pack_carry.sh suite       # .gpuwheels/ for h200_env.sh      (needs make env)
#   bash scripts/gpu/pack_carry.sh engine      # .whl/       for h200_env.sh: ../shared/gpu's mamba-ssm and
#                                              #             causal-conv1d wheels alone (engine benchmarks)
#
# What each holds and why: metaworld_suite.py's and train_suite.py's docstrings. Both: cp312 manylinux
# wheels (the GPU image runs Python 3.12, its own torch, numpy and scipy) and gl/, the Debian packages of the
# EGL loader (the image has the NVIDIA driver's EGL, not libglvnd). suite adds fr3_assets.tar.xz: franky_sim's
# fr3.xml with the meshes it names. No mamba-ssm in suite: its kernels run only beside causal-conv1d's (model/
# kernels.py), and the two wheels (59 MiB) do not fit beside the others; the suite's D-Ma trains on the PyTorch
# scan (every run's summary says mamba_kernels false). The folder is built anew each time.
# The folder is added to .git/info/exclude (git must not see it), and the call carries it.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

case "${1:-}" in
  metaworld)
    DEST=.mwwheels PY=.venv-metaworld/bin/python
    PACKAGES="metaworld mujoco gymnasium cloudpickle farama-notifications glfw pyopengl imageio packaging
              rosbags ruamel.yaml lz4 backports.zstd apsw safetensors pyyaml tqdm typing_extensions" ;;
  suite)
    DEST=.gpuwheels PY=.venv/bin/python
    PACKAGES="mujoco mujoco-core pyopengl rosbags ruamel.yaml lz4 backports.zstd apsw safetensors pyyaml tqdm
              typing_extensions" ;;
  engine)
    DEST=.whl PY="" ;;  # copies ../shared's wheels: no venv asked
  *) echo "usage: $0 metaworld|suite|engine" >&2; exit 2 ;;
esac
[ -z "$PY" ] || [ -x "$PY" ] || { echo "pack_carry: $PY missing (make env / make metaworld-env first)" >&2; exit 1; }
mkdir -p .git/info && { grep -qx "/$DEST/" .git/info/exclude 2>/dev/null || echo "/$DEST/" >> .git/info/exclude; }

rm -rf "$DEST" && mkdir -p "$DEST"
if [ "$1" = engine ]; then
  cp ../shared/gpu/wheels/*.whl "$DEST/"
else
  pins=()
  for p in $PACKAGES; do
    pins+=("$p==$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$p")")
  done
  echo "pack_carry: ${pins[*]}"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any -d "$DEST" "${pins[@]}"
  mkdir -p "$DEST/gl" && (cd "$DEST/gl" && apt-get download libegl1 libglvnd0 libopengl0 2>/dev/null)
fi

if [ "$1" = suite ]; then
  ASSETS=$("$PY" -c 'import franky_sim, pathlib; print(pathlib.Path(franky_sim.__file__).parent / "assets")')
  STAGE=$(mktemp -d)
  mkdir -p "$STAGE/fr3_assets/meshes"
  cp "$ASSETS/fr3.xml" "$ASSETS/NOTICE" "$STAGE/fr3_assets/"
  # only the meshes fr3.xml names: the folder's other formats are 80 MB
  "$PY" -c '
import sys, xml.etree.ElementTree as ET
for e in ET.parse(sys.argv[1]).iter():
    if e.tag == "mesh" and "file" in e.attrib:
        print(e.attrib["file"])' "$ASSETS/fr3.xml" | while read -r mesh; do
    cp "$ASSETS/meshes/$mesh" "$STAGE/fr3_assets/meshes/"
  done
  tar cJf "$ROOT/$DEST/fr3_assets.tar.xz" -C "$STAGE" fr3_assets
  rm -rf "$STAGE"
fi
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
total=$(( $(du -sb "$DEST" | cut -f1) + tracked ))
tenths=$(( total * 10 / 1048576 ))
echo "pack_carry: $DEST with the tracked tree: $(( tenths / 10 )).$(( tenths % 10 )) MiB of the 64 MiB a call carries"
if [ "$total" -gt $(( 64 * 1048576 )) ]; then
  # the GPU runs read neither the shipped checkpoint nor the replay example
  echo "pack_carry: over by $(( (total - 64 * 1048576) / 1024 )) KiB: move the shipped checkpoint's weights" \
       "(mail_bringup/checkpoints/reach_dma_small/model.safetensors) and docs/results/replay_example/ (3.5 MiB)" \
       "out of the tree for the call, back after it"
fi
