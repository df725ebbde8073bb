"""`mail-il eval`: closed-loop success rate of a checkpoint in the simulated tasks.

    mail-il eval --checkpoint runs/train/reach_dma_bc_cpu/final --task reach --episodes 50 --seed 1000 --workers 2
    mail-il eval --checkpoint CKPT --task memory --episodes 40 --history-mode stream

Runs the checkpoint through the inference engine (engine/), stepped synchronously with the simulation,
episodes spread over worker processes. Prints a markdown table (success with a 95 % Wilson interval,
mean episode length, chunk latency, per-step time) and writes eval.json, eval.md and a few rollout
strips (PNG: agent view above wrist) to --out (default: CHECKPOINT/eval_<task>_seed<seed>/).
Use seeds the demonstrations did not use (`mail-il demos` starts at --seed 0).

A multi-task checkpoint (trained with data.tasks) is told the task by its goal, the one-hot of --task among
its tasks; a task it was not trained on is refused. A single-task checkpoint runs as trained (--task only
picks the scene).

--through-stack then runs the same seeds through the `sim` profile's ROS stack (franky-sim, camera nodes,
policy node, controller node over DDS; commands/fidelity.py) and prints both side by side: success with
Wilson intervals, per-seed outcomes, and where the stack's failures come from (timeouts, watchdog,
safety-filter overrides per limit, latency, jitter); written to --out/fidelity.json and fidelity.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TASKS = ("reach", "push", "pick_place", "memory")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (e.g. RUN/final)")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first episode (seed + i for episode i)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--batch", type=int, default=1,
                        help="episodes per worker stepped in lockstep through one engine call (the GPU's way)")
    parser.add_argument("--history-mode", choices=("window", "stream"), default=None,
                        help="engine history (default: the checkpoint's)")
    parser.add_argument("--exec-horizon", type=int, default=0,
                        help="actions executed per chunk before replanning (default J, the paper's; with "
                             "--through-stack the sim profile's, and one its controller would refuse is refused)")
    parser.add_argument("--real-time-chunking", action="store_true",
                        help="DDPM head: each chunk keeps its overlap with the one it replaces (the policy node's "
                             "real_time_chunking); matters with --exec-horizon below J")
    parser.add_argument("--max-steps", type=int, default=0, help="episode step limit (default: the task's)")
    parser.add_argument("--device", default="cpu", help="engine device: cpu, cuda or cuda:N")
    parser.add_argument("--pictures", type=int, default=3, help="rollout strips to write (first episodes)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--through-controller", action="store_true",
                        help="execute the chunks through the sim profile's controller core (chunk checks, "
                             "scheduler, safety filter, watchdog) in simulated time: what the deployed arm does "
                             "with them, without the stack's latency")
    parser.add_argument("--through-stack", action="store_true",
                        help="also run the same seeds closed loop through the sim profile's ROS stack and compare "
                             "(fidelity.json); needs ROS, run it on loopback only")
    parser.add_argument("--profile-param", action="append", default=[], metavar="NODE.PARAM:=VALUE",
                        help="with --through-controller or --through-stack: a sim-profile parameter for this run, "
                             "as on `mail-il up` (e.g. franka_controller.blend:=temporal_ensemble); repeatable")


def run(args: argparse.Namespace) -> int:
    from ..model.checkpoint import CheckpointError
    from ..training.evaluate import evaluate, markdown, write_picture

    if args.episodes < 1 or args.workers < 1 or args.batch < 1:
        print("mail-il eval: --episodes, --workers and --batch must be >= 1", file=sys.stderr)
        return 2
    controller = None
    if args.profile_param and not (args.through_stack or args.through_controller):
        print("mail-il eval: --profile-param sets the sim profile of --through-controller or --through-stack",
              file=sys.stderr)
        return 2
    if args.through_stack or args.through_controller:  # the profile and horizon, checked before anything runs
        from .fidelity import profile_params, sim_profile_controller, stack_exec_horizon

        try:
            args.profile_params = profile_params(args.profile_param)
            args.exec_horizon = stack_exec_horizon(args.checkpoint, args.exec_horizon, args.profile_params)
            controller = sim_profile_controller(args.profile_params) if args.through_controller else None
        except ImportError as e:  # no ROS in this environment
            print(f"mail-il eval: the sim profile (mail_bringup) is not available here: {e}", file=sys.stderr)
            return 2
        except (ValueError, CheckpointError) as e:
            print(f"mail-il eval: {e}", file=sys.stderr)
            return 2
    try:
        summary, results = evaluate(args.checkpoint, args.task, args.episodes, args.seed, args.workers,
                                    args.history_mode, args.exec_horizon, args.pictures, args.threads,
                                    not args.no_progress, args.max_steps, args.device, controller, args.batch,
                                    args.real_time_chunking)
    except CheckpointError as e:  # resolving, parsing, bounds, budget, weights: one line
        print(f"mail-il eval: checkpoint refused: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"mail-il eval: {e}", file=sys.stderr)
        return 2
    if args.profile_param:
        summary["profile_params"] = args.profile_params
    out = args.out or args.checkpoint / f"eval_{args.task}_seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    pictures = []
    for r in results:
        if r["frames"]:
            name = f"rollout_seed{r['seed']}_{'success' if r['success'] else 'fail'}.png"
            pictures.append(str(write_picture(r, out / name)))
    summary["pictures"] = pictures
    episodes = [{k: v for k, v in r.items() if k != "frames"} for r in results]
    (out / "eval.json").write_text(json.dumps(dict(summary=summary, episodes=episodes), indent=1, default=str))
    table = markdown(summary)
    (out / "eval.md").write_text(table)
    print(table)
    print(f"wrote {out}/eval.json, eval.md and {len(pictures)} rollout picture(s)")
    if args.through_stack:
        from .fidelity import run_stack

        return run_stack(args, summary, episodes, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mail-il eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
