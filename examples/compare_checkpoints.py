"""Two checkpoints replayed side by side on one bag, as `mail-il replay` does, and the table it prints.

    python examples/compare_checkpoints.py [BAG [CHECKPOINT_A CHECKPOINT_B]]

Defaults: the shipped checkpoint (weights stored as fp16) against its own export with bf16 weights (as
`mail-il export --weights bfloat16` writes it, into a temporary folder): what the coarser storage costs.
Without BAG a reach demo is recorded first with the simulator's scripted expert.
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering for the simulator (before mujoco loads)

import torch

from mail_policy_node.model.checkpoint import load_checkpoint, save_checkpoint
from mail_policy_node.replay import ReplayConfig, load_lanes, run_replay

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "mail_bringup/checkpoints/reach_dma_small"
tmp = Path(tempfile.mkdtemp(prefix="mail_example_"))
torch.set_num_threads(1)  # a small model on a busy CPU: one thread is the fastest

bag = Path(sys.argv[1]) if len(sys.argv) > 1 else None
if bag is None:  # record one demo: the scripted expert's commands plus every camera frame and joint state
    from mail_policy_node.commands.demos import record_demo
    from mail_policy_node.sim.env import make_task

    bag = tmp / "reach_demo"
    # seed 1000: a scene the shipped checkpoint never saw (its training demos were seeds 0-199)
    info = record_demo(make_task("reach", render=True), seed=1000, path=bag)
    print(f"recorded {bag}: {info['steps']} steps, success {info['success']}")

if len(sys.argv) > 3:
    checkpoints = [Path(sys.argv[2]), Path(sys.argv[3])]
else:  # the export: loaded with every check, re-saved with a new policy_id (its weights differ)
    policy = load_checkpoint(SHIPPED)
    save_checkpoint(policy, tmp / "reach_dma_small_bf16", weights_dtype=torch.bfloat16,
                    metadata={"exported_from": policy.metadata["policy_id"], "stored_weights": "bfloat16"})
    checkpoints = [SHIPPED, tmp / "reach_dma_small_bf16"]

# The replay builds each control tick's observation set as the policy node does (its synchroniser, a tick
# every dt) and asks every checkpoint's engine for a chunk at each tick (execution_horizon 1), so chunks
# overlap: "consistency" is how much consecutive chunks disagree about the same due time.
config = ReplayConfig(execution_horizon=1)
lanes = load_lanes(checkpoints, config)  # loaded and warmed up as the policy node does; labels: folder names
_, summary = run_replay([bag], lanes, config=config)  # summary: replay.summarise, the JSON report's content


def f(x):  # a figure with nothing to compare (no recorded action at any due time) is None
    return "-" if x is None else f"{x:.4g}"


# Errors: each predicted action against the recorded action due at the same time (every action of every
# chunk), in robot units (rad for joints, m for the gripper width), pooled over all action dimensions.
print(f"{'checkpoint':<24}{'obs':>7}{'chunks':>8}{'MSE':>11}{'MAE':>11}{'max':>10}{'consist.':>10}{'p50 ms':>9}")
for c in summary["checkpoints"]:
    o, e = c["overall"], c["overall"]["errors"]
    print(f"{c['label'][:23]:<24}{o['observations']:>7}{o['chunks']:>8}{f(e['mse']):>11}{f(e['mae']):>11}"
          f"{f(e['max']):>10}{f(o['consistency']['rms']):>10}{f(o['latency']['p50_ms']):>9}")
sp = summary["speed"]
print(f"{sp['bag_s']:.1f} s of bag in {sp['wall_s']:.1f} s: {sp['realtime_factor']:.2f}x real time")
