"""`mail-il eval --through-stack`: the synchronous evaluation and the same episodes through the ROS stack.

The synchronous evaluation (training/evaluate.py) steps the simulation with the policy: the world waits
for every chunk. The stack evaluation (mail_bringup/closed_loop.py) runs the `sim` profile: franky-sim in
real time, two camera nodes, the policy node and the Franka controller node, each its own process over
DDS. Both run the same seeds (seed .. seed + N - 1: the same task parameters and start joints), judge
success with the same predicate (sim/tasks.py) and get the same episode length (the task's step limit x
0.1 s, or --max-steps). What they cannot share is listed in the output (`not_identical`).

This module assembles the comparison (pure functions of the two results, no ROS: `compare`, `markdown`)
and runs the stack half (`run_stack`).
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from ..training.evaluate import median_or_none, sum_counts, wilson_interval

SHAPING = ("acceleration", "jerk")  # smoothing between 10 Hz targets, not overrides (not in limit_hits)
STACK_ENDINGS = ("success", "timeout", "task_failure", "watchdog", "no_motion", "error")
SYNC_ENDINGS = ("success", "step_limit", "task_failure")
# Below this many simulated seconds per wall second the machine did not keep franky-sim at real time: where
# the controller and the policy plan on the host's clocks (use_sim_time false), the simulated arm lags their
# plans, as a real FR3 (always 1.0) never does, and the stack's figures describe the machine more than the
# deployment. On the world's clock (the sim profile's default) the plans keep the arm's pace at any speed.
REAL_TIME_MIN = 0.9


def deployment_timing(stack_summary: dict) -> bool | None:
    """Whether a closed-loop run's timing is the deployment's (`ClosedLoopReport.summary()`): on the world's
    clock always; on the host's clocks where franky-sim kept REAL_TIME_MIN; None when nothing ran to an end."""
    pace = stack_summary.get("sim_per_wall")
    return True if stack_summary.get("on_world_clock") else None if pace is None else pace >= REAL_TIME_MIN


def sync_ended_by(r: dict) -> str:
    return "success" if r["success"] else "task_failure" if r.get("failed") else "step_limit"


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test on the discordant pairs (b: only the first succeeded, c: only the
    second): the probability of a split at least this uneven if either side were as likely."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _pct(values, q) -> float | None:
    import numpy as np

    values = [v for v in values if v is not None]
    return round(float(np.percentile(values, q)), 1) if values else None


def _rate(successes: int, n: int) -> dict:
    lo, hi = wilson_interval(successes, n)
    return dict(successes=successes, episodes=n, success_rate=successes / n if n else 0.0,
                wilson95=[round(lo, 4), round(hi, 4)])


