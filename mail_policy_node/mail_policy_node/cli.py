"""`mail-il`: one entry point, one subcommand per job.

Each subcommand lives in its own module and exposes ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so `mail-il --help` stays fast and a missing
optional dependency of one job does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Kept in the order a user meets them.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mail_policy_node.commands.demo", "the main job: the whole pipeline on the simulated robot"),
    "demos": ("mail_policy_node.commands.demos", "record scripted-expert demonstrations in simulation as rosbag2"),
    "train": ("mail_policy_node.commands.train", "train a policy from rosbag2 demonstrations (one YAML config)"),
    "export": ("mail_policy_node.commands.export", "re-save a checkpoint (fp16 weights to ship a small one)"),
    "eval": ("mail_policy_node.commands.eval", "closed-loop success rate of a checkpoint in the simulated tasks"),
    "replay": ("mail_policy_node.commands.replay",
               "replay rosbags through checkpoints: predicted vs recorded actions, latency, gaps"),
    "up": ("mail_bringup.up", "start a bringup profile (real_robot, sim, replay) where ros2 launch is missing"),
    "bench": ("mail_policy_node.commands.bench", "benchmarks (model, engine): print a table, write JSON"),
    "metaworld": ("mail_policy_node.benchmarks.metaworld", "Meta-World v3 benchmark: expert demos, evaluation "
                  "(in .venv-metaworld: make metaworld-env)"),
    "fr3-emulator": ("mail_policy_node.sim.fr3_emulator",
                     "serve franky-sim with a real FR3's limit checks and reflexes"),
}


def examples(doc: str | None) -> str | None:
    """The example command lines of a command module's docstring (its first block of indented lines), as
    the end of the command's --help."""
    block: list[str] = []
    for line in (doc or "").splitlines()[1:]:
        if line.startswith("    ") and line.strip():
            block.append(line)
        elif block:
            break
    return "examples:\n" + "\n".join(block) if block else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="mail-il", description="MaIL imitation-learning policies on ROS 2.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module_name)
        if argv[:1] == [name]:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.epilog = examples(module.__doc__)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .checkpoint_limits import CheckpointError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except CheckpointError as e:  # a command that did not report it itself: one line, no traceback
        print(f"mail-il {args.command}: checkpoint refused: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
