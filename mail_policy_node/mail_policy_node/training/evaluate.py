"""Closed-loop evaluation of a checkpoint in the simulated tasks, through the inference engine.

Each episode: ``env.reset(seed)``, then every control step the engine observes the rendered frames
(and joint state); when the current chunk is used up (``exec_horizon`` actions, default J: the paper
executes the whole chunk, then replans) the engine acts and the next chunk is executed step by step.
Stepped synchronously (the simulation waits for the policy), episodes spread over worker processes.
With a controller configuration (``mail-il eval --through-controller``) each chunk goes to the
controller core the robot runs (control/controller.py: chunk checks, scheduler, safety filter,
watchdog), stepped at its cycle rate in simulated time, and the simulated arm follows its filtered
commands: what the deployed arm does with the policy's chunks, without the stack's latency.
Frames are rendered at the size the demonstrations were recorded at (stored in the checkpoint) and
resized by the engine with the stack's rule, exactly as in training.
A multi-task checkpoint (FeatureSpec.task_names, trained with data.tasks) is asked for the evaluated
task by its goal, the task's one-hot, given with every observation; a task it was not trained on is
refused before anything runs. A single-task checkpoint takes no goal: the task only picks the scene.
"""

from __future__ import annotations

import collections
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..spec import FR3_JOINT_NAMES


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class EvalJob:
    checkpoint: str
    task: str
    seed: int
    history: str | None  # None = the checkpoint's
    exec_horizon: int  # actions executed per chunk (0 = J)
    render_size: tuple[int, int]
    keep_frames: bool  # keep frames for a rollout picture
    max_steps: int = 0  # 0 = the task's limit
    device: str = "cpu"  # where the engine runs (cuda: kernels and CUDA graphs when available)
    controller: object = None  # control.controller.ControllerConfig: execute through it (None: directly)
    real_time_chunking: bool = False  # DDPM: each chunk keeps the overlap with the one it replaces (engine)


_WORKER: dict = {}


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _setup(job: EvalJob, batch: int):
    """This worker's engine of ``batch`` rows and its ``batch`` simulated scenes (kept for its next jobs)."""
    key = (job.checkpoint, job.task, job.history, job.render_size, job.device, batch, job.real_time_chunking)
    if _WORKER.get("key") != key:
        from ..engine import EngineConfig, InferenceEngine
        from ..model.checkpoint import load_checkpoint
        from ..sim import make_task

        policy = load_checkpoint(job.checkpoint, job.device)
        engine = InferenceEngine(policy, EngineConfig(history=job.history, batch=batch, device=job.device,
                                                      real_time_chunking=job.real_time_chunking))
        envs = [make_task(job.task, render=True, image_size=job.render_size, cameras=policy.cfg.spec.camera_names)
                for _ in range(batch)]
        goal = policy.cfg.spec.task_goal(job.task)  # the task's one-hot (None: a single-task checkpoint)
        _WORKER.update(key=key, engine=engine, envs=envs, spec=policy.cfg.spec,
                       goal=None if goal is None else np.asarray(goal, np.float32))
    return _WORKER["engine"], _WORKER["envs"], _WORKER["spec"], _WORKER["goal"]


def run_episode(job: EvalJob) -> dict:
    """One episode (an engine of one row)."""
    return run_episodes((job,))[0]


def run_episodes(jobs: tuple[EvalJob, ...]) -> list[dict]:
    """Episodes in lockstep (`run_lockstep`): one scene per job, one engine row per scene; each episode what
    it is alone (one job: the one-episode loop, number for number)."""
    engine, envs, spec, goal = _setup(jobs[0], len(jobs))
    horizon = jobs[0].exec_horizon or spec.action_horizon
    rows = [_Episode(job, env, env.reset(job.seed), horizon, spec.use_joint_state) for job, env in zip(jobs, envs)]
    run_lockstep(engine, rows, [job.seed for job in jobs], goal)
    return [r.result() for r in rows]