def compare(sync_summary: dict, sync_episodes: list[dict], stack_summary: dict, step_limit: int, dt: float,
            settings: dict | None = None) -> dict:
    """The fidelity report from the synchronous evaluation (evaluate()'s summary and episodes) and the
    stack's (ClosedLoopReport.summary(), its per_episode with `ended_by`). ``step_limit`` x ``dt``: the
    episode length both were given."""
    sync_by_seed = {int(r["seed"]): r for r in sync_episodes}
    stack_by_seed = {int(e["seed"]): e for e in stack_summary["per_episode"]}
    seeds = sorted(sync_by_seed)
    same_seeds = seeds == sorted(stack_by_seed)

    per_seed, counts = [], collections.Counter()
    for seed in sorted(set(sync_by_seed) | set(stack_by_seed)):
        r, e = sync_by_seed.get(seed), stack_by_seed.get(seed)
        row = dict(seed=seed, sync=None, stack=None, differs=None)
        if r is not None:
            row["sync"] = dict(success=bool(r["success"]), ended_by=sync_ended_by(r), steps=r["steps"],
                               final_distance=r.get("final_goal_distance"), min_distance=r.get("min_goal_distance"))
        if e is not None:
            limits = e.get("limits") or {}
            row["stack"] = dict(success=bool(e["success"]), ended_by=e["ended_by"], duration_s=e["duration_s"],
                                sim_duration_s=e.get("sim_duration_s"), final_distance=e.get("final_distance"),
                                min_distance=e.get("min_distance"), chunks=e["chunks"],
                                overrides={k: v for k, v in limits.items() if k not in SHAPING},
                                smoothing={k: v for k, v in limits.items() if k in SHAPING},
                                limit_hits=e["limit_hits"], watchdog_trips=e["watchdog_trips"],
                                chunks_rejected=e["chunks_rejected"], rejections=e.get("rejections") or {},
                                actions_dropped_stale=e.get("actions_dropped_stale", 0),
                                chunk_age_p50_ms=e.get("chunk_age_p50_ms"), chunk_age_p99_ms=e.get("chunk_age_p99_ms"),
                                cycle_jitter_p99_ms=e.get("cycle_jitter_p99_ms"), error=e.get("error"))
        if r is not None and e is not None:
            a, b = bool(r["success"]), bool(e["success"])
            row["differs"] = a != b
            counts["both_success" if a and b else "both_fail" if not (a or b) else
                   "sync_only" if a else "stack_only"] += 1
        per_seed.append(row)

    sync_n = len(sync_episodes)
    sync = dict(_rate(sum(bool(r["success"]) for r in sync_episodes), sync_n),
                ended_by={k: sum(sync_ended_by(r) == k for r in sync_episodes) for k in SYNC_ENDINGS},
                step_limit=step_limit, episode_limit_s=round(step_limit * dt, 3),
                mean_steps=sync_summary.get("mean_steps"), chunk_compute_ms=sync_summary.get("chunk_latency_ms"),
                exec_horizon=sync_summary.get("exec_horizon"), history=sync_summary.get("history"),
                render_size=sync_summary.get("render_size"), wall_seconds=sync_summary.get("wall_seconds"),
                failed_final_goal_distance_median=sync_summary.get("failed_final_goal_distance_median"))
    eps = stack_summary["per_episode"]
    ended = collections.Counter(e["ended_by"] for e in eps)
    limits = stack_summary.get("limits") or {}
    stack = dict(_rate(sum(bool(e["success"]) for e in eps), len(eps)),
                 ended_by={k: ended.get(k, 0) for k in STACK_ENDINGS},
                 episode_timeout_s=_first([e.get("timeout_s") for e in eps]),
                 sim_duration_median_s=_median([e.get("sim_duration_s") for e in eps]),
                 wall_duration_median_s=_median([e["duration_s"] for e in eps if not e.get("error")]),
                 sim_per_wall=stack_summary.get("sim_per_wall"),
                 on_world_clock=bool(stack_summary.get("on_world_clock")),
                 latency_p50_ms=stack_summary.get("latency_p50_ms"), latency_p99_ms=stack_summary.get("latency_p99_ms"),
                 inference_p50_ms=stack_summary.get("inference_p50_ms"),
                 chunk_age_p50_ms_median=_median([e.get("chunk_age_p50_ms") for e in eps]),
                 chunk_age_p99_ms_max=max((e["chunk_age_p99_ms"] for e in eps if e.get("chunk_age_p99_ms") is not None),
                                          default=None),
                 controller_jitter_p99_ms=stack_summary.get("controller_jitter_p99_ms"),
                 **{k: stack_summary.get(k) for k in ("policy_ticks", "policy_ticks_overrun", "controller_cycles",
                                                      "controller_cycles_overrun")},
                 overrides={k: v for k, v in sorted(limits.items()) if k not in SHAPING},
                 smoothing={k: limits[k] for k in SHAPING if k in limits},
                 limit_hits=stack_summary.get("limit_hits"),
                 overrides_in_failures={k: v for k, v in sorted(_sum_limits(e for e in eps if not e["success"]).items())
                                        if k not in SHAPING},
                 overrides_in_successes={k: v for k, v in sorted(_sum_limits(e for e in eps if e["success"]).items())
                                         if k not in SHAPING},
                 chunks_rejected=stack_summary.get("chunks_rejected"),
                 rejections=sum_counts(e.get("rejections") for e in eps),
                 actions_dropped_stale=sum(e.get("actions_dropped_stale", 0) for e in eps),
                 watchdog_trips=stack_summary.get("watchdog_trips"),
                 max_velocity_ratio=stack_summary.get("max_velocity_ratio"),
                 max_acceleration_ratio=stack_summary.get("max_acceleration_ratio"),
                 position_violations=stack_summary.get("position_violations"),
                 errors={e["seed"]: e["error"] for e in eps if e.get("error")},
                 failed_final_goal_distance_median=_median([e.get("final_distance") for e in eps if not e["success"]]))
    comparison = dict(same_seeds=same_seeds, seeds=seeds, **{k: counts.get(k, 0) for k in
                                                             ("both_success", "both_fail", "sync_only", "stack_only")},
                      differing_seeds=[row["seed"] for row in per_seed if row["differs"]],
                      rate_difference=round(stack["success_rate"] - sync["success_rate"], 4),
                      real_time=deployment_timing(stack_summary),
                      mcnemar_exact_p=round(mcnemar_exact_p(counts.get("sync_only", 0),
                                                            counts.get("stack_only", 0)), 4))
    return dict(task=sync_summary.get("task"), checkpoint=sync_summary.get("checkpoint"),
                policy_id=sync_summary.get("policy_id"), settings=settings or {}, synchronous=sync, stack=stack,
                comparison=comparison, per_seed=per_seed,
                not_identical=not_identical(sync, stack, settings or {}))


