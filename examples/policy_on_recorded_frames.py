"""One checkpoint on the recorded frames of one demo, through the InferenceEngine (no ROS, no robot).

    python examples/policy_on_recorded_frames.py [CHECKPOINT] [BAG]

CHECKPOINT defaults to the shipped mail_bringup/checkpoints/reach_dma_small; without BAG a reach demo is
recorded first with the simulator's scripted expert into a temporary folder.
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering for the simulator (before mujoco loads)

import numpy as np
import torch

from mail_policy_node.data.bags import load_demo
from mail_policy_node.engine import EngineConfig, InferenceEngine, Observation

ROOT = Path(__file__).resolve().parents[1]
checkpoint = sys.argv[1] if len(sys.argv) > 1 else ROOT / "mail_bringup/checkpoints/reach_dma_small"
bag = sys.argv[2] if len(sys.argv) > 2 else None
torch.set_num_threads(1)  # a small model on a busy CPU: one thread is the fastest

if bag is None:  # record one demo: the scripted expert's commands plus every camera frame and joint state
    from mail_policy_node.commands.demos import record_demo
    from mail_policy_node.sim.env import make_task

    bag = Path(tempfile.mkdtemp(prefix="mail_example_")) / "reach_demo"
    # seed 1000: a scene the shipped checkpoint never saw (its training demos were seeds 0-199)
    info = record_demo(make_task("reach", render=True), seed=1000, path=bag)
    print(f"recorded {bag}: {info['steps']} steps, success {info['success']}")

# The engine loads the folder (config.json + model.safetensors) with every check of the policy node.
engine = InferenceEngine.from_checkpoint(checkpoint, EngineConfig(device="cpu"))
d = engine.describe()
print(f"checkpoint {d['policy_id']}: {d['variant']} {d['head']}, K={d['K']} observations, J={d['J']} actions, "
      f"dt={d['dt']} s")

# The bag as training reads it: row k holds the newest frame of each camera and joint state at or before
# action k, and action k itself (the expert's command for that observation). Frames stay at the recorded
# size; the engine resizes them to the model's (image_size=None).
demo = load_demo(bag, cameras=engine.spec.camera_names, image_size=None)
order = [demo.action_names.index(n) for n in engine.spec.action_names]  # recorded -> the policy's order
recorded = demo.actions[:, order]

engine.reset()  # a new episode: empty observation history
errors, holds = [], []
names = engine.spec.action_names
print(f"{'step':>4} {'stamp s':>8} {'due s':>7} {'worst joint':>11} {'predicted':>9} {'recorded':>9} "
      f"{'|error| rad':>11} {'hold rad':>9} {'latency ms':>10}")
for k, stamp in enumerate(demo.times):
    obs = Observation(stamp=float(stamp), images={c: demo.images[c][k] for c in demo.images},
                      state=demo.joint_state[k])
    chunk = engine.step(obs)  # observe (encode the frames, push them into the history) + act (one chunk)
    # Action i of a chunk is due at stamp + start_offset + i * dt: the first one a dt after the frames were
    # taken, which is when the recorded command for this observation was due as well.
    first = chunk.actions[0, 0]
    err = np.abs(first[:7] - recorded[k, :7]).mean()  # joints only; the gripper width is in metres
    j = int(np.argmax(np.abs(first[:7] - recorded[k, :7])))
    # the yardstick: commanding the joints where they are now (holding still) would be this far off
    hold = np.abs(demo.joint_state[k, :7] - recorded[k, :7]).mean()
    errors.append(err)
    holds.append(hold)
    print(f"{k:>4} {stamp:>8.2f} {chunk.due[0, 0]:>7.2f} {names[j]:>11} {first[j]:>9.4f} {recorded[k, j]:>9.4f} "
          f"{err:>11.4f} {hold:>9.4f} {chunk.latency_s * 1e3:>10.1f}")  # the first step includes the warm-up

mean, mean_hold = float(np.mean(errors)), float(np.mean(holds))
print(f"mean |error| over {len(errors)} steps: {mean:.4f} rad per joint (holding still: {mean_hold:.4f} rad)")
sys.exit(0 if np.isfinite(mean) else 1)
