# Source this on the GPU machine, from the repository root, to run the Meta-World benchmark there (no ROS, no
# Meta-World in the image): then `python3 -m mail_policy_node.cli metaworld ...`, `... train` and
# scripts/gpu/metaworld_suite.py work. It installs the git-ignored folder .mwwheels/, carried beside the tracked
# tree (its list and why: metaworld_suite.py's docstring): the cp312 wheels of metaworld 3.1.1 and its mujoco
# 3.3.0, gymnasium, glfw, pyopengl, rosbags, safetensors, ... into /tmp/mwsite, and the EGL loader .debs in
# .mwwheels/gl/ (the image has the NVIDIA driver's EGL, not the libglvnd loader that finds it). scipy, numpy and
# torch are the image's own: scipy's wheel (35 MB) does not fit the 64 MiB carry beside metaworld's (37 MB).
# Not with .gpuwheels (h200_env.sh): that one brings mujoco 4.0.0 for the FR3 tasks, which Meta-World refuses.
MWSITE=/tmp/mwsite
if ! ls .mwwheels/*.whl >/dev/null 2>&1; then
  echo "metaworld_env.sh: no wheels in .mwwheels/ (run from the repository root; carry .mwwheels)" >&2
  return 1
fi
# --upgrade: sourced again on a warm machine, pip replaces what it finds instead of skipping it
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$MWSITE" .mwwheels/*.whl || return 1
for deb in .mwwheels/gl/*.deb; do dpkg -x "$deb" /; done
ldconfig
export MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export PYTHONPATH="$MWSITE:$PWD/mail_policy_node:${PYTHONPATH:-}"
# what the image must bring itself, and Meta-World's own pin, checked now rather than in the first worker
python3 -c "
import mujoco, metaworld, scipy.spatial.transform, torch, rosbags.rosbag2
assert mujoco.__version__ == '3.3.0', f'mujoco {mujoco.__version__} shadows Meta-World\'s 3.3.0'
from mail_policy_node.benchmarks import metaworld_env
print(f'metaworld_env.sh: mujoco {mujoco.__version__}, torch {torch.__version__}, '
      f'CUDA {torch.cuda.is_available()}, {len(metaworld_env.all_tasks())} Meta-World tasks')
" || return 1