def _first(values):
    return next((v for v in values if v is not None), None)


def _median(values):
    m = median_or_none(values)
    return None if m is None else round(m, 3)


def _sum_limits(eps) -> dict:
    return sum_counts(e.get("limits") for e in eps)


def not_identical(sync: dict, stack: dict, settings: dict) -> list[str]:
    """Where the two evaluations differ by design (what the same seeds and success rule cannot make equal)."""
    limit = f"{sync['step_limit']} steps x 0.1 s of simulated time from the reset"
    timeout = stack.get("episode_timeout_s")
    sim = stack.get("sim_duration_median_s")
    notes = [
        f"episode length: synchronous {limit}; stack {timeout if timeout is not None else '?'} s of simulated time "
        "from the observation the first chunk was planned on (sim_world.episode_timeout); "
        + ("the stack ran on the world's clock (/clock): plans, the watchdog and latencies count simulated seconds, "
           "and where franky-sim runs slower than real time the policy's compute takes fewer of them, as on a "
           "faster machine" if stack.get("on_world_clock") else
           "the stack ran on the host's clocks: franky-sim's clock may fall behind the wall clock, and with it the "
           "controller, while the policy computes in wall-clock time")
        + f" (simulated seconds per wall second here: {stack.get('sim_per_wall')}; median simulated episode {sim} s)",
        "task clock (the memory task's cue, shown for the first second): both from the observation the first chunk "
        "was planned on; in the stack the frames drawn before that chunk reached the world (its latency) are drawn "
        "at 0 too",
        "success check: both use the task's predicate (sim/tasks.py) on the simulated state; synchronous after "
        "every 0.1 s step, the stack at sim_world.state_rate_hz ticks of its clock on the running physics",
        "latency: the synchronous simulation waits for every chunk (it sees no latency; chunk compute "
        f"{_fmt(sync.get('chunk_compute_ms'))} ms); in the stack the world moves on while frames are rendered, "
        "sent, synchronised and the chunk computed and sent (camera stamp -> chunk "
        f"p50 {stack.get('latency_p50_ms')} / p99 {stack.get('latency_p99_ms')} ms)",
        "execution: synchronous actions are linear ramps over 0.1 s straight into the MuJoCo position actuators; "
        "the stack's controller plays chunks at 100 Hz through the safety filter (velocity, acceleration, jerk, "
        "position, workspace limits) and blends overlapping chunks, and franky-sim's FR3 tracks the commands",
        f"replanning: --exec-horizon {settings.get('exec_horizon', sync.get('exec_horizon'))} is actions executed "
        "per chunk in the synchronous loop and observations between chunks for the policy node (chunks overlap "
        "there, the next one arrives while the current one is played)",
        "frames: synchronous frames are rendered in-process at the step boundary; the stack's camera nodes render "
        "franky-sim state snapshots at 10 Hz (the same size, the same resize rule in the engine)",
        "determinism: the synchronous evaluation repeats exactly; the stack's episodes depend on timing (load "
        "on this machine, scheduling), so the same seed can end differently from run to run",
    ]
    size = sync.get("render_size")
    if size and len(set(size)) > 1:
        notes.append(f"frame size: the checkpoint's native size is {size}, the stack's cameras render "
                     f"{size[0]}x{size[0]} (closed_loop takes one size)")
    return notes


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _counts(d: dict) -> str:
    items = [f"{str(k).replace('_', ' ')} {v}" for k, v in d.items() if v]
    return ", ".join(items) if items else "none"