def run_lockstep(engine, rows: list, seeds: list[int], goal: np.ndarray | None = None) -> None:
    """Step episodes in lockstep through one engine of len(rows) rows until none is running: each control step
    observes all running episodes in one engine call and each replanning computes their chunks in one batch
    (the GPU's work per step hardly grows with the rows; episodes one at a time left it waiting on each). Rows
    are independent: an episode that ends stops observing (the engine's ``rows``) and the others go on, and a
    DDPM policy's noise is drawn per row, from a generator seeded with that row's episode seed on the engine's
    device, as an engine of one row seeded with it draws it: an episode does what it does alone, whatever its
    group (up to float32 rounding of the batch), so `--batch` never changes an evaluation's numbers.
    ``goal``: the task's goal embedding for every row (None: the policy takes none). With real-time chunking
    (an engine built with it) a row's new chunk keeps its overlap with the row's last one; the simulated time
    stands still while the policy computes, so nothing is frozen, the overlap only guided
    (control.chunks.committed_actions). The simulated tasks'
    evaluation and the Meta-World benchmark's (benchmarks.metaworld) share this loop; a row is their episode
    object, offering
      ``running``          whether it takes another step,
      ``view()``           what the policy observes now: (stamp [s], {camera: frame}, state or None),
      ``queue``            the actions of its chunk still to execute (empty: it replans this step),
      ``take(chunk, k)``   row k of a new chunk, and
      ``step(policy_s)``   execute its next action (``policy_s``: this step's engine time, shared by the rows).
    """
    import torch

    from ..control.chunks import committed_actions, stack_committed
    from ..engine import Observation

    engine.reset()
    running_chunks: dict = {}  # row -> its last chunk (control.chunks.ActionChunk), for real-time chunking
    shape = engine.noise_shape  # (draws, B, J, A) for DDPM; None for BC
    gens = [] if shape is None else [torch.Generator(device=engine.device).manual_seed(int(s)) for s in seeds]
    noise = None if shape is None else torch.zeros(shape, device=engine.device)
    running = [i for i, r in enumerate(rows) if r.running]
    while running:
        t0 = time.perf_counter()
        stamps, images, states = zip(*(rows[i].view() for i in running))
        engine.observe(Observation(
            stamp=np.array(stamps), images={cam: [im[cam] for im in images] for cam in images[0]},
            state=None if states[0] is None else np.stack(states),
            goal=None if goal is None else np.broadcast_to(goal, (len(running), goal.size))), rows=running)
        replan = [i for i in running if not rows[i].queue]
        if replan:
            for i in replan if noise is not None else ():  # drawn as an engine of one row draws it
                noise[:, i:i + 1] = torch.empty(noise[:, i:i + 1].shape, device=noise.device).normal_(
                    generator=gens[i])
            committed = None
            if engine.real_time_chunking:  # each row ready at its stamp: the world waited for the policy
                due = engine.due_times(rows=replan)
                ready = due[:, 0] - engine.start_offset_s
                committed = stack_committed([committed_actions(running_chunks[i], due[k], ready[k])
                                             if i in running_chunks else None for k, i in enumerate(replan)],
                                            engine.spec.action_horizon, engine.spec.action_dim)
            chunk = engine.act(noise, rows=replan, committed=committed)
            for k, i in enumerate(replan):
                rows[i].take(chunk, k)
                if engine.real_time_chunking:
                    running_chunks[i] = chunk.to_action_chunk(k)
        dt = time.perf_counter() - t0
        for i in running:
            rows[i].step(dt)
        running = [i for i in running if rows[i].running]


