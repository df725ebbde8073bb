"""`mail-il demos`: scripted-expert demonstrations on the simulated FR3, one rosbag2 per demo.

    mail-il demos --task push --episodes 50 --seed 0 --out runs/demos --workers 2
    mail-il demos --task all --check 50          # expert success rates only (no rendering, no bags)
    mail-il demos --task all --preview           # one PNG strip per task into docs/images/

Episode i of a task uses seed ``--seed + i``; its bag is ``OUT/<task>/ep<i>_seed<seed>/`` (mcap by
default). Failed expert episodes are dropped unless ``--keep-failed``; the summary (also written to
``OUT/summary.json``) says how many.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import shutil
import sys
import time
from pathlib import Path

import numpy as np

TASK_NAMES = ("reach", "push", "pick_place", "memory")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="all", help=f"one of {', '.join(TASK_NAMES)}, or 'all'")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--out", type=Path, default=Path("runs/demos"), help="output folder for the bags")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--settle-steps", type=int, default=SETTLE_STEPS,
                        help="steps recorded after the task is done (the expert finishing its move and holding)")
    parser.add_argument("--action-noise", type=float, default=0.0, metavar="RAD",
                        help="standard deviation [rad] of a slowly varying disturbance added to the executed "
                             "arm command (not to the recorded one), so demos show recoveries; 0 = off")
    parser.add_argument("--keep-failed", action="store_true", help="keep bags of failed expert episodes")
    parser.add_argument("--check", type=int, metavar="N", default=0,
                        help="only measure expert success over N seeded episodes per task (no render, no bags)")
    parser.add_argument("--min-success", type=float, default=0.95, help="--check fails below this rate")
    parser.add_argument("--preview", action="store_true", help="write a PNG strip per task instead of bags")
    parser.add_argument("--preview-dir", type=Path, default=Path("docs/images"))


def _tasks(arg: str) -> tuple[str, ...]:
    if arg == "all":
        return TASK_NAMES
    if arg not in TASK_NAMES:
        raise SystemExit(f"mail-il demos: unknown task {arg!r}; known: {', '.join(TASK_NAMES)}, all")
    return (arg,)


# ------------------------------------------------------------------------------------------------
_ENVS: dict = {}  # per process: (task, render) -> TaskEnv, built once


def _env(task: str, render: bool):
    from ..sim.env import make_task

    key = (task, render)
    if key not in _ENVS:
        _ENVS[key] = make_task(task, render=render)
    return _ENVS[key]


# A task is judged done the moment its threshold is crossed, often mid-motion (reach: the tcp 3 cm from
# the target, still moving). Demos that stopped there never showed a policy how to finish: policies
# passed the target at 3-5 cm and drifted on. So a demo goes on for this many steps after success,
# the expert completing its move and holding. Evaluation still ends an episode at success.
SETTLE_STEPS = 5


class ActionNoise:
    """Disturbance injected into the *executed* arm command while a demo is recorded; the bag keeps the
    expert's own command as the label (noise injection in the manner of DART, Laskey et al. 2017). A
    policy trained on clean demos only ever sees states on the expert's path; once its own small errors
    take it off that path it has never seen how to get back. With the arm pushed off the plan here and
    there, the demos show the expert's command leading back to it from nearby states.

    Per arm joint, an AR(1) process n_t = rho n_(t-1) + sqrt(1 - rho^2) sigma e_t (stationary standard
    deviation about ``sigma`` [rad], e_t standard normal; n_t clipped to +-2 sigma), so that a deviation
    lasts a few steps and shows in the images, and never exceeds 2 sigma; the gripper is never disturbed.
    Drawn from the episode's seed: the same seed records the same demo."""

    def __init__(self, sigma: float, seed: int, rho: float = 0.8, joints: int = 7):
        if not (sigma >= 0.0 and math.isfinite(sigma)):
            raise ValueError(f"action noise must be a finite standard deviation >= 0 [rad], got {sigma}")
        self.sigma, self.rho, self.joints = float(sigma), float(rho), joints
        self.rng = np.random.default_rng([int(seed), 0xDA27])
        self.n = np.zeros(joints)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        if self.sigma == 0.0:
            return action
        e = self.rng.standard_normal(self.joints)
        self.n = np.clip(self.rho * self.n + math.sqrt(1.0 - self.rho ** 2) * self.sigma * e,
                         -2.0 * self.sigma, 2.0 * self.sigma)
        out = np.array(action, dtype=float, copy=True)
        out[: self.joints] += self.n
        return out


