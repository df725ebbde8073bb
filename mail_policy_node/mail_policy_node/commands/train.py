"""`mail-il train`: train a MaIL policy from rosbag2 demonstrations.

    mail-il train mail_bringup/config/train/reach_dma_bc_cpu.yaml
    mail-il train CONFIG.yaml train.steps=200 policy.head=DDPM data.fraction=0.2 out=runs/train/x
    mail-il train CONFIG.yaml --resume            # continue OUT's latest checkpoint
    mail-il train CONFIG.yaml train.device=cuda   # the same config on a GPU (bf16 autocast, kernels)
    mail-il train CONFIG.yaml data.topics_map=lab.yaml  # bags under other topic names (data.topics)
    torchrun --standalone --nproc_per_node 4 -m mail_policy_node.cli train CONFIG.yaml train.device=cuda  # 4 GPUs
    torchrun --nproc_per_node 2 --master_addr 127.0.0.1 -m mail_policy_node.cli train CONFIG.yaml  # 2 CPU processes

Writes OUT/checkpoints/step_*/ (resumable), OUT/final/ (a checkpoint for `mail-il eval` and the policy
node), OUT/log.jsonl, OUT/summary.json, OUT/config.yaml (the whole configuration, trainable again) and
OUT/loss.png (training and validation loss); prints the summary's main numbers.

Several processes (PyTorch DDP): torchrun starts the module ``mail_policy_node.cli`` (``torchrun ... -m
mail_policy_node.cli train ...`` or ``python -m torch.distributed.run ... --module mail_policy_node.cli
train ...``; ``torchrun --no-python ... mail-il train ...`` runs the installed script instead; the
overrides go before --resume and --no-progress, as without torchrun). One process per GPU with
train.device=cuda (NCCL, each rank on cuda:LOCAL_RANK), or CPU processes over gloo (GLOO_SOCKET_IFNAME=lo
keeps them on loopback). train.batch_size (train.episodes_per_batch in stream history) stays one step's
global batch, shared evenly by the processes (one they cannot share is refused): the ranks together train
on exactly the windows one process would, and the loss curve is one process's (BC; DDPM noise and image
shifts are each rank's own draws). --resume works the same, on any number of processes. Rank 0 alone
validates, writes OUT and prints; an error is printed by every rank that meets it, with its rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="training config YAML (see mail_bringup/config/train/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.steps=100 policy.head=BC out=runs/train/x")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="DIR",
                        help="resume from DIR (a step checkpoint or a run folder); without DIR: the config's out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _name() -> str:
    """The start of an error line. Under torchrun every rank prints the errors it meets (one rank's failure
    stops the launch, and it may be the only rank that knows why), so each line says which rank it is."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    return f"mail-il train [rank {rank}/{world}]" if rank and world and world != "1" else "mail-il train"


def run(args: argparse.Namespace) -> int:
    from ..checkpoint_limits import CheckpointError
    from ..training import distributed
    from ..training.config import ConfigError, load_config
    from ..training.episodes import DatasetError

    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            if distributed.launch_from_env().is_main:
                print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        if not cfg.data.bags:
            raise ConfigError("data.bags is empty: name the demonstration bags (or folders holding them)")
        from ..training.trainer import Trainer

        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
        if trainer.dist.is_main:
            d = trainer.data.describe()
            ranks = f", {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
            print(f"data: {d['episodes']}/{d['episodes_found']} episodes from {d['bags']} bags "
                  f"({d['train_episodes']} train / {d['val_episodes']} val, {d['train_windows']} train windows, "
                  f"cache hits {d['cache_hits']}/{d['bags']}{ranks})", file=sys.stderr)
        summary = trainer.run()
    except CheckpointError as e:  # --resume: the checkpoint resumed from is unusable
        print(f"{_name()}: checkpoint refused: {e}", file=sys.stderr)
        return 2
    except (ConfigError, DatasetError) as e:
        print(f"{_name()}: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    if summary is None:  # a torchrun rank other than 0: rank 0 reports the run
        return 0
    val = summary["final_val_loss"]
    print(f"{summary['steps']} steps ({summary['epochs']:.1f} epochs) in {summary['train_seconds']:.0f} s, "
          f"{summary['samples_per_second']:.0f} {summary['sample_unit']}/s; loss {summary['final_train_loss']:.4f}, "
          f"val {'-' if val is None else f'{val:.4f}'}")
    print(f"checkpoint: {summary['final_checkpoint']} (policy {summary['policy_id']})")
    if summary.get("best"):
        b = summary["best"]
        print(f"lowest validation loss: {b['checkpoint']} (step {b['step']}, val {b['val_loss']:.4f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mail-il train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
