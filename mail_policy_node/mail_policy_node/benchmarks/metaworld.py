"""`mail-il metaworld`: Meta-World v3 as a public benchmark: expert demos as rosbag2, checkpoints evaluated.

    mail-il metaworld demos --out runs/metaworld/demos --workers 2
    mail-il metaworld eval --run runs/train/mw_push_dma --task push --workers 2
    mail-il metaworld eval --checkpoint CKPT --task push --episodes 100 --batch 25 --device cuda
    mail-il metaworld check --task all --episodes 10     # expert success only, no rendering

Meta-World has a venv of its own (metaworld 3.1.1 pins mujoco 3.3.0, the project 4.0.0): `make
metaworld-env` creates .venv-metaworld, and the commands above run as `.venv-metaworld/bin/mail-il ...`.

The recipe is DP3's (3D Diffusion Policy, Ze et al. 2024) for Meta-World: per task 10 demonstrations by
Meta-World's scripted experts, 200-step episodes recorded whole (the expert goes on after success), a demo
kept only when it succeeded on at least 5 steps (others are counted and dropped), the camera ``corner2``
where DP3 placed it plus the gripper camera ``gripperPOV`` for MaIL's two views, 128x128
(`metaworld_env` says how). Default task set: where image Diffusion Policy leaves room in DP3's tables.
One difference: the experts ask for up to about 2 (hand) where the env clips every value to [-1, 1];
the bags record the clipped action, the one executed (DP3 kept the raw one).

Demos: task T's bags are ``OUT/T/ep<i>_seed<s>/`` (mcap), the stack's demo format (`data.bags`): both
cameras' frames as lossless PNG CompressedImage on /camera/<name>/image_raw/compressed (image_transport's
name; the training config maps them in data.topics), ``--images raw`` rgb8 on /camera/<name>/image_raw
(push, 200 steps: 6.2 MB a demo against 20.1 MB raw; +0.4 s to record, +0.2 s to decode once, then read
from the trainer's frame cache alike), the state on /joint_states under the Sawyer's own names
(`BAG_STATE_NAMES`: its 7 arm joints, the claw distance, the hand's position and gripper opening), the
action on /mail/action_command (`ACTION_NAMES`, spec's action space ``ee_delta_position``: no FR3
controller runs it), /mail/episode start/end events {"event", "episode", "task": "T-v3", "seed", ...}.
Seeds: ``--seed`` (0) upwards, the next seed after a dropped demo, all below `EVAL_SEED`.

Evaluation: 100 fixed seeded starts per task (``EVAL_SEED`` = 1000 upwards, disjoint from the demos'),
through the inference engine as `training.evaluate` runs the project's own tasks (a chunk of J actions
executed, then the next; the engine reset per episode), episodes spread over worker processes; with
``--batch N`` a worker steps up to N of a task's episodes in lockstep through one engine batch (the loop
`training.evaluate.run_lockstep`, shared with the project's tasks), so workers sharing a GPU each make one
call per control step instead of N. A multi-task checkpoint (data.tasks, trained over several tasks' demos:
their episode events name the task as ``T-v3``) is given the evaluated task's goal token. An episode
succeeds when Meta-World's ``info["success"]`` is true at any of its 200 steps (DP3's count); it ends
there, as the outcome is then decided (``--full-episodes`` runs all 200). ``--run RUN`` evaluates every
checkpoint a training run kept (RUN/checkpoints/step_*, RUN/final) and reports both the last one and
DP3's best-5 metric: the mean of the 5 best success rates over those evaluations (keep enough
checkpoints: train.keep_checkpoints). A checkpoint is refused before any episode unless its spec says
Meta-World's action space and cameras, and a state the demos hold (`check_spec`). Prints tables with
95 % Wilson intervals; writes metaworld_eval.json and .md to --out.

Training on the demos (mail-il train mail_bringup/config/train/metaworld_dma_ddpm_gpu.yaml): data.cameras
[corner2, gripperPOV], data.dt 0.0125 (Meta-World's control step: 5 physics steps of 2.5 ms),
data.image_size [128, 128], data.state_names `STATE_NAMES` (DP3's proprioception: the hand's position and
gripper opening) with data.use_joint_state true. The checkpoint's spec then says action space
``ee_delta_position`` and those state names; the evaluator gives a policy the state it names, any of
`BAG_STATE_NAMES`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..spec import ACTION_SPACE_EE_DELTA_POSITION
from ..spec import EE_DELTA_POSITION_NAMES as ACTION_NAMES  # Meta-World's action, each in [-1, 1]

# --- the benchmark's settings (no metaworld import here: the main venv loads this module too) ---
# the task set: where image Diffusion Policy leaves room in DP3's tables
TASKS = ("assembly", "disassemble", "stick-push", "hammer", "peg-insert-side", "push", "pick-place")
CAMERAS = ("corner2", "gripperPOV")
MAX_STEPS = 200  # control steps per episode (DP3's episode_length)
IMAGE_SIZE = (128, 128)
DEMOS_PER_TASK = 10
MIN_SUCCESS_STEPS = 5  # DP3 keeps a demo with success on at least 5 of its steps
EVAL_EPISODES = 100
EVAL_SEED = 1000  # evaluation seeds start here; demo seeds stay below
BEST_K = 5  # DP3's best-5: mean of the 5 best evaluations over training
DP3_CORNER2_POS = (0.6, 0.295, 0.8)  # DP3's MetaWorldEnv: model.cam_pos[corner2]
DP3_CORNER2_CLIP = (0.1, 1.5)  # DP3's vis.map.znear / zfar (fractions of the model's extent)
FLIPPED_CAMERAS = ("corner2",)  # rendered upside down by MuJoCo (metaworld_env's docstring)
ARM_JOINT_NAMES = tuple(f"right_j{i}" for i in range(7))  # the Sawyer's arm joints [rad], its MJCF's names
CLAW_DISTANCE_NAME = "claw_distance"  # [m] between the Sawyer's two claws
HAND_STATE_NAMES = ("hand_x", "hand_y", "hand_z", "gripper_opening")  # [m] world frame; 0 closed .. 1 open
BAG_STATE_NAMES = ARM_JOINT_NAMES + (CLAW_DISTANCE_NAME,) + HAND_STATE_NAMES  # the demos' /joint_states
STATE_NAMES = HAND_STATE_NAMES  # the training recipe's data.state_names (DP3's agent_pos: the hand)
IMAGE_FORMATS = ("png", "raw")  # the demos' frames: PNG CompressedImage (default) or rgb8 Image
BENCHMARK = "metaworld-v3"
SETUP_HINT = "run `make metaworld-env`, then `.venv-metaworld/bin/mail-il metaworld ...`"


def env_name(task: str) -> str:
    return f"{task}-v3"


def _load_env_module():
    """metaworld_env, or SystemExit naming the venv to use."""
    try:
        from . import metaworld_env
    except ImportError as e:
        raise SystemExit(f"mail-il metaworld: Meta-World is not importable in {sys.executable} ({e}): "
                         f"{SETUP_HINT}") from None
    return metaworld_env


# ------------------------------------------------------------------------------------------------
# Demonstrations
# ------------------------------------------------------------------------------------------------
def camera_topics(images: str = "png") -> dict[str, str]:
    """camera -> the demos' topic of its frames: image_transport's ``/camera/<name>/image_raw/compressed`` for
    PNG, the stack's ``/camera/<name>/image_raw`` for raw rgb8 (data.topics' cameras for the former)."""
    from ..spec import camera_image_topic

    return {c: camera_image_topic(c) + ("/compressed" if images == "png" else "") for c in CAMERAS}


def _bag_writer_class():
    from ..data.bags import COMPRESSED_IMAGE, IMAGE, JOINT_STATE, DemoBagWriter
    from ..data.images import encode_compressed
    from ..spec import TOPIC_JOINT_STATES

    class MetaWorldBagWriter(DemoBagWriter):
        """The stack's demo bag, with the Sawyer's state on /joint_states under its own names
        (`BAG_STATE_NAMES`): the trainer takes the entries data.state_names names. ``images`` "png": the
        frames as lossless PNG CompressedImage on `camera_topics` (a third of raw rgb8's bytes), "raw": rgb8."""

        def __init__(self, *args, images: str = "png", **kwargs):
            if images not in IMAGE_FORMATS:
                raise ValueError(f"images must be one of {IMAGE_FORMATS}, got {images!r}")
            super().__init__(*args, **kwargs)
            self.images = images

        def _add(self, topic: str, msgtype: str) -> None:
            if msgtype == IMAGE and self.images == "png":
                topic, msgtype = topic + "/compressed", COMPRESSED_IMAGE
            super()._add(topic, msgtype)

        def _write(self, topic: str, ns: int, msg, msgtype: str) -> None:
            if msgtype == IMAGE and self.images == "png":  # DemoBagWriter.image's rgb8 frame, as PNG
                rgb = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
                data = np.frombuffer(encode_compressed(rgb, "png"), np.uint8)
                msg = self._ts.types[COMPRESSED_IMAGE](header=msg.header, format="rgb8; png compressed bgr8", data=data)
                topic, msgtype = topic + "/compressed", COMPRESSED_IMAGE
            super()._write(topic, ns, msg, msgtype)

        def state(self, t: float, state: np.ndarray) -> None:
            ns, stamp = self._stamp(t)
            position = np.asarray(state, float)
            if position.shape != (len(BAG_STATE_NAMES),):
                raise ValueError(f"a Meta-World state is {len(BAG_STATE_NAMES)} values {BAG_STATE_NAMES}, got "
                                 f"{position.shape}")
            msg = self._ts.types[JOINT_STATE](header=self._header(stamp), name=list(BAG_STATE_NAMES),
                                              position=position, velocity=np.zeros(0), effort=np.zeros(0))
            self._write(TOPIC_JOINT_STATES, ns, msg, JOINT_STATE)

    return MetaWorldBagWriter


def record_demo(env, seed: int, path: Path, episode: int = 0, storage: str = "mcap",
                stamp_base_ns: int | None = None, steps: int = MAX_STEPS, images: str = "png") -> dict:
    """Run ``env``'s expert from ``seed`` for ``steps`` control steps and write every observation and
    action to a bag at ``path`` (frames as ``images``: png or raw). Returns the episode's summary (success,
    successful steps, first one)."""
    writer = _bag_writer_class()
    expert = env.expert()
    fovy = {c: env.camera_fovy(c) for c in env.cameras}
    task = env_name(env.task_name)
    first, n_success = None, 0
    with writer(path, fovy, storage=storage, action_names=ACTION_NAMES, stamp_base_ns=stamp_base_ns,
                images=images) as bag:
        obs = env.reset(seed)
        bag.episode_event("start", 0.0, episode=episode, task=task, seed=seed, dt=env.dt, benchmark=BENCHMARK)
        for k in range(steps):
            _write_observation(bag, obs)
            action = np.clip(expert.act(obs), -1.0, 1.0)  # what the env executes (module docstring)
            bag.action(obs["time"], action)
            obs, info = env.step(action)
            n_success += info["success"]
            first = k if first is None and info["success"] else first
        _write_observation(bag, obs)
        ok = n_success >= MIN_SUCCESS_STEPS
        bag.episode_event("end", obs["time"], episode=episode, task=task, seed=seed, success=ok, steps=steps,
                          success_steps=n_success, first_success_step=first)
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return dict(task=env.task_name, seed=seed, episode=episode, success=ok, success_steps=n_success,
                first_success_step=first, bytes=size, path=str(path))


def _write_observation(bag, obs: dict) -> None:
    for cam, img in obs["images"].items():
        bag.image(cam, obs["time"], img)
    bag.state(obs["time"], obs["state"])


_ENVS: dict = {}  # per process: (task, render) -> MetaWorldTask


def _env(task: str, render: bool = True):
    if (task, render) not in _ENVS:  # one at a time: the jobs come grouped by task
        _close_envs()
        _ENVS[(task, render)] = _load_env_module().MetaWorldTask(task, render=render)
    return _ENVS[(task, render)]


def _demo_job(job: tuple) -> dict:
    task, seed, episode, out, storage, steps, images = job
    path = Path(out) / task / f"ep{episode:04d}_seed{seed}"
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = record_demo(_env(task), seed, path, episode, storage, steps=steps, images=images)
    result["seconds"] = time.perf_counter() - t0
    if not result["success"]:
        shutil.rmtree(path)
        result["path"] = None
    return result


def _check_job(job: tuple) -> dict:
    task, seed = job
    env = _env(task, render=False)
    expert, obs = env.expert(), env.reset(seed)
    n_success, first = 0, None
    for k in range(MAX_STEPS):
        obs, info = env.step(expert.act(obs))
        n_success += info["success"]
        first = k if first is None and info["success"] else first
    return dict(task=task, seed=seed, success=n_success >= 1, success_steps=n_success, first_success_step=first)


def _pool_map(fn, jobs: list, workers: int, desc: str, threads: int = 1, episodes=lambda job: 1):
    """fn over jobs, in this process or a spawn pool (each worker its own GL context); yields results. The
    progress bar counts ``episodes(job)`` per job (a group of episodes: its length)."""
    from tqdm import tqdm

    bar = tqdm(total=sum(map(episodes, jobs)), desc=desc, unit="ep", file=sys.stderr, disable=not jobs or _QUIET)
    if workers <= 1:
        _init_worker(threads)
        try:
            for job in jobs:
                yield fn(job)
                bar.update(episodes(job))
        finally:
            _close_envs()
    else:  # a worker that dies fails the run (BrokenProcessPool) instead of leaving it waiting for the job
        from concurrent.futures import ProcessPoolExecutor, as_completed

        os.environ.setdefault("MUJOCO_GL", "egl")
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(fn, job): job for job in jobs}
            for future in as_completed(futures):
                yield future.result()
                bar.update(episodes(futures[future]))
    bar.close()