def record_demo(env, seed: int, path: Path, episode: int = 0, storage: str = "mcap",
                stamp_base_ns: int | None = None, settle_steps: int = SETTLE_STEPS,
                action_noise: float = 0.0) -> dict:
    """Run ``env``'s scripted expert from ``seed`` and write every observation and command to a bag
    at ``path``, and ``settle_steps`` more after a success. With ``action_noise`` > 0 [rad] the arm
    executes the expert's command plus `ActionNoise` while the bag records the command itself. Returns
    the episode summary (success, steps to success, expert mode, bag bytes)."""
    from ..data.bags import DemoBagWriter
    from ..sim.experts import make_expert

    expert = make_expert(env)
    noise = ActionNoise(action_noise, seed)
    fovy = {c: env.camera_fovy(c) for c in env.cameras}
    with DemoBagWriter(path, fovy, storage=storage, stamp_base_ns=stamp_base_ns) as bag:
        obs = env.reset(seed)
        expert.reset(seed)
        bag.episode_event("start", 0.0, episode=episode, task=env.task_name, seed=seed, dt=env.dt,
                          action_noise=float(action_noise))
        done, info = False, {"success": False, "steps": 0}
        while not done:
            obs, done, info = _record_step(bag, env, expert, obs, noise)
        settled = settle_steps if info["success"] else 0
        for _ in range(settled):
            obs, _, _ = _record_step(bag, env, expert, obs, noise)
        bag.observation(obs, env.joint_velocity(), env.joint_effort())
        bag.episode_event("end", obs["time"], episode=episode, task=env.task_name, seed=seed,
                          success=bool(info["success"]), steps=info["steps"], settle_steps=settled,
                          expert_mode=expert.mode)
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return {"task": env.task_name, "seed": seed, "episode": episode, "success": bool(info["success"]),
            "steps": info["steps"], "settle_steps": settled, "mode": dict(expert.mode), "bytes": size,
            "path": str(path)}


def _record_step(bag, env, expert, obs, noise: ActionNoise):
    """Write the observation and the expert's command for it, then step with the command (plus the
    injected noise, never recorded): env.step's result."""
    bag.observation(obs, env.joint_velocity(), env.joint_effort())
    action = expert.act(obs)
    bag.action(obs["time"], action)
    return env.step(noise(action))


def _record_job(job: tuple) -> dict:
    task, seed, episode, out, storage, keep_failed, settle_steps, action_noise = job
    path = Path(out) / task / f"ep{episode:04d}_seed{seed}"
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = record_demo(_env(task, True), seed, path, episode, storage, settle_steps=settle_steps,
                         action_noise=action_noise)
    result["seconds"] = time.perf_counter() - t0
    if not result["success"] and not keep_failed:
        shutil.rmtree(path)
        result["path"] = None
    return result


def _check_job(job: tuple) -> dict:
    from ..sim.experts import run_expert_episode

    task, seed = job
    return run_expert_episode(_env(task, False), seed)


