"""`mail-il demo`: the README's main job, on the simulated robot, no hardware needed.

    mail-il demo                                    # reach: record, train, 3 closed-loop episodes
    mail-il demo --checkpoint mail_bringup/checkpoints/reach_dma_small --episodes 10 --echo

1. demonstrations: the scripted expert solves the task in simulation, recorded as rosbag2 (mcap);
2. training: a small D-Ma policy from those bags (CPU);
3. closed loop through the whole ROS stack: franky-sim serving the FR3 over the libfranka protocol,
   camera nodes rendering the scene, the policy node and the Franka controller node, each a process
   talking over DDS; a few episodes, then success rate, latency and safety figures.

Each stage keeps its output under --out and is skipped when it is already there (same settings and the
same code of what the stage runs), so a second run goes straight to the closed loop.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

TRAIN_CONFIG = Path(__file__).resolve().parents[3] / "mail_bringup" / "config" / "train" / "reach_dma_bc_cpu.yaml"
PACKAGE = Path(__file__).resolve().parents[1]
# the package's code each stage's output depends on (a change there records or trains again)
DEMOS_CODE = ("sim", "data", "spec.py", "commands/demos.py")
TRAIN_CODE = ("model", "training", "data", "spec.py", "commands/train.py")


def add_arguments(parser) -> None:
    parser.add_argument("--task", default="reach", help="simulated task (reach, push, pick_place, memory)")
    parser.add_argument("--demos", type=int, default=60, help="expert demonstrations to record")
    parser.add_argument("--episodes", type=int, default=3, help="closed-loop episodes through the ROS stack")
    parser.add_argument("--train-config", default=str(TRAIN_CONFIG), help="training config YAML")
    parser.add_argument("--train-steps", type=int, default=1000,
                        help="training steps (the demo budget; 0 = the config's own, 2000 for the measured recipe)")
    parser.add_argument("--workers", type=int, default=2, help="processes for recording demonstrations")
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo produces")
    parser.add_argument("--checkpoint", default="",
                        help="run the closed loop with this checkpoint folder instead of recording and training "
                             "(e.g. mail_bringup/checkpoints/reach_dma_small, shipped with the repo)")
    parser.add_argument("--echo", action="store_true", help="show the nodes' output")


def _mail_il(*args: str) -> None:
    cmd = [sys.executable, "-m", "mail_policy_node.cli", *args]
    print("[demo]   $ mail-il " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def code_digest(parts) -> str:
    """Hash of the package's Python files under ``parts`` (folders or files relative to the package)."""
    h = hashlib.sha256()
    for part in parts:
        path = PACKAGE / part
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(str(f.relative_to(PACKAGE)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _stage_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _stamp(path: Path, settings: dict) -> bool:
    """True if `path` was produced with the same settings (then the stage is skipped)."""
    marker = path / ".mail-demo-stage"
    return marker.is_file() and marker.read_text() == _stage_key(settings)


def _mark(path: Path, settings: dict) -> None:
    (path / ".mail-demo-stage").write_text(_stage_key(settings))


def run(args) -> int:
    from mail_bringup.closed_loop import run_closed_loop

    out = Path(args.out).resolve()
    t_start = time.monotonic()
    timings = {"demos_s": 0.0, "train_s": 0.0}
    if args.checkpoint:
        source = Path(args.checkpoint)
        print(f"[demo] using checkpoint {source}: no demonstrations, no training", flush=True)
    else:
        source = _record_and_train(args, out, timings)
    root = out / "checkpoints"
    ckpt = root / f"{args.task}_dma"
    shutil.rmtree(ckpt, ignore_errors=True)
    shutil.copytree(source, ckpt, ignore=shutil.ignore_patterns("train_state*"))
    print(f"[demo] 3/3 {args.episodes} closed-loop episodes through the ROS stack against franky-sim ...", flush=True)
    t = time.monotonic()
    report = run_closed_loop(str(root), ckpt.name, task=args.task, seeds=tuple(range(1000, 1000 + args.episodes)),
                             echo=args.echo)
    timings["closed_loop_s"] = round(time.monotonic() - t, 1)
    summary = report.summary()
    summary["timings"] = {**timings, "total_s": round(time.monotonic() - t_start, 1)}
    (out / "demo_report.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    print(f"[demo] report: {out / 'demo_report.json'}")
    return 0


def _record_and_train(args, out: Path, timings: dict) -> Path:
    """Stages 1 and 2; returns the trained checkpoint folder."""
    demos = out / "demos"
    settings = dict(task=args.task, n=args.demos, seed=0, code=code_digest(DEMOS_CODE))
    print(f"[demo] 1/3 {args.demos} expert demonstrations of '{args.task}' as rosbag2 ...", flush=True)
    t = time.monotonic()
    if _stamp(demos, settings):
        print("[demo]   already recorded", flush=True)
    else:
        shutil.rmtree(demos, ignore_errors=True)
        demos.mkdir(parents=True)
        _mail_il("demos", "--task", args.task, "--episodes", str(args.demos), "--seed", "0",
                 "--out", str(demos), "--workers", str(args.workers))
        _mark(demos, settings)
    timings["demos_s"] = round(time.monotonic() - t, 1)

    train = out / "train"
    overrides = [f"data.bags=[{demos / args.task}]", f"out={train}"]
    if args.train_steps:
        overrides.append(f"train.steps={args.train_steps}")
    settings = dict(config=Path(args.train_config).read_text(), overrides=overrides, code=code_digest(TRAIN_CODE))
    print("[demo] 2/3 training a small D-Ma policy on the CPU ...", flush=True)
    t = time.monotonic()
    if (train / "final").is_dir() and _stamp(train, settings):
        print("[demo]   already trained", flush=True)
    else:
        shutil.rmtree(train, ignore_errors=True)
        # the progress bar on a terminal (a minute or more of training); none in a log
        _mail_il("train", args.train_config, *overrides, *([] if sys.stderr.isatty() else ["--no-progress"]))
        _mark(train, settings)
    timings["train_s"] = round(time.monotonic() - t, 1)

    return train / "final"


def _limits(hits: int, limits: dict) -> str:
    """'12 cycles (velocity 12); smoothing: acceleration 840, jerk 910'"""
    shaping = ("acceleration", "jerk")
    over = ", ".join(f"{k} {v}" for k, v in sorted(limits.items()) if k not in shaping)
    smooth = ", ".join(f"{k} {limits[k]}" for k in shaping if k in limits)
    return f"{hits} cycles" + (f" ({over})" if over else "") + (f"; smoothing: {smooth}" if smooth else "")


def _pace(s: dict) -> str:
    from .fidelity import REAL_TIME_MIN, deployment_timing

    pace = s.get("sim_per_wall")
    if s.get("on_world_clock"):
        return f"{pace} (on the world's clock: plans kept the simulated arm's pace)"
    if deployment_timing(s) is not False:
        return str(pace)
    return (f"{pace}: NOT real time (under {REAL_TIME_MIN}): this machine could not keep franky-sim's pace, "
            "so the arm lagged plans made on the host's clocks, as a real FR3 never does")


def _late(s: dict) -> str:
    """The cadence: ticks and cycles that started late, of all (a report from before it was kept: '-')."""
    if "policy_ticks" not in s:
        return "-"
    return (f"{s['policy_ticks_overrun']} of {s['policy_ticks']} / "
            f"{s['controller_cycles_overrun']} of {s['controller_cycles']}")


def print_summary(s: dict) -> None:
    rows = [
        ("task / checkpoint", f"{s['task']} / {s['checkpoint']}"),
        ("success rate", f"{s['successes']}/{s['episodes']} ({100 * s['success_rate']:.0f} %)"),
        ("end-to-end latency p50 / p99", f"{s['latency_p50_ms']} / {s['latency_p99_ms']} ms (camera stamp -> chunk)"),
        ("inference p50", f"{s['inference_p50_ms']} ms"),
        ("largest commanded |dq|, |ddq| / limit", f"{s['max_velocity_ratio']}, {s['max_acceleration_ratio']}"),
        ("commands outside position limits", str(s["position_violations"])),
        ("safety filter overrides", _limits(s["limit_hits"], s.get("limits", {}))),
        ("watchdog trips / chunks rejected", f"{s['watchdog_trips']} / {s['chunks_rejected']}"),
        ("controller cycle jitter p99", f"{s['controller_jitter_p99_ms']} ms"),
        ("late: policy ticks / controller cycles", _late(s)),
        ("goal distance, median start -> end", f"{s['goal_distance_start_m']} -> {s['goal_distance_final_m']} m"),
        ("simulated s per wall s", _pace(s)),
        ("time: demos / train / closed loop", " / ".join(f"{s['timings'][k]} s" for k in
                                                           ("demos_s", "train_s", "closed_loop_s"))),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"[demo] {a.ljust(width)}  {b}" for a, b in rows), flush=True)
