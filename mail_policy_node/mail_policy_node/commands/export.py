"""`mail-il export`: re-save a checkpoint, e.g. with fp16 weights to ship a small one.

    mail-il export runs/train/reach_dma_bc_cpu/final mail_bringup/checkpoints/my_reach

The source is loaded with every check `load_checkpoint` makes (never unpickled); the copy keeps the
config and metadata (with where it came from) and gets a new policy_id, since its weights differ.
"""

from __future__ import annotations

WEIGHT_TYPES = ("float32", "float16", "bfloat16")


def add_arguments(parser) -> None:
    parser.add_argument("source", help="checkpoint folder (config.json + model.safetensors)")
    parser.add_argument("dest", help="folder to write")
    parser.add_argument("--weights", choices=WEIGHT_TYPES, default="float16",
                        help="storage type of the floating-point weights (loading casts them back to float32)")


def run(args) -> int:
    import sys

    import torch

    from mail_policy_node.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    try:
        policy = load_checkpoint(args.source)
    except CheckpointError as e:
        print(f"mail-il export: checkpoint refused: {e}", file=sys.stderr)
        return 2
    source_id = policy.metadata["policy_id"]
    try:
        new_id = save_checkpoint(policy, args.dest, metadata={"exported_from": source_id,
                                                              "stored_weights": args.weights},
                                 weights_dtype=getattr(torch, args.weights))
    except OSError as e:
        print(f"mail-il export: cannot write {args.dest}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"{args.source} ({source_id}) -> {args.dest} ({new_id}), weights stored as {args.weights}")
    return 0