_QUIET = False


def _init_worker(threads: int) -> None:
    """torch threads per worker, as the sim tasks' evaluation; and the worker's scenes closed when it exits,
    before the interpreter tears down what their GL contexts need (left to the garbage collector, each one
    printed an EGLError traceback at a pool worker's exit under Python 3.12)."""
    from ..training.evaluate import _worker_init

    _worker_init(threads)
    atexit.register(_close_envs)


def _close_envs() -> None:
    """Close this process's environments (their GL contexts) while the interpreter still can."""
    for env in [*_ENVS.values(), *_WORKER.get("envs", [])]:
        env.close()
    _ENVS.clear()
    _WORKER.clear()


def record_demos(tasks, episodes: int, seed: int, out: Path, workers: int = 1, storage: str = "mcap",
                 max_tries: int = 0, steps: int = MAX_STEPS, images: str = "png") -> dict:
    """``episodes`` kept demos per task: seeds ``seed``, ``seed + 1``, ... until that many succeeded or
    ``max_tries`` (default 3 x episodes) seeds were tried. Returns the summary (also OUT/summary.json)."""
    max_tries = max_tries or 3 * episodes
    if seed < 0 or seed + max_tries > EVAL_SEED:
        raise ValueError(f"demo seeds {seed}..{seed + max_tries - 1} must stay in 0..{EVAL_SEED - 1}: the "
                         f"evaluation's seeds start at {EVAL_SEED}")
    t0 = time.perf_counter()
    results: list[dict] = []
    next_seed = {t: seed for t in tasks}
    while True:  # rounds: each task's missing demos from its next seeds
        jobs = []
        for t in tasks:
            kept = sum(r["task"] == t and r["success"] for r in results)
            tried = next_seed[t] - seed
            n = min(episodes - kept, max_tries - tried)
            jobs += [(t, next_seed[t] + i, tried + i, str(out), storage, steps, images) for i in range(max(n, 0))]
            next_seed[t] += max(n, 0)
        if not jobs:
            break
        results += list(_pool_map(_demo_job, jobs, workers, "metaworld demos"))
    wall = time.perf_counter() - t0
    results.sort(key=lambda r: (r["task"], r["seed"]))
    summary = dict(benchmark=BENCHMARK, episodes_per_task=episodes, first_seed=seed, steps=steps,
                   cameras=list(CAMERAS), image_size=list(IMAGE_SIZE), storage=storage, images=images,
                   camera_topics=camera_topics(images), workers=workers,
                   wall_seconds=wall, seconds_per_demo=sum(r["seconds"] for r in results) / max(len(results), 1),
                   tasks={}, episodes=results)
    for t in tasks:
        rs = [r for r in results if r["task"] == t]
        kept = [r for r in rs if r["success"]]
        summary["tasks"][t] = dict(kept=len(kept), tried=len(rs),
                                   dropped_seeds=[r["seed"] for r in rs if not r["success"]],
                                   mean_bag_mb=float(np.mean([r["bytes"] for r in rs]) / 1e6) if rs else 0.0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalJob:
    checkpoint: str
    task: str
    seed: int
    exec_horizon: int = 0  # actions executed per chunk (0 = J)
    max_steps: int = MAX_STEPS
    full_episodes: bool = False  # go on after success (the outcome does not change)
    device: str = "cpu"
    render_size: tuple[int, int] = IMAGE_SIZE


_WORKER: dict = {}
_HAND_XYZ = [BAG_STATE_NAMES.index(n) for n in HAND_STATE_NAMES[:3]]


def _setup(job: EvalJob, batch: int):
    """This worker's engine of ``batch`` rows for the job's checkpoint, ``batch`` scenes of its task, and the
    task's goal (None: a single-task checkpoint). All kept for its next jobs: the scenes while the task stays
    (also across checkpoints; building one with its renderer takes ~0.35 s), the engines per batch size
    (near-equal groups can differ by one row)."""
    from ..engine import EngineConfig, InferenceEngine

    key = (job.checkpoint, job.device)
    if _WORKER.get("key") != key:
        from ..model.checkpoint import load_checkpoint

        _WORKER.update(key=key, policy=load_checkpoint(job.checkpoint, job.device), engines={})
    policy, engines = _WORKER["policy"], _WORKER["engines"]
    if batch not in engines:  # the engine works on its own copy of the policy
        engines[batch] = InferenceEngine(policy, EngineConfig(batch=batch, device=job.device))
    spec = policy.cfg.spec
    scene = (job.task, job.render_size, spec.camera_names)
    if _WORKER.get("scene") != scene:
        for env in _WORKER.get("envs", []):
            env.close()
        _WORKER.update(scene=scene, envs=[])
    envs = _WORKER["envs"]
    while len(envs) < batch:
        envs.append(_load_env_module().MetaWorldTask(job.task, job.render_size, cameras=spec.camera_names))
    goal = spec.task_goal(env_name(job.task))  # a multi-task checkpoint's goal token: the task's one-hot
    return engines[batch], envs[:batch], spec, None if goal is None else np.asarray(goal, np.float32)


def run_episode(job: EvalJob) -> dict:
    """One seeded episode of the checkpoint (an engine of one row): success (Meta-World's, at any step), steps,
    timings, and what the env received (actions stepped, their mean magnitude, how far the hand moved)."""
    return run_episodes((job,))[0]


def run_episodes(jobs: tuple[EvalJob, ...]) -> list[dict]:
    """Episodes of one checkpoint and task in lockstep through one engine batch (training.evaluate's
    `run_lockstep`, the loop the simulated tasks' evaluation runs): one scene per job, each episode what it is
    alone, its DDPM noise from its own seed (up to float32 rounding of the batch; one job: the one-episode
    loop, number for number)."""
    from ..training.evaluate import run_lockstep

    engine, envs, spec, goal = _setup(jobs[0], len(jobs))
    rows = [_Episode(job, env, env.reset(job.seed), spec) for job, env in zip(jobs, envs)]
    run_lockstep(engine, rows, [job.seed for job in jobs], goal)
    return [r.result() for r in rows]


def _run_groups(groups: tuple) -> list[dict]:
    """`run_episodes` of each group in turn (one checkpoint and task: the scenes are built once)."""
    return [r for group in groups for r in run_episodes(tuple(group))]


class _Episode:
    """One row of `run_episodes` (`run_lockstep`'s row): its scene, its queue of actions and its figures.
    It ends at Meta-World's first success (the outcome is then decided) unless ``full_episodes``."""

    def __init__(self, job: EvalJob, env, obs: dict, spec):
        self.job, self.env, self.obs, self.spec = job, env, obs, spec
        self.horizon = job.exec_horizon or spec.action_horizon
        self.start_hand = obs["state"][_HAND_XYZ].copy()
        self.queue: list[np.ndarray] = []
        self.latencies, self.step_times, self.sent = [], [], []
        self.first: int | None = None  # the step of the first success
        self.t_start = time.perf_counter()

    @property
    def running(self) -> bool:
        return len(self.sent) < self.job.max_steps and (self.first is None or self.job.full_episodes)

    def view(self) -> tuple:
        return self.obs["time"], self.obs["images"], _state(self.obs, self.spec)

    def take(self, chunk, row: int) -> None:
        self.latencies.append(chunk.latency_s)
        self.queue = list(chunk.actions[row][:self.horizon])

    def step(self, policy_s: float) -> None:
        action = np.asarray(self.queue.pop(0), np.float64)
        self.step_times.append(policy_s)
        self.obs, info = self.env.step(action)
        self.sent.append(action)
        if info["success"] and self.first is None:
            self.first = len(self.sent) - 1

    def result(self) -> dict:
        job, sent = self.job, np.asarray(self.sent)
        return dict(checkpoint=job.checkpoint, task=job.task, seed=job.seed, success=self.first is not None,
                    first_success_step=self.first, steps=len(sent),
                    chunk_latency_ms=1e3 * float(np.mean(self.latencies)),
                    step_ms=1e3 * float(np.mean(self.step_times)), episode_s=time.perf_counter() - self.t_start,
                    actions_sent=len(sent), mean_abs_action=np.abs(sent).mean(0).tolist(),
                    hand_moved_m=float(np.linalg.norm(self.obs["state"][_HAND_XYZ] - self.start_hand)))


def _state(obs: dict, spec) -> np.ndarray | None:
    """The state the policy was trained on: the entries of the bags' `BAG_STATE_NAMES` its spec names."""
    if not spec.use_joint_state:
        return None
    return obs["state"][[BAG_STATE_NAMES.index(n) for n in spec.state_names]].astype(np.float32)


def check_spec(spec, checkpoint: str, tasks=()) -> None:
    """ValueError unless a checkpoint of ``spec`` runs here: Meta-World's action space and actions, its
    cameras, a state (when it takes one) of entries the demos' /joint_states has, and, for a multi-task
    checkpoint (data.tasks: the demos' episode events name a task "T-v3"), every one of ``tasks``."""
    if spec.action_space != ACTION_SPACE_EE_DELTA_POSITION or tuple(spec.action_names) != ACTION_NAMES:
        raise ValueError(f"checkpoint {checkpoint} predicts {spec.action_space} actions {list(spec.action_names)}; "
                         f"Meta-World takes {ACTION_SPACE_EE_DELTA_POSITION} {list(ACTION_NAMES)}")
    unknown = [cam for cam in spec.camera_names if cam not in CAMERAS]
    if unknown:
        raise ValueError(f"checkpoint {checkpoint} takes camera(s) {unknown}; Meta-World renders {list(CAMERAS)}")
    missing = [n for n in spec.state_names if n not in BAG_STATE_NAMES] if spec.use_joint_state else []
    if missing:
        raise ValueError(f"checkpoint {checkpoint} takes the state {list(spec.state_names)}: Meta-World has no "
                         f"{missing} (it has {list(BAG_STATE_NAMES)}; train with data.state_names)")
    for task in tasks:
        try:
            spec.task_goal(env_name(task))
        except ValueError as e:
            raise ValueError(f"checkpoint {checkpoint}: {e}") from None


def summarize(results: list[dict], checkpoint: str, task: str) -> dict:
    from ..training.evaluate import wilson_interval

    rs = sorted((r for r in results if r["checkpoint"] == checkpoint and r["task"] == task), key=lambda r: r["seed"])
    ok = sum(r["success"] for r in rs)
    lo, hi = wilson_interval(ok, len(rs))
    firsts = [r["first_success_step"] for r in rs if r["success"]]
    return dict(checkpoint=checkpoint, task=task, episodes=len(rs), seeds=[rs[0]["seed"], rs[-1]["seed"]] if rs else [],
                successes=ok, success_rate=ok / max(len(rs), 1), wilson95=[lo, hi],
                mean_steps_to_success=float(np.mean(firsts)) + 1 if firsts else None,
                chunk_latency_ms=float(np.mean([r["chunk_latency_ms"] for r in rs])),
                step_ms=float(np.mean([r["step_ms"] for r in rs])),
                episodes_detail=[{k: v for k, v in r.items() if k not in ("checkpoint", "task")} for r in rs])


def best_k(rates: list[float], k: int = BEST_K) -> float:
    """DP3's best-k: the mean of the k largest success rates (all of them when fewer)."""
    top = sorted(rates, reverse=True)[:k]
    return float(np.mean(top)) if top else float("nan")


def step_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """A training run's step checkpoints written so far, (step, RUN/checkpoints/step_<n>) in step order. Not a
    step_<n>.tmp: the trainer writes a checkpoint there and renames it when whole, so a run still training can
    have one half-written."""
    found = [(int(p.name.split("_")[-1]), p) for p in (run / "checkpoints").glob("step_*")
             if p.name.split("_")[-1].isdigit() and (p / "config.json").is_file()]
    return sorted(found)


def run_checkpoints(run: Path) -> list[Path]:
    """A training run's checkpoints in training order: its step checkpoints, then RUN/final unless its
    weights are the last step's."""
    steps = [p for _, p in step_checkpoints(run)]
    final = run / "final"
    if (final / "config.json").is_file():
        sha = json.loads((final / "config.json").read_text()).get("weights_sha256")
        if not steps or json.loads((steps[-1] / "config.json").read_text()).get("weights_sha256") != sha:
            steps.append(final)
    if not steps:
        raise ValueError(f"no checkpoints under {run} (checkpoints/step_*/config.json or final/config.json)")
    return steps


def evaluate(checkpoints: list[str], tasks, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED, workers: int = 1,
             exec_horizon: int = 0, full_episodes: bool = False, device: str = "cpu", threads: int = 1,
             max_steps: int = MAX_STEPS, batch: int = 1) -> dict:
    """Every checkpoint on every task, ``episodes`` seeded starts each. The last checkpoint given is "last";
    best-5 is over all of them. ``batch``: each checkpoint's episodes of a task stepped in lockstep through one
    engine (`run_episodes`), in groups of consecutive seeds of near-equal size (training.evaluate's
    `lockstep_groups`). Returns the report (metaworld_eval.json)."""
    from ..model.checkpoint import load_checkpoint
    from ..training.evaluate import lockstep_groups

    if seed < EVAL_SEED:
        print(f"note: evaluation seeds from {seed} may overlap the demos' (0..{EVAL_SEED - 1})", file=sys.stderr)
    render = {}
    for c in checkpoints:  # validate every checkpoint before any worker starts; the size it was trained at
        policy = load_checkpoint(c, "cpu")
        check_spec(policy.cfg.spec, str(c), tasks)
        native = policy.metadata.get("training", {}).get("native_image_size") or {}
        render[c] = tuple(next(iter(native.values()))) if native else IMAGE_SIZE
    units = [lockstep_groups([EvalJob(str(c), t, seed + i, exec_horizon, max_steps, full_episodes, device, render[c])
                              for i in range(episodes)], batch) for t in tasks for c in checkpoints]
    # A worker's job is a run of consecutive groups of one checkpoint and task, stepped one after another on the
    # same scenes: a scene with its renderer takes ~0.35 s to build (CPU, EGL), so a worker that took a task's
    # groups one at a time, between other tasks', rebuilt batch scenes for each. About two runs per worker
    # in all keeps the workers evenly busy.
    splits = max(1, math.ceil(2 * workers / len(units)))
    runs = [run for groups in units for run in lockstep_groups(groups, math.ceil(len(groups) / splits))]
    t0 = time.perf_counter()
    results = [r for rs in _pool_map(_run_groups, runs, workers, "metaworld eval", threads,
                                     episodes=lambda run: sum(map(len, run))) for r in rs]
    wall = time.perf_counter() - t0
    evaluations = [summarize(results, str(c), t) for c in checkpoints for t in tasks]
    per_task = {}
    for t in tasks:
        rates = [e["success_rate"] for e in evaluations if e["task"] == t]
        last = next(e for e in evaluations if e["task"] == t and e["checkpoint"] == str(checkpoints[-1]))
        per_task[t] = dict(last=last["success_rate"], last_wilson95=last["wilson95"], best5=best_k(rates),
                           evaluations=len(rates), rates=rates)
    mean = dict(last=float(np.mean([v["last"] for v in per_task.values()])),
                best5=float(np.mean([v["best5"] for v in per_task.values()])))
    return dict(benchmark=BENCHMARK, checkpoints=[str(c) for c in checkpoints], tasks=list(tasks), episodes=episodes,
                seeds=[seed, seed + episodes - 1], max_steps=max_steps, success="info['success'] at any step",
                exec_horizon=exec_horizon, device=device, workers=workers,
                batch=max(len(g) for groups in units for g in groups), wall_seconds=wall,
                episodes_per_second=len(results) / wall, steps_per_second=sum(r["steps"] for r in results) / wall,
                per_task=per_task, mean=mean, evaluations=evaluations)


def markdown(report: dict) -> str:
    lines = ["| checkpoint | task | episodes | success | 95% Wilson | steps to success | chunk latency | step |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in report["evaluations"]:
        lo, hi = e["wilson95"]
        steps = f"{e['mean_steps_to_success']:.0f}" if e["mean_steps_to_success"] is not None else "-"
        lines.append(f"| {Path(e['checkpoint']).name} | {e['task']} | {e['episodes']} | "
                     f"{e['successes']}/{e['episodes']} ({100 * e['success_rate']:.0f}%) | "
                     f"{100 * lo:.0f}-{100 * hi:.0f}% | {steps} | {e['chunk_latency_ms']:.1f} ms | "
                     f"{e['step_ms']:.1f} ms |")
    lines += ["", f"| task | last | best-{BEST_K} (mean of the {BEST_K} best of n evaluations) | n |",
              "| --- | --- | --- | --- |"]
    for t, v in report["per_task"].items():
        lines.append(f"| {t} | {100 * v['last']:.0f}% | {100 * v['best5']:.1f}% | {v['evaluations']} |")
    lines.append(f"| mean | {100 * report['mean']['last']:.1f}% | {100 * report['mean']['best5']:.1f}% | |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Command
# ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mw_command", metavar="{demos,eval,check}", required=True)
    d = sub.add_parser("demos", help="record scripted-expert demos as rosbag2 (DP3's recipe)")
    e = sub.add_parser("eval", help="success of checkpoints on fixed seeded starts: last and best-5")
    c = sub.add_parser("check", help="expert success only (no rendering, no bags)")
    for p in (d, e, c):
        p.add_argument("--task", action="append", default=None,
                       help=f"a Meta-World v3 task (repeatable), or 'all' (50); default: {', '.join(TASKS)}")
        p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    d.add_argument("--episodes", type=int, default=DEMOS_PER_TASK, help="demos kept per task")
    d.add_argument("--seed", type=int, default=0, help="first seed (the next ones after a dropped demo)")
    d.add_argument("--max-tries", type=int, default=0, help="seeds tried per task at most (default 3 x episodes)")
    d.add_argument("--out", type=Path, default=Path("runs/metaworld/demos"))
    d.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    d.add_argument("--steps", type=int, default=MAX_STEPS, help="steps per demo (DP3: the whole 200-step episode)")
    d.add_argument("--images", choices=IMAGE_FORMATS, default="png",
                   help="frames as lossless PNG CompressedImage on /camera/<name>/image_raw/compressed (the training "
                        "config's data.topics), or raw rgb8 on /camera/<name>/image_raw (3x the bytes)")
    e.add_argument("--checkpoint", action="append", default=[], help="checkpoint folder (repeatable; the last is "
                                                                      "'last')")
    e.add_argument("--run", type=Path, default=None, help="a training run folder: all of its kept checkpoints")
    e.add_argument("--episodes", type=int, default=EVAL_EPISODES)
    e.add_argument("--seed", type=int, default=EVAL_SEED, help="first seed (seed + i for episode i)")
    e.add_argument("--exec-horizon", type=int, default=0, help="actions executed per chunk (default J)")
    e.add_argument("--full-episodes", action="store_true", help="run all 200 steps after a success too")
    e.add_argument("--max-steps", type=int, default=MAX_STEPS, help="episode length (the benchmark's: 200)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    e.add_argument("--batch", type=int, default=1,
                   help="episodes stepped in lockstep through one engine batch (a task's consecutive seeds, in "
                        "near-equal groups): what keeps a GPU shared by the workers from being the bottleneck")
    e.add_argument("--out", type=Path, default=None,
                   help="output folder (default: RUN/metaworld_eval, or the last CHECKPOINT/metaworld_eval)")
    c.add_argument("--episodes", type=int, default=10)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", type=Path, default=None, help="also write the per-episode results as JSON here")
    for p in (d, e, c):
        p.add_argument("--no-progress", action="store_true")


def _tasks(arg: list[str] | None) -> tuple[str, ...]:
    if not arg:
        return TASKS
    if arg == ["all"]:
        return _load_env_module().all_tasks()
    known = _load_env_module().all_tasks()
    bad = [t for t in arg if t not in known]
    if bad:
        raise SystemExit(f"mail-il metaworld: unknown task(s) {bad}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(arg))


def run(args: argparse.Namespace) -> int:
    global _QUIET
    _QUIET = args.no_progress
    _load_env_module()
    tasks = _tasks(args.task)
    if args.workers < 1 or args.episodes < 1 or getattr(args, "batch", 1) < 1:
        raise SystemExit("mail-il metaworld: --workers, --episodes and --batch must be >= 1")
    if args.mw_command == "check":
        results = list(_pool_map(_check_job, [(t, args.seed + i) for t in tasks for i in range(args.episodes)],
                                 args.workers, "expert check"))
        print(f"{'task':<28}{'success':>9}  failed seeds")
        for t in tasks:
            rs = [r for r in results if r["task"] == t]
            print(f"{t:<28}{sum(r['success'] for r in rs):>5}/{len(rs):<3}  "
                  f"{sorted(r['seed'] for r in rs if not r['success'])}")
        print(f"all: {sum(r['success'] for r in results)}/{len(results)}")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            per_task = {t: sum(r["success"] for r in results if r["task"] == t) for t in tasks}
            report = dict(benchmark=BENCHMARK, what="scripted expert success", tasks=list(tasks),
                          episodes=args.episodes, seeds=[args.seed, args.seed + args.episodes - 1], max_steps=MAX_STEPS,
                          success=per_task, episodes_run=results)
            from ..data.bags import json_default

            args.out.write_text(json.dumps(report, indent=1, default=json_default))
            print(f"wrote {args.out}")
        return 0
    if args.mw_command == "demos":
        try:
            s = record_demos(tasks, args.episodes, args.seed, args.out, args.workers, args.storage, args.max_tries,
                             args.steps, args.images)
        except ValueError as err:
            raise SystemExit(f"mail-il metaworld demos: {err}") from None
        print(f"{'task':<18}{'kept':>5}{'tried':>7}{'MB/demo':>9}  dropped seeds")
        for t, v in s["tasks"].items():
            print(f"{t:<18}{v['kept']:>5}{v['tried']:>7}{v['mean_bag_mb']:>9.1f}  {v['dropped_seeds']}")
        print(f"{len(s['episodes'])} demos in {s['wall_seconds']:.0f} s ({s['seconds_per_demo']:.1f} s each) with "
              f"{args.workers} worker(s); wrote {args.out}/summary.json")
        return 0
    return _run_eval(args, tasks)


def _run_eval(args: argparse.Namespace, tasks) -> int:
    from ..checkpoint_limits import CheckpointError

    if bool(args.checkpoint) == (args.run is not None):
        raise SystemExit("mail-il metaworld eval: give --checkpoint (repeatable) or --run, one of them")
    try:
        checkpoints = [str(c) for c in args.checkpoint] or [str(c) for c in run_checkpoints(args.run)]
        report = evaluate(checkpoints, tasks, args.episodes, args.seed, args.workers, args.exec_horizon,
                          args.full_episodes, args.device, args.threads, args.max_steps, args.batch)
    except (CheckpointError, ValueError) as err:
        print(f"mail-il metaworld eval: {err}", file=sys.stderr)
        return 2
    out = args.out or (args.run if args.run is not None else Path(checkpoints[-1])) / "metaworld_eval"
    from ..data.bags import json_default

    out.mkdir(parents=True, exist_ok=True)
    (out / "metaworld_eval.json").write_text(json.dumps(report, indent=1, default=json_default))
    table = markdown(report)
    (out / "metaworld_eval.md").write_text(table)
    print(table)
    print(f"{sum(e['episodes'] for e in report['evaluations'])} episodes in {report['wall_seconds']:.0f} s "
          f"({report['steps_per_second']:.0f} steps/s, {args.workers} worker(s), batch {report['batch']}); wrote "
          f"{out}/metaworld_eval.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mail-il metaworld", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
