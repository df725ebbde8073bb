"""`mail-il train`: train a MaIL policy from rosbag2 demonstrations.

    mail-il train mail_bringup/config/train/reach_dma_bc_cpu.yaml
    mail-il train CONFIG.yaml train.steps=200 policy.head=DDPM data.fraction=0.2 out=runs/train/x
    mail-il train CONFIG.yaml --resume            # continue OUT's latest checkpoint
    mail-il train CONFIG.yaml train.device=cuda   # the same config on a GPU (bf16 autocast, kernels)
    mail-il train CONFIG.yaml data.topics_map=lab.yaml  # bags under other topic names (data.topics)

Writes OUT/checkpoints/step_*/ (resumable), OUT/final/ (a checkpoint for `mail-il eval` and the policy
node), OUT/log.jsonl, OUT/summary.json, OUT/config.yaml (the whole configuration, trainable again) and
OUT/loss.png (training and validation loss); prints the summary's main numbers.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="training config YAML (see mail_bringup/config/train/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.steps=100 policy.head=BC out=runs/train/x")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="DIR",
                        help="resume from DIR (a step checkpoint or a run folder); without DIR: the config's out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint_limits import CheckpointError
    from ..training.config import ConfigError, load_config
    from ..training.episodes import DatasetError

    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        if not cfg.data.bags:
            raise ConfigError("data.bags is empty: name the demonstration bags (or folders holding them)")
        from ..training.trainer import Trainer

        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
        d = trainer.data.describe()
        print(f"data: {d['episodes']}/{d['episodes_found']} episodes from {d['bags']} bags "
              f"({d['train_episodes']} train / {d['val_episodes']} val, {d['train_windows']} train windows, "
              f"cache hits {d['cache_hits']}/{d['bags']})", file=sys.stderr)
        summary = trainer.run()
    except CheckpointError as e:  # --resume: the checkpoint resumed from is unusable
        print(f"mail-il train: checkpoint refused: {e}", file=sys.stderr)
        return 2
    except (ConfigError, DatasetError) as e:
        print(f"mail-il train: {e}", file=sys.stderr)
        return 2
    val = summary["final_val_loss"]
    print(f"{summary['steps']} steps ({summary['epochs']:.1f} epochs) in {summary['train_seconds']:.0f} s, "
          f"{summary['samples_per_second']:.0f} {summary['sample_unit']}/s; loss {summary['final_train_loss']:.4f}, "
          f"val {'-' if val is None else f'{val:.4f}'}")
    print(f"checkpoint: {summary['final_checkpoint']} (policy {summary['policy_id']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mail-il train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