def _outcome(side: dict | None) -> str:
    if side is None:
        return "-"
    return "success" if side["success"] else side["ended_by"].replace("_", " ")


def markdown(report: dict) -> str:
    s, k, c = report["synchronous"], report["stack"], report["comparison"]

    def rate(x):
        lo, hi = x["wilson95"]
        return f"{x['successes']}/{x['episodes']} ({100 * x['success_rate']:.0f} %)", f"{100 * lo:.0f}-{100 * hi:.0f} %"

    (sr, si), (kr, ki) = rate(s), rate(k)
    smooth = _counts(k["smoothing"])
    lines = [
        f"fidelity: {report['task']} / {report['checkpoint']} (policy {report['policy_id']}), seeds "
        f"{c['seeds'][0] if c['seeds'] else '-'}..{c['seeds'][-1] if c['seeds'] else '-'}"
        f"{'' if c['same_seeds'] else ' (the two runs did NOT cover the same seeds)'}",
        "",
        *([f"**Not in real time**: franky-sim ran at {k['sim_per_wall']} simulated seconds per wall second on this "
           f"machine (under {REAL_TIME_MIN}; a real FR3 runs at 1.0). The controller and the policy plan on the "
           "wall clock, so the simulated arm lagged their plans: the stack's column describes this machine's "
           "load more than the deployment. `--through-controller` measures the controller without the clock; "
           "run the stack where franky-sim keeps real time.", ""] if c.get("real_time") is False else []),
        "| | synchronous (`mail-il eval`) | through the stack (`sim` profile) |",
        "| --- | --- | --- |",
        f"| success | {sr} | {kr} |",
        f"| 95 % Wilson interval | {si} | {ki} |",
        f"| episode limit | {s['step_limit']} steps ({s['episode_limit_s']} s simulated) | "
        f"{k['episode_timeout_s']} s simulated from the first chunk's observation "
        f"(median {k['sim_duration_median_s']} s simulated, {k['wall_duration_median_s']} s wall) |",
        f"| failures ended by | {_counts({x: v for x, v in s['ended_by'].items() if x != 'success'})} | "
        f"{_counts({x: v for x, v in k['ended_by'].items() if x != 'success'})} |",
        f"| failures: median final goal distance | {_fmt(s['failed_final_goal_distance_median'], 3)} m | "
        f"{_fmt(k['failed_final_goal_distance_median'], 3)} m |",
        "| latency (camera stamp -> chunk) p50 / p99 | "
        f"none (the world waits; compute {_fmt(s['chunk_compute_ms'])} ms) | "
        f"{k['latency_p50_ms']} / {k['latency_p99_ms']} ms (inference p50 {k['inference_p50_ms']} ms) |",
        f"| chunk age at arrival, median p50 / max p99 | - | {_fmt(k['chunk_age_p50_ms_median'])} / "
        f"{_fmt(k['chunk_age_p99_ms_max'])} ms |",
        f"| controller cycle jitter p99 | - | {k['controller_jitter_p99_ms']} ms |",
        f"| started late: policy ticks / controller cycles | - | {k['policy_ticks_overrun']} of {k['policy_ticks']} / "
        f"{k['controller_cycles_overrun']} of {k['controller_cycles']} |",
        f"| safety filter overrides (cycles) | - | {k['limit_hits']}: {_counts(k['overrides'])} "
        f"(in failures: {_counts(k['overrides_in_failures'])}); smoothing: {smooth} |",
        f"| chunks rejected / stale actions dropped | - | {k['chunks_rejected']} ({_counts(k['rejections'])}) / "
        f"{k['actions_dropped_stale']} |",
        f"| watchdog trips | - | {k['watchdog_trips']} |",
        f"| largest commanded abs(dq), abs(ddq) / limit; outside position limits | - | {k['max_velocity_ratio']}, "
        f"{k['max_acceleration_ratio']}; {k['position_violations']} |",
        "",
        "| seed | synchronous | stack | wall / sim s | final distance sync / stack [m] | overrides | "
        "chunk age p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["per_seed"]:
        a, b = row["sync"], row["stack"]
        mark = " **differs**" if row["differs"] else ""
        if b is not None and b.get("error"):
            extra = f"error: {b['error']}"
            b = dict(b, duration_s=None)
        elif b is not None:
            extra = _counts(b["overrides"])
        else:
            extra = "-"
        steps = f" ({a['steps']} steps)" if a else ""
        lines.append(
            f"| {row['seed']}{mark} | {_outcome(a)}{steps} | {_outcome(b)} | "
            f"{_fmt(b['duration_s']) if b else '-'} / {_fmt(b['sim_duration_s']) if b else '-'} | "
            f"{_fmt(a['final_distance'], 3) if a else '-'} / {_fmt(b['final_distance'], 3) if b else '-'} | {extra} | "
            f"{_fmt(b['chunk_age_p50_ms']) if b else '-'} / {_fmt(b['chunk_age_p99_ms']) if b else '-'} |")
    lines += [
        "",
        f"seeds: both succeed {c['both_success']}, both fail {c['both_fail']}, only synchronous {c['sync_only']}, "
        f"only the stack {c['stack_only']}; differing: {', '.join(map(str, c['differing_seeds'])) or 'none'} "
        f"(stack - synchronous {100 * c['rate_difference']:+.0f} points, exact McNemar p = {c['mcnemar_exact_p']})",
        "",
        "not identical by design:",
        *(f"- {n}" for n in report["not_identical"]),
        "",
    ]
    return "\n".join(lines)


def _sim_profile(params: dict[str, dict] | None = None) -> dict:
    """The `sim` profile's YAML sections (node name -> {"ros__parameters": ...}), with ``params``
    ({node: {param: text}}, from `--profile-param node.param:=value`) set over them, typed like the values
    they replace. A node or parameter
    the profile does not have is refused (ValueError naming it), as a typo would otherwise be ignored."""
    import yaml
    from mail_bringup.graph import profile, typed

    sections = yaml.safe_load(profile("sim").params_file.read_text())
    for node, values in (params or {}).items():
        if node not in sections:
            raise ValueError(f"the sim profile has no node {node!r}; nodes: {', '.join(sorted(sections))}")
        have = sections[node]["ros__parameters"]
        for name, value in values.items():
            if name not in have:
                raise ValueError(f"the sim profile's {node} has no parameter {name!r}; parameters: "
                                 f"{', '.join(sorted(have))}")
            have[name] = typed(value, have[name], f"{node}.{name}")
    return sections


# the profile parameters `mail-il eval` sets from its own options
_EVAL_SETS = {("policy_node", "execution_horizon"): "--exec-horizon", ("policy_node", "history_mode"): "--history-mode",
              ("policy_node", "device"): "--device", ("policy_node", "checkpoint"): "--checkpoint",
              ("policy_node", "task"): "--task", ("policy_node", "real_time_chunking"): "--real-time-chunking",
              ("sim_world", "task"): "--task", ("sim_world", "seed"): "--seed",
              ("sim_world", "episode_timeout"): "--max-steps"}


def profile_params(items: list[str]) -> dict[str, dict]:
    """`--profile-param node.param:=value` strings -> {node: {param: text}}, typed like the profile's own
    values when applied (`_sim_profile`). The policy node's execution horizon has its option (--exec-horizon):
    set here, it is refused (as is every parameter another option of the command sets: `_EVAL_SETS`)."""
    from mail_bringup.graph import parse_overrides

    params = parse_overrides(items, text=True)
    for (node, name), option in _EVAL_SETS.items():
        if name in params.get(node, {}):
            raise ValueError(f"{node}.{name} is set by {option}, not by --profile-param")
    _sim_profile(params)  # unknown names and badly typed values: now, before anything runs
    return params


def sim_profile_controller(params: dict[str, dict] | None = None):
    """The controller core's configuration (control.controller.ControllerConfig) in the `sim` profile."""
    from ..control.params import controller_setup

    return controller_setup(_sim_profile(params)["franka_controller"]["ros__parameters"]).controller


def stack_exec_horizon(checkpoint, exec_horizon: int, params: dict[str, dict] | None = None) -> int:
    """The execution horizon both halves run: ``exec_horizon``, or the `sim` profile's own when 0 (which
    may itself be 0: the checkpoint's J)."""
    node = _sim_profile(params)["policy_node"]["ros__parameters"]
    horizon = int(exec_horizon or node["execution_horizon"])
    if horizon == 0:  # the profile runs the checkpoint's J
        from ..model.checkpoint import load_checkpoint

        horizon = load_checkpoint(checkpoint, "cpu").cfg.spec.action_horizon
    return horizon


def run_stack(args, sync_summary: dict, sync_episodes: list[dict], out: Path) -> int:
    """The stack half of `mail-il eval --through-stack`: the same seeds through the `sim` profile, then the
    comparison (printed, and written to OUT/fidelity.json and fidelity.md)."""
    from ..sim.env import CONTROL_DT
    from ..sim.tasks import get_task

    try:
        from mail_bringup.closed_loop import run_closed_loop
    except ImportError as e:  # no ROS in this environment
        print(f"mail-il eval --through-stack: the ROS stack is not available here: {e}", file=sys.stderr)
        return 2
    step_limit = args.max_steps or get_task(args.task).max_steps
    timeout = round(step_limit * CONTROL_DT, 6)
    seeds = tuple(range(args.seed, args.seed + args.episodes))
    root = out / "stack_checkpoints"
    name = Path(args.checkpoint).resolve().name
    shutil.rmtree(root, ignore_errors=True)
    out_abs = out.resolve()

    def skip(folder, names):  # training state, and this output when it lies inside the checkpoint
        return [n for n in names if n.startswith("train_state") or (Path(folder) / n).resolve() == out_abs]

    shutil.copytree(args.checkpoint, root / name, ignore=skip)
    profile = _sim_profile(args.profile_params)  # --profile-param values, typed like the profile's
    overrides = {node: {name: profile[node]["ros__parameters"][name] for name in values}
                 for node, values in args.profile_params.items()}
    overrides.setdefault("policy_node", {}).update(execution_horizon=args.exec_horizon,
                                                   history_mode=args.history_mode or "", device=args.device,
                                                   real_time_chunking=args.real_time_chunking)
    overrides.setdefault("sim_world", {})["episode_timeout"] = timeout
    size = int((sync_summary.get("render_size") or [128])[0])
    settings = dict(seeds=list(seeds), exec_horizon=args.exec_horizon, profile_params=args.profile_params,
                    history_mode=args.history_mode, device=args.device, real_time_chunking=args.real_time_chunking,
                    step_limit=step_limit, episode_timeout_s=timeout, image_size=size, overrides=overrides,
                    load_before=_load(), cpus=os.cpu_count())
    print(f"[stack] {len(seeds)} episodes of '{args.task}' through the sim profile (franky-sim, cameras, policy "
          f"node, controller over DDS), episode timeout {timeout} s ...", flush=True)
    t0 = time.monotonic()

    def log(line: str) -> None:
        print(line.replace("[demo]", "[stack]", 1), flush=True)

    report = run_closed_loop(str(root), name, task=args.task, seeds=seeds, image_size=size, log=log,
                             overrides=overrides, keep_going=True)
    stack_summary = report.summary()
    settings.update(stack_wall_seconds=round(time.monotonic() - t0, 1), load_after=_load())
    fidelity = compare(sync_summary, sync_episodes, stack_summary, step_limit, CONTROL_DT, settings)
    fidelity["stack_summary"] = stack_summary
    (out / "fidelity.json").write_text(json.dumps(fidelity, indent=1, default=str))
    table = markdown(fidelity)
    (out / "fidelity.md").write_text(table)
    print(table)
    print(f"machine: {settings['cpus']} CPUs, load average {settings['load_before']} before the stack run, "
          f"{settings['load_after']} after ({settings['stack_wall_seconds']} s)")
    print(f"wrote {out}/fidelity.json, fidelity.md")
    return 0


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
