"""`mail-il replay`: recorded bags through one or more checkpoints, predictions vs recorded actions.

    mail-il replay runs/demos/reach/ep0000_seed0 --checkpoint runs/train/a/final --checkpoint runs/train/b/final
    mail-il replay BAG --checkpoint DIR --topics-map robot_topics.yaml --realtime --out runs/replay/x

Observation sets are built as the policy node builds them (its synchroniser, tick every dt), episodes
follow /mail/episode events. Bags under other topic names: ``--topics-map``, the same map (`data.topics`)
that training takes as ``data.topics_map``; bag folders are found as training finds them (through links).
Writes OUT/replay.json, OUT/summary.md, OUT/plots/*.png and OUT/chunks/<checkpoint>.npz; prints the
summary table. Exit status 1 when a bag or checkpoint cannot be replayed (the message names the missing
topic or the incompatibility).

Several bags replay in lockstep (``--batch``, 16 by default): each checkpoint's engine steps every bag's
tick as one batch (replay/batch.py), with the figures of one bag at a time. 20 reach demos with the shipped
checkpoint: 26x real time against 8x one at a time on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", type=Path, help="rosbag2 folders (mcap or sqlite3), or folders holding them")
    parser.add_argument("--checkpoint", action="append", required=True, type=Path,
                        help="checkpoint folder; repeat to compare checkpoints side by side")
    parser.add_argument("--realtime", action="store_true", help="pace the replay to the recorded timing (one bag at a "
                        "time)")
    parser.add_argument("--batch", type=int, default=16,
                        help="bags replayed in lockstep as the rows of one engine batch per checkpoint: the figures "
                             "of one bag at a time, several times faster (1: one bag at a time)")
    parser.add_argument("--topics-map", type=Path, default=None,
                        help="YAML: cameras {name: topic}, joint_states, action, episode (defaults: the stack's); "
                             "the map training takes (data.topics_map), or a training config: its data.topics")
    parser.add_argument("--out", type=Path, default=Path("runs/replay"), help="output folder")
    parser.add_argument("--execution-horizon", type=int, default=1,
                        help="ticks between chunks (1: every control step; 0: J, the policy node's default)")
    parser.add_argument("--rate-hz", type=float, default=None,
                        help="control ticks per second (default 1/dt of each checkpoint; 0: a tick per image)")
    parser.add_argument("--sync-tolerance", type=float, default=0.03, help="[s] as the policy node's parameter")
    parser.add_argument("--max-age", type=float, default=0.25, help="[s] as the policy node's parameter")
    parser.add_argument("--history", choices=("window", "stream"), default=None, help="engine history override")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default=None, help="DDPM sampler override")
    parser.add_argument("--real-time-chunking", action="store_true",
                        help="DDPM heads: each chunk keeps its overlap with the one it replaces, as the policy node's "
                             "real_time_chunking parameter (the consistency column then shows how much less chunks "
                             "disagree)")
    parser.add_argument("--compute-time", type=float, default=0.0,
                        help="[s] with --real-time-chunking: how long after its tick a chunk reaches the robot (its "
                             "actions due before then are kept); the node measures it, replay assumes it so that its "
                             "figures do not depend on this host (default 0: the bag's clock stands still meanwhile)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--task", default="",
                        help="the task a multi-task checkpoint is asked for (its goal) in every episode, as the "
                             "policy node's task parameter; default: each episode's own, the one its /mail/episode "
                             "start event names (a bag whose episodes name none, or one the checkpoint does not "
                             "know, is refused)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (0: torch's default; 1 is fastest for small models on a busy CPU)")
    parser.add_argument("--max-plots", type=int, default=10, help="episodes plotted (predicted vs recorded)")


def _bag_folders(paths) -> list[Path]:
    from ..training.episodes import DatasetError, find_bags

    try:
        return find_bags(paths)
    except DatasetError as e:
        raise SystemExit(f"mail-il replay: {e}") from None


def run(args: argparse.Namespace) -> int:
    from ..data.bags import MissingTopicError
    from ..model.checkpoint import CheckpointError
    from ..replay import IncompatibleCheckpointError, ReplayConfig, TopicMap, load_lanes, run_replay, write

    if args.batch < 1:
        print("mail-il replay: --batch must be >= 1", file=sys.stderr)
        return 1
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        topics = TopicMap.from_yaml(args.topics_map)
        config = ReplayConfig(execution_horizon=args.execution_horizon, sync_tolerance=args.sync_tolerance,
                              max_age=args.max_age, rate_hz=args.rate_hz, realtime=args.realtime,
                              history=args.history, sampler=args.sampler, device=args.device, task=args.task,
                              real_time_chunking=args.real_time_chunking, compute_time=args.compute_time)
        bags = _bag_folders(args.bags)
        lanes = load_lanes(args.checkpoint, config)
        results, summary = run_replay(bags, lanes, topics, config, progress=lambda m: print(m, file=sys.stderr),
                                      batch=1 if args.realtime else args.batch)
    except CheckpointError as e:  # resolving, parsing, bounds, budget, weights: one line
        print(f"mail-il replay: checkpoint refused: {e}", file=sys.stderr)
        return 1
    except (MissingTopicError, IncompatibleCheckpointError, ValueError) as e:
        print(f"mail-il replay: {e}", file=sys.stderr)
        return 1
    paths = write(args.out, summary, results, lanes, config, args.max_plots)
    print(f"{'checkpoint':<24}{'obs':>7}{'chunks':>8}{'MSE':>11}{'MAE':>11}{'max':>10}{'consist.':>10}{'p50 ms':>9}")
    for c in summary["checkpoints"]:
        o = c["overall"]
        e = o["errors"]

        def f(x):
            return "-" if x is None else f"{x:.4g}"

        print(f"{c['label'][:23]:<24}{o['observations']:>7}{o['chunks']:>8}{f(e['mse']):>11}{f(e['mae']):>11}"
              f"{f(e['max']):>10}{f(o['consistency']['rms']):>10}{f(o['latency']['p50_ms']):>9}")
    sp = summary["speed"]
    print(f"{sp['bag_s']:.1f} s of bags in {sp['wall_s']:.1f} s: {sp['observations_per_s']:.1f} observations/s, "
          f"{sp['realtime_factor']:.2f}x real time")
    print(f"report: {paths['json']} {paths['markdown']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mail-il replay", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