def lockstep_groups(jobs: list, batch: int) -> list[tuple]:
    """``jobs`` (consecutive seeds) in consecutive groups of at most ``batch``, of near-equal size: 100 in
    batches of 30 are 25 + 25 + 25 + 25, not 30 + 30 + 30 + 10 (the last group would step alone at the end)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    bounds = np.linspace(0, len(jobs), math.ceil(len(jobs) / batch) + 1).round().astype(int)
    return [tuple(jobs[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


class _Episode:
    """One row of `run_episodes` (`run_lockstep`'s row): its scene, its queue of actions and its figures."""

    def __init__(self, job: EvalJob, env, obs: dict, horizon: int, use_state: bool):
        self.job, self.env, self.obs, self.horizon, self.use_state = job, env, obs, horizon, use_state
        self.frames = [obs["images"]] if job.keep_frames else []
        self.queue: list[np.ndarray] = []
        self.latencies, self.step_times, self.distances = [], [], []
        self.plan: np.ndarray | None = None  # the last chunk's actions
        self.jumps: list[float] = []  # [rad] per replanning: largest joint change from the old plan's next action
        self.done, self.info = False, {"success": False, "steps": 0}
        self.limit = job.max_steps or env.max_steps
        self.arm = _ControllerInTheLoop(job.controller, env, obs, horizon) if job.controller is not None else None
        self.t_start = time.perf_counter()

    @property
    def running(self) -> bool:
        return not self.done and self.env.steps < self.limit

    def view(self) -> tuple:
        return self.obs["time"], self.obs["images"], self.obs["joint_state"] if self.use_state else None

    def take(self, chunk, row: int) -> None:
        self.latencies.append(chunk.latency_s)
        actions = chunk.actions[row]
        if self.plan is not None and self.horizon < len(self.plan):  # what the old plan would have done next
            joints = [k for k, n in enumerate(chunk.names) if n in FR3_JOINT_NAMES]
            self.jumps.append(float(np.max(np.abs(actions[0, joints] - self.plan[self.horizon, joints]), initial=0.0)))
        self.plan = actions
        self.queue = list(actions[:self.horizon])
        if self.arm is not None:
            self.arm.submit(chunk, self.obs["time"], row)

    def step(self, policy_s: float) -> None:
        action = self.queue.pop(0)
        self.step_times.append(policy_s)
        if self.arm is None:
            self.obs, self.done, self.info = self.env.step(action)
        else:
            self.obs, self.done, self.info = self.arm.step(self.obs["time"])
        if self.info.get("goal_distance") is not None:
            self.distances.append(self.info["goal_distance"])
        if self.job.keep_frames:
            self.frames.append(self.obs["images"])

    def result(self) -> dict:
        d, info = self.distances, self.info
        result = dict(seed=self.job.seed, success=bool(info["success"]), failed=bool(info.get("failed", False)),
                      steps=int(info["steps"]), chunk_latency_ms=1e3 * float(np.mean(self.latencies)),
                      step_ms=1e3 * float(np.mean(self.step_times)), episode_s=time.perf_counter() - self.t_start,
                      final_goal_distance=d[-1] if d else None, min_goal_distance=min(d) if d else None,
                      boundary_jump_rad=median_or_none(self.jumps), boundary_jump_max_rad=max(self.jumps, default=None),
                      frames=self.frames)
        if self.arm is not None:
            result["controller"] = self.arm.figures()
        return result


class _ControllerInTheLoop:
    """The controller core between the policy and the simulated arm, on the simulation's clock: a chunk
    is submitted when the policy computes it (stamped with its observation's simulated time, as the
    policy node stamps it with the camera's), and every control step runs the controller's cycles, whose
    filtered commands the arm follows (``TaskEnv.step(path=...)``). Enabled on the first chunk, as the
    `sim` profile's controller does (auto_enable)."""

    def __init__(self, config, env, obs: dict, horizon: int):
        from ..control.controller import ArmController

        self.env, self.horizon, self.sequence = env, horizon, 0
        q = obs["joint_state"]
        self.ctrl = ArmController(config, clock=lambda: 0.0, initial_q=q[:7], initial_gripper=float(q[7]))
        self.ctrl.update_measurement(q[:7], obs["time"], float(q[7]))
        self.period = config.safety.cycle_period
        self.cycles = max(1, int(round(env.dt / self.period)))
        self.max_speed = 0.0  # largest commanded |dq| / the filter's velocity limit

    def submit(self, chunk, now: float, row: int = 0) -> None:
        import dataclasses

        from ..control.controller import Mode

        action_chunk = dataclasses.replace(chunk.to_action_chunk(row=row, sequence=self.sequence),
                                           execute_horizon=self.horizon)
        self.sequence += 1
        if self.ctrl.mode == Mode.DISABLED:
            self.ctrl.enable(now)
        self.ctrl.submit_chunk(action_chunk, now=now, wall=now)

    def step(self, now: float):
        path = []
        grip = float(self.env.joint_state()[7])
        limit = self.ctrl.config.safety.velocity_limit
        for k in range(1, self.cycles + 1):
            out = self.ctrl.step(now + k * self.period)
            cmd = self.ctrl.command
            if out is not None:
                self.max_speed = max(self.max_speed, float(np.max(np.abs(cmd.dq) / limit)))
            width = cmd.gripper if math.isfinite(cmd.gripper) else grip
            path.append(np.concatenate([cmd.q, [width]]))
        obs, done, info = self.env.step(path[-1], path=path)
        q = obs["joint_state"]
        self.ctrl.update_measurement(q[:7], obs["time"], float(q[7]))
        return obs, done, info

    def figures(self) -> dict:
        c = self.ctrl.counters
        return dict(limit_hits=c.limit_hits, limits={k: int(v) for k, v in c.limits.items()},
                    chunks_rejected=c.chunks_rejected, rejections={k: int(v) for k, v in c.rejections.items()},
                    watchdog_trips=c.watchdog_trips, actions_dropped_stale=c.actions_dropped_stale,
                    max_velocity_ratio=round(self.max_speed, 3), mode=self.ctrl.mode.name)


def evaluate(checkpoint: str | Path, task: str, episodes: int, seed: int, workers: int = 1,
             history: str | None = None, exec_horizon: int = 0, pictures: int = 3, threads_per_worker: int = 1,
             progress: bool = True, max_steps: int = 0, device: str = "cpu",
             controller=None, batch: int = 1, real_time_chunking: bool = False) -> tuple[dict, list[dict]]:
    """Run ``episodes`` seeded episodes (seeds seed .. seed + episodes - 1). Returns (summary, episodes).
    ``controller``: a control.controller.ControllerConfig to execute the chunks through (module docstring).
    ``batch``: episodes stepped in lockstep through one engine (`run_episodes`), in groups of consecutive
    seeds of near-equal size; on a GPU shared by several evaluations this is what keeps it from being the
    bottleneck (paper-size DDPM one episode at a time: 255 ms a chunk with 12 processes on one H100).
    ``real_time_chunking``: a DDPM policy's chunks keep their overlap with the one they replace (`run_lockstep`);
    every episode reports the jump at its chunk boundaries (the largest joint change from what the old chunk
    would have commanded next: median and largest over its replannings, with an execution horizon below J)."""
    from ..model.checkpoint import load_checkpoint

    policy = load_checkpoint(checkpoint, "cpu")  # validates the checkpoint before any worker starts
    try:
        policy.cfg.spec.task_goal(task)  # a multi-task checkpoint: one of its tasks
    except ValueError as e:
        raise ValueError(f"checkpoint {checkpoint}: {e}") from None
    training = policy.metadata.get("training", {})
    native = training.get("native_image_size") or {}
    render = tuple(next(iter(native.values()))) if native else (128, 128)
    jobs = [EvalJob(str(checkpoint), task, seed + i, history, exec_horizon, render, i < pictures, max_steps, device,
                    controller, real_time_chunking) for i in range(episodes)]
    groups = lockstep_groups(jobs, batch)
    results = []
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=episodes, desc=f"eval {task}", unit="ep", disable=not progress)
    if workers <= 1:
        _worker_init(threads_per_worker)
        for group in groups:
            results.extend(run_episodes(group))
            bar.update(len(group))
    else:
        ctx = mp.get_context("spawn")  # each worker has its own GL context and torch threads
        os.environ.setdefault("MUJOCO_GL", "egl")
        with ctx.Pool(workers, initializer=_worker_init, initargs=(threads_per_worker,)) as pool:
            for r in pool.imap_unordered(run_episodes, groups):
                results.extend(r)
                bar.update(len(r))
    bar.close()
    wall = time.perf_counter() - t0
    results.sort(key=lambda r: r["seed"])
    ok = sum(r["success"] for r in results)
    lo, hi = wilson_interval(ok, len(results))
    steps = np.array([r["steps"] for r in results], float)
    succ_steps = steps[[r["success"] for r in results]]
    summary = dict(
        checkpoint=str(checkpoint), policy_id=policy.metadata.get("policy_id"), task=task, episodes=len(results),
        seeds=[seed, seed + episodes - 1], successes=ok, success_rate=ok / max(len(results), 1),
        wilson95=[lo, hi], failed_early=sum(r["failed"] for r in results),
        mean_steps=float(steps.mean()), mean_steps_success=float(succ_steps.mean()) if len(succ_steps) else None,
        # how far the failures ended from done (what the task's success thresholds; None for memory)
        failed_final_goal_distance_median=median_or_none([r["final_goal_distance"] for r in results
                                                          if not r["success"]]),
        failed_min_goal_distance_median=median_or_none([r["min_goal_distance"] for r in results if not r["success"]]),
        chunk_latency_ms=float(np.mean([r["chunk_latency_ms"] for r in results])),
        step_ms=float(np.mean([r["step_ms"] for r in results])), wall_seconds=wall, workers=workers,
        batch=max(len(g) for g in groups),  # rows per engine call: the latencies above are the batch's
        history=history or policy.cfg.history, exec_horizon=exec_horizon or policy.cfg.spec.action_horizon,
        render_size=list(render), device=device, describe=policy.describe() | {"training": None},
        through_controller=controller is not None, real_time_chunking=real_time_chunking and policy.is_ddpm,
        boundary_jump_rad=median_or_none([r["boundary_jump_rad"] for r in results]),
        boundary_jump_max_rad=max((r["boundary_jump_max_rad"] for r in results
                                   if r["boundary_jump_max_rad"] is not None), default=None),
        task_names=list(policy.cfg.spec.task_names),  # a multi-task checkpoint's tasks (its goal asked for task)
    )
    if controller is not None:
        figures = [r["controller"] for r in results]
        summary["controller"] = dict(
            limit_hits=sum(f["limit_hits"] for f in figures),
            limits=sum_counts(f["limits"] for f in figures),
            chunks_rejected=sum(f["chunks_rejected"] for f in figures),
            rejections=sum_counts(f["rejections"] for f in figures),
            watchdog_trips=sum(f["watchdog_trips"] for f in figures),
            max_velocity_ratio=max(f["max_velocity_ratio"] for f in figures))
    return summary, results