def _map(fn, jobs: list, workers: int, desc: str):
    from tqdm import tqdm

    if workers <= 1:
        for job in tqdm(jobs, desc=desc, unit="ep", file=sys.stderr):
            yield fn(job)
        return
    ctx = mp.get_context("spawn")  # each worker makes its own GL context
    with ctx.Pool(workers) as pool:
        yield from tqdm(pool.imap_unordered(fn, jobs), total=len(jobs), desc=desc, unit="ep", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
def run_check(tasks, episodes: int, seed: int, workers: int, min_success: float) -> int:
    jobs = [(t, seed + i) for t in tasks for i in range(episodes)]
    results = list(_map(_check_job, jobs, workers, "expert check"))
    rc = 0
    print(f"{'task':<12}{'success':>10}{'rate':>8}{'mean steps':>12}  failed seeds")
    for t in tasks:
        rs = [r for r in results if r["task"] == t]
        ok = sum(r["success"] for r in rs)
        rate = ok / len(rs)
        failed = sorted(r["seed"] for r in rs if not r["success"])
        print(f"{t:<12}{ok:>6}/{len(rs):<3}{rate:>8.2f}{np.mean([r['steps'] for r in rs]):>12.1f}  {failed}")
        rc |= rate < min_success
    return int(rc)


def write_preview(task: str, seed: int, out_dir: Path, frames: int = 6) -> Path:
    """One expert episode of ``task``: ``frames`` evenly spaced steps, agent view above wrist."""
    import cv2

    from ..sim.experts import make_expert

    env = _env(task, True)
    expert = make_expert(env)
    obs = env.reset(seed)
    expert.reset(seed)
    shots = [obs["images"]]
    done = False
    while not done:
        obs, done, _ = env.step(expert.act(obs))
        shots.append(obs["images"])
    picks = np.linspace(0, len(shots) - 1, frames).round().astype(int)
    strip = np.vstack([np.hstack([shots[i][cam] for i in picks]) for cam in env.cameras])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"sim_{task}.png"
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


def run(args: argparse.Namespace) -> int:
    tasks = _tasks(args.task)
    if args.episodes < 1 or args.workers < 1:
        raise SystemExit("mail-il demos: --episodes and --workers must be >= 1")
    if args.check:
        return run_check(tasks, args.check, args.seed, args.workers, args.min_success)
    if args.preview:
        for t in tasks:
            print(write_preview(t, args.seed, args.preview_dir))
        return 0
    if args.settle_steps < 0:
        raise SystemExit("mail-il demos: --settle-steps must be >= 0")
    if not (args.action_noise >= 0.0 and math.isfinite(args.action_noise)):
        raise SystemExit("mail-il demos: --action-noise must be a finite number >= 0 [rad]")
    jobs = [(t, args.seed + i, i, str(args.out), args.storage, args.keep_failed, args.settle_steps,
             args.action_noise)
            for t in tasks for i in range(args.episodes)]
    t0 = time.perf_counter()
    results = sorted(_map(_record_job, jobs, args.workers, "demos"), key=lambda r: (r["task"], r["episode"]))
    wall = time.perf_counter() - t0
    summary = {"tasks": {}, "wall_seconds": wall, "demos_per_minute": 60 * len(results) / wall,
               "workers": args.workers, "storage": args.storage, "action_noise": args.action_noise,
               "episodes": results}
    print(f"{'task':<12}{'kept':>6}{'success':>10}{'steps':>8}{'MB/demo':>9}")
    for t in tasks:
        rs = [r for r in results if r["task"] == t]
        ok = sum(r["success"] for r in rs)
        mb = np.mean([r["bytes"] for r in rs]) / 1e6
        kept = sum(r["path"] is not None for r in rs)
        summary["tasks"][t] = {"success": ok, "episodes": len(rs), "kept": kept, "mean_bag_mb": mb}
        print(f"{t:<12}{kept:>6}{ok:>6}/{len(rs):<3}{np.mean([r['steps'] for r in rs]):>8.1f}{mb:>9.2f}")
    print(f"{len(results)} demos in {wall:.1f} s: {summary['demos_per_minute']:.1f} demos/min "
          f"with {args.workers} worker(s)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mail-il demos", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
