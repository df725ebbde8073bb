# Source this on the GPU machine, from the repository root, to make the project importable there.
# It installs what is carried in the git-ignored folders (see train_suite.py's docstring for the list):
#   .whl/        mamba-ssm (+ causal-conv1d) wheels from ../shared/gpu: enough for the engine scripts
#   .gpuwheels/  MuJoCo, rosbags, safetensors ... wheels, the FR3 model tarball and the EGL loader .debs:
#                enough to record demonstrations, train and evaluate there (Mamba on the PyTorch path)
# `bash scripts/gpu/pack_carry.sh engine` (or `suite`) builds the folder here and says whether it fits the 64 MiB
# carry beside the tracked tree; both folders together never do.
SITE=/tmp/site
for dir in .whl .gpuwheels; do
  ls "$dir"/*.whl >/dev/null 2>&1 || continue
  python3 -m pip install -q --no-index --no-deps --target "$SITE" "$dir"/*.whl || return 1
done
if [ -d .gpuwheels/gl ]; then
  for deb in .gpuwheels/gl/*.deb; do dpkg -x "$deb" /; done
  ldconfig
  mkdir -p /tmp/fr3 && tar xJf .gpuwheels/fr3_assets.tar.xz -C /tmp/fr3
  export MAIL_FR3_ASSETS=/tmp/fr3/fr3_assets MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export PYTHONPATH="$SITE:$PWD/mail_policy_node:${PYTHONPATH:-}"