def sum_counts(counts) -> dict:
    """The sum of name -> count dicts (None counts as empty)."""
    return dict(sum((collections.Counter(c or {}) for c in counts), collections.Counter()))


def median_or_none(values) -> float | None:
    """Median of the values that are not None (None if there are none)."""
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def markdown(summary: dict) -> str:
    s = summary
    lo, hi = s["wilson95"]
    return "\n".join([
        "| checkpoint | task | history | episodes | success | 95% Wilson | mean steps | chunk latency | step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {s['policy_id']} | {s['task']} | {s['history']} | {s['episodes']} | {s['successes']}/{s['episodes']} "
        f"({100 * s['success_rate']:.0f}%) | {100 * lo:.0f}-{100 * hi:.0f}% | {s['mean_steps']:.1f} | "
        f"{s['chunk_latency_ms']:.1f} ms | {s['step_ms']:.1f} ms |",
        "",
        *([] if not s.get("controller") else [
            f"through the controller (the sim profile's): the filter overrode {s['controller']['limit_hits']} "
            f"cycles {dict(s['controller']['limits'])}; chunks rejected {s['controller']['chunks_rejected']} "
            f"{dict(s['controller']['rejections'])}; watchdog trips {s['controller']['watchdog_trips']}; "
            f"largest commanded abs(dq) / limit {s['controller']['max_velocity_ratio']}", ""]),
        *([] if s.get("boundary_jump_rad") is None else [
            f"execution horizon {s['exec_horizon']}, real-time chunking {'on' if s['real_time_chunking'] else 'off'}: "
            f"joint jump at chunk boundaries (new chunk's first action against the old one's next) median "
            f"{s['boundary_jump_rad']:.4f} rad, largest {s['boundary_jump_max_rad']:.4f} rad", ""]),
    ])


def write_picture(result: dict, path: Path, n: int = 8) -> Path | None:
    """A strip of ``n`` evenly spaced frames: one row per camera."""
    import cv2

    frames = result["frames"]
    if not frames:
        return None
    picks = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    strip = np.vstack([np.hstack([frames[i][cam] for i in picks]) for cam in frames[0]])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
