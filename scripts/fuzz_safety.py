#!/usr/bin/env python3
"""Fuzz the safety filter: run N generated targets through it and count limit violations.

Episodes with a random configuration (cycle period, limit scales, position range, workspace box)
feed the filter a mix of smooth random walks, jumps, out-of-range and out-of-box targets, NaN/inf,
huge values, wrong dimensions and holds, with plausible, huge or garbage velocity feed-forward.
Every command is checked independently (``safety.check_command``: position, velocity, acceleration,
jerk, per-cycle step, workspace box, gripper range) and each episode ends with a hold that must
reach standstill within ``SafetyConfig.stopping_time_bound``. Prints violations and throughput;
writes JSON with --out.

    python scripts/fuzz_safety.py --n 1000000 --workers 2 --out results/fuzz_safety.json
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing as mp
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mail_policy_node"))

from mail_policy_node.control.limits import fr3_limits
from mail_policy_node.control.safety import CommandState, SafetyConfig, SafetyFilter, check_command

READY = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
PERIODS = (0.001, 0.002, 0.005, 0.01, 0.02)


def random_config(rng: np.random.Generator) -> SafetyConfig:
    lim = fr3_limits(position_range=str(rng.choice(["rectangular", "full"])),
                     position_margin=float(rng.uniform(0.0, 0.1)),
                     velocity_scale=float(rng.uniform(0.05, 1.0)),
                     acceleration_scale=float(rng.uniform(0.05, 1.0)),
                     jerk_scale=float(rng.uniform(0.01, 1.0)))
    if rng.random() < 0.5:  # default table-top box
        box = dict()
    else:  # a tight box around the ready pose so the workspace logic is hit constantly
        half = rng.uniform(0.08, 0.3, 3)
        centre = np.array([0.31, 0.0, 0.49])
        box = dict(workspace_min=tuple(centre - half), workspace_max=tuple(centre + half), workspace_margin=0.01)
    return SafetyConfig(cycle_period=float(rng.choice(PERIODS)), limits=lim,
                        max_joint_step=float(rng.uniform(0.001, 0.05)), **box)


def random_target(rng: np.random.Generator, walk: np.ndarray):
    """Returns (target, gripper, walk')."""
    u = rng.random()
    grip = float(rng.choice([rng.uniform(-0.1, 0.2), math.nan, math.inf, 0.04]))
    if u < 0.45:
        walk = walk + rng.normal(0.0, 0.02, 7)
        return walk, grip, walk
    if u < 0.6:
        return READY + rng.uniform(-0.8, 0.8, 7), grip, walk
    if u < 0.7:
        return rng.uniform(-5.0, 5.0, 7), grip, walk
    if u < 0.78:
        t = READY + rng.uniform(-0.3, 0.3, 7)
        t[rng.integers(0, 7)] = rng.choice([math.nan, math.inf, -math.inf, 1e300, -1e300])
        return t, grip, walk
    if u < 0.84:
        n = int(rng.choice([0, 1, 6, 8, 14]))
        return rng.uniform(-1, 1, n), grip, walk
    if u < 0.9:
        return None, grip, walk
    if u < 0.95:
        return READY + rng.choice([-1.0, 1.0]) * np.array([1.5, 1.0, 1.5, 1.0, 1.5, 1.5, 2.0]), grip, walk
    return "garbage", grip, walk


def fuzz(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    counts = collections.Counter()
    examples = []
    done = episodes = hold_failures = 0
    hold_steps_max_ratio = 0.0
    while done < n:
        cfg = random_config(rng)
        f = SafetyFilter(cfg)
        s = CommandState.at_rest(READY)
        walk = READY.copy()
        length = int(min(rng.integers(50, 3000), n - done))
        target, grip, v_ff = None, None, None
        for i in range(length):
            if i == 0 or rng.random() < 0.1:  # targets change every ~10 cycles, like interpolated chunks
                target, grip, walk = random_target(rng, walk)
                u = rng.random()  # velocity feed-forward: none, plausible, huge, or garbage
                v_ff = (None if u < 0.4 else rng.normal(0, 0.5, 7) if u < 0.8 else rng.normal(0, 1e3, 7)
                        if u < 0.9 else np.array([math.nan] * 7) if u < 0.95 else rng.normal(0, 1, 3))
            r = f.step(s, target, grip, target_velocity=v_ff)
            bad = check_command(cfg, s, r.command)
            if bad:
                counts.update(bad)
                if len(examples) < 10:
                    examples.append(dict(violations=bad, period=cfg.cycle_period, q=s.q.tolist(), dq=s.dq.tolist(),
                                         ddq=s.ddq.tolist(), target=None if target is None else str(target)))
            s = r.command
        done += length
        bound = cfg.stopping_time_bound(s.dq, s.ddq)
        limit = int(math.ceil(bound / cfg.cycle_period)) + 1
        for _ in range(limit):
            if s.at_standstill:
                break
            r = f.step(s, None)
            bad = check_command(cfg, s, r.command)
            if bad:
                counts.update(["hold_" + b for b in bad])
            s = r.command
        else:
            k = limit
        if not s.at_standstill:
            hold_failures += 1
        hold_steps_max_ratio = max(hold_steps_max_ratio, k / max(limit, 1))
        episodes += 1
    return dict(actions=done, episodes=episodes, violations=dict(counts), examples=examples,
                hold_failures=hold_failures, hold_steps_max_fraction_of_bound=hold_steps_max_ratio)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="number of actions (filter steps) in total")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default=None, help="write the summary as JSON here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    shares = [args.n // args.workers + (1 if i < args.n % args.workers else 0) for i in range(args.workers)]
    jobs = [(share, args.seed * 1000 + i) for i, share in enumerate(shares) if share > 0]
    if len(jobs) == 1:
        parts = [fuzz(*jobs[0])]
    else:
        with mp.get_context("spawn").Pool(len(jobs)) as pool:
            parts = pool.starmap(fuzz, jobs)
    seconds = time.perf_counter() - t0
    violations = collections.Counter()
    for part in parts:
        violations.update(part["violations"])
    summary = dict(
        actions=sum(pt["actions"] for pt in parts), episodes=sum(pt["episodes"] for pt in parts),
        violations=dict(violations), violation_count=int(sum(violations.values())),
        hold_failures=sum(pt["hold_failures"] for pt in parts),
        hold_steps_max_fraction_of_bound=max(pt["hold_steps_max_fraction_of_bound"] for pt in parts),
        examples=[e for pt in parts for e in pt["examples"]][:10],
        seconds=round(seconds, 2), actions_per_second=round(sum(pt["actions"] for pt in parts) / seconds, 1),
        workers=len(jobs), seed=args.seed,
    )
    print(f"actions {summary['actions']}  episodes {summary['episodes']}  violations {summary['violation_count']} "
          f"{summary['violations']}  hold failures {summary['hold_failures']}")
    print(f"time {seconds:.1f} s  throughput {summary['actions_per_second']:.0f} actions/s ({len(jobs)} workers)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(summary, fh, indent=2)
    return 0 if summary["violation_count"] == 0 and summary["hold_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
