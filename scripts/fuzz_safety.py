#!/usr/bin/env python3
"""Fuzz the safety filter: run N generated targets through it and count limit violations.

Episodes with a random configuration feed the filter a mix of smooth random walks, jumps, out-of-range
and out-of-box targets, NaN/inf, huge values, wrong dimensions and holds, with plausible, huge or
garbage velocity feed-forward. The configuration draws every safety limit that ``SafetyConfig`` and
``BudgetConfig`` declare (control/safety_limits.py: its default half of the time, else uniform in the
declaration's fuzz range, listed in docs/safety_limits.md), so a limit added there is fuzzed without
a change here; half of the episodes take joint limits wider than any profile makes them (the full
joint range, up to 100 % of the FR3 table) instead of BudgetConfig's. Every command is checked
independently (``safety.check_command``: position, velocity, acceleration, jerk, per-cycle step, TCP
speed, workspace box, gripper range) and each episode ends with a hold that must reach standstill
within ``SafetyConfig.stopping_time_bound``. Prints violations and throughput; writes JSON with --out.

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

from mail_policy_node.control.limits import BudgetConfig, JointLimits, fr3_limits
from mail_policy_node.control.safety import CommandState, SafetyConfig, SafetyFilter, check_command
from mail_policy_node.control.safety_limits import declared_limits, draw_limits, limit_of

READY = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
PERIODS = (0.001, 0.002, 0.005, 0.01, 0.02)
DRAWS = 100  # configurations drawn before giving up on declarations whose fuzz ranges never fit together


def fuzzed_limits() -> dict:
    """Declared limit -> the range it is drawn from (what the JSON summary records)."""
    return {f"{spec.owner}.{spec.field}": spec.fuzz_range()
            for cls in (BudgetConfig, SafetyConfig) for spec in declared_limits(cls)}


def random_joint_limits(rng: np.random.Generator) -> JointLimits:
    """The filter's joint limits as the node derives them from BudgetConfig's drawn limits, or (half
    the time) wider: the full joint range and up to 100 % of the FR3 table."""
    if rng.random() < 0.5:
        return BudgetConfig(**draw_limits(BudgetConfig, rng)).budget().filter
    return fr3_limits(position_range=str(rng.choice(["rectangular", "full"])),
                      position_margin=float(rng.uniform(*limit_of(BudgetConfig, "position_margin").fuzz_range())),
                      velocity_scale=float(rng.uniform(0.05, 1.0)),
                      acceleration_scale=float(rng.uniform(0.05, 1.0)),
                      jerk_scale=float(rng.uniform(0.01, 1.0)))


def random_config(rng: np.random.Generator) -> SafetyConfig:
    """A filter configuration with every declared limit drawn (``draw_limits``). A draw that breaks a
    relation between limits (an empty box or gripper range) is refused by SafetyConfig and drawn again."""
    limits, period = random_joint_limits(rng), float(rng.choice(PERIODS))
    for _ in range(DRAWS):
        try:
            return SafetyConfig(cycle_period=period, limits=limits, **draw_limits(SafetyConfig, rng))
        except ValueError:
            continue
    raise RuntimeError(f"no valid SafetyConfig in {DRAWS} draws: do the declared fuzz ranges fit together? "
                       f"{fuzzed_limits()}")


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
                    examples.append(dict(violations=bad, config=repr(cfg), q=s.q.tolist(), dq=s.dq.tolist(),
                                         ddq=s.ddq.tolist(), target=None if target is None else str(target)))
            s = r.command
        done += length
        bound = cfg.stopping_time_bound(s.dq, s.ddq)
        limit = int(math.ceil(bound / cfg.cycle_period)) + 1
        k = 0  # hold steps taken
        while k < limit and not s.at_standstill:
            r = f.step(s, None)
            bad = check_command(cfg, s, r.command)
            if bad:
                counts.update(["hold_" + b for b in bad])
            s = r.command
            k += 1
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
        workers=len(jobs), seed=args.seed, fuzzed_limits=fuzzed_limits(),
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
