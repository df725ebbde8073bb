#!/usr/bin/env python3
"""Issue 22's second table on the GPU machine: MaIL's backbones against Diffusion Policy on Meta-World v3, one
training seed per call, one results JSON (and a markdown table beside it).

    source scripts/gpu/metaworld_env.sh          # the call carries .mwwheels (what it holds: below)
    python3 scripts/gpu/metaworld_suite.py --seed 0 --out $OUT/metaworld_s0.json [--budget 540] [--only dma,dtr]

One call per seed (0, 1, 2). The results of a run are under runs/gpu_suite/metaworld_s<seed>/ there; what comes
back is the JSON: per run its training, every checkpoint's per-task successes, "last" and best-5. The three seeds'
JSONs make the table: `python scripts/gpu/metaworld_table.py docs/results/metaworld_s*.json --out
docs/results/metaworld_table`.

A call (every stage a `mail-il` or `mail-il metaworld` command in its own process; a stage that fails or runs
out of time is recorded and the others go on):
1. Demos: DP3's 10 scripted-expert demos per task of the 7 tasks (`mail-il metaworld demos`, seeds from 0, 14
   workers), raw rgb8 frames (PNG needs OpenCV, and costs time to save disk), reused by a later call on the
   same warm machine. The same demos for every seed, as DP3: the seeds vary the training.
2. Training, side by side on the GPU: one multi-task policy per backbone over the 7 tasks (`RUNS`: D-Ma, ED-Ma,
   D-Tr, DP-UNet), each episode's goal token the one-hot of its task (data.tasks: the demos' /mail/episode start
   events name it ``T-v3``), all with the same DDPM head (16 steps, EMA), so that the table compares backbones
   and nothing else: DP-UNet has no BC head, and MaIL reports its backbones with either. `policy.size` small
   (metaworld_dma_ddpm_gpu.yaml otherwise: 128x128 corner2 + gripperPOV, hand position and gripper opening,
   K 5, J 5, batch 256, Adam 5e-4), `PLAN["steps"]` steps, a checkpoint every steps / `PLAN["checkpoints"]`.
3. Evaluation (`mail-il metaworld eval --batch`, the engine on the GPU, the scenes on the CPU cores), started
   as the checkpoints appear: every checkpoint before the last on DP3's 20 episodes per task (seeds
   1000-1019; DP3's MetaworldRunner evaluates 20), while the other runs still train; the last checkpoint on
   the benchmark's 100 starts per task (seeds 1000-1099). Reported per run and task: "last" (100 episodes)
   and DP3's best-5, the mean of the 5 best success rates over the run's checkpoints, each on seeds
   1000-1019 (the last checkpoint's are the first 20 of its 100 episodes); the JSON says how many checkpoints
   and episodes best-5 had (`best5_checkpoints`, `best5_episodes`). With 5 checkpoints best-5 is their mean.

Time of a call, estimated from the 2-core CPU here (not yet measured on the GPU machine) and scaled to its 16
cores, Python 3.12 and one H100 or H200:
- a control step of a scene: physics 0.68 ms, both 128x128 cameras rendered 7.8 ms here (EGL on llvmpipe,
  software); there the NVIDIA EGL renders on the GPU, leaving the core the draw calls and the read-back:
  assumed ~2 ms, so ~2.7 ms a step with Python's share. Building a scene with its renderer: 0.35 s here
  (0.1 s the env, 0.25 s the renderer), hence metaworld.evaluate's runs of groups on the same scenes.
- demos: 70 kept of ~78 tried (the experts fail 12 % of disassemble's and peg-insert-side's starts), 200
  steps, 2.6 s a demo here with raw frames: 78 x 2.6 s / 14 workers = ~15 s, ~30 s with the pool's start.
- training: the small policies trained at 63-69 windows/s on the 2 CPU threads here (D-Ma, ED-Ma, D-Tr,
  DP-UNet alike: the encoder is 1.4 M of their 1.5-1.6 M parameters), and one core gathers 17,500 windows/s
  (K 5, 128x128, batch 256: not the limit). On the GPU, assumed 1,300-2,000 windows/s per run with four side
  by side: four paper-size runs shared ~1,300/s on the H100, and the small encoder has a sixteenth of the
  paper's convolution work and a quarter of its activations. `PLAN["steps"]` 1,500 x 256 = 384,000 windows
  (27 epochs of the ~14,000): 190-300 s. Training stops early when the last evaluation needs the time: its
  length is estimated from the earlier checkpoints' evaluations (JSON: last_eval_estimate).
- evaluation: here one worker stepped 42 steps/s with the episodes one at a time and 67 steps/s with --batch
  8 (small DDPM D-Ma, engine on the CPU: the policy's 13.8 ms a step alone against 4.0 ms a row in a batch of
  8, the scene's ~10.9 ms a row). There, the engine on the GPU at ~0.3 ms a row in batches of 10 and the scenes
  at ~2.7 ms: ~340 steps/s a worker, ~5,000 on 14-16 workers. An episode ends at its first success, so
  failures cost the most: at ~40 % success ~150 steps an episode. The last checkpoints: 4 runs x 7 tasks x
  100 episodes x ~150 steps = 420,000 steps, ~100 s with the workers' start; the earlier ones (4 x 4 x 7 x 20
  episodes, 336,000 steps) mostly on the ~8 cores the training leaves, while it trains.
- in all: ~20 s setup (metaworld_env.sh) + ~30 s demos + 190-300 s training + ~100 s last evaluation =
  340-450 s of the 540 s budget. Were the rendering there as slow as llvmpipe's here, the last evaluation
  would take ~300 s and the training would stop at ~160 s; `--only` then splits a seed's four runs over
  two calls.

What travels (scripts/gpu/metaworld_env.sh installs it): the git-ignored folder .mwwheels/ (52.6 MiB; with the
tracked tree 59.2 MiB of the 64 MiB a call carries): the cp312 manylinux wheels of metaworld 3.1.1, mujoco
3.3.0 (Meta-World's pin), gymnasium 1.4.0 (+ cloudpickle, farama-notifications), glfw (gymnasium's MuJoCo
renderer imports it), pyopengl, imageio, packaging, rosbags (+ ruamel.yaml, lz4, backports.zstd, apsw, which
it imports), safetensors, pyyaml, tqdm, typing_extensions, and gl/ with the Debian packages libegl1,
libglvnd0, libopengl0. Not carried: scipy (35 MB, Meta-World's rotations), numpy, pillow, absl-py, etils,
torch: the image's own (device KINDS.md lists them). No mamba-ssm: the small Mamba runs the PyTorch scan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "mail_policy_node"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_suite, beside it

from mail_policy_node.benchmarks.metaworld import (BEST_K, EVAL_EPISODES, EVAL_SEED, MAX_STEPS, TASKS,  # noqa: E402
                                                   best_k, env_name, step_checkpoints)
from mail_policy_node.training.evaluate import wilson_interval  # noqa: E402
from train_suite import cli, machine, write_json  # noqa: E402  (what both GPU plans share)

CONFIG = ROOT / "mail_bringup" / "config" / "train" / "metaworld_dma_ddpm_gpu.yaml"
DEMOS = ROOT / "runs" / "gpu_mw_demos"
RUNS = {"dma": "D-Ma", "edma": "ED-Ma", "dtr": "D-Tr", "dpunet": "DP-UNet"}  # --only names -> policy.backbone

PLAN = dict(
    tasks=TASKS,
    demos_per_task=10,  # DP3's
    steps=1500,  # of batch 256 (the config's): ~27 epochs of the 7 tasks' ~14,000 windows
    checkpoints=5,  # evaluated per run for best-5 (the last one included)
    size="small",
    overrides=(),  # more training overrides (the CPU check makes the policy tiny)
    early_episodes=20,  # per task and earlier checkpoint (DP3's eval_episodes)
    last_episodes=EVAL_EPISODES,  # per task, the last checkpoint (the benchmark's 100 starts)
    max_steps=0,  # episode length (0: the benchmark's 200)
    eval_batch=10,  # episodes per engine batch: the policy's share of a step is small, few scenes to build
    early_workers=2,  # worker processes of an earlier checkpoint's evaluation (while training)
    last_workers=4,  # of a last checkpoint's (four of them side by side after training)
    train_cores=2,  # CPU cores a training run keeps busy: its loop and the thread gathering its next batch
    last_eval_reserve=150,  # [s] training stops at least this long before the deadline (longer when the earlier
    #                         checkpoints' evaluations say the last ones need it)
)


def train_command(name: str, seed: int, work: Path, device: str) -> list[str]:
    p = PLAN
    every = max(1, p["steps"] // p["checkpoints"])
    return cli("train", str(CONFIG), f"data.bags=[{','.join(str(DEMOS / t) for t in p['tasks'])}]",
               f"data.tasks=[{','.join(env_name(t) for t in p['tasks'])}]", "data.topics={}",  # raw rgb8 demos
               f"data.cache_dir={work / 'cache'}", f"policy.size={p['size']}", f"policy.backbone={RUNS[name]}",
               f"train.seed={seed}", f"train.steps={p['steps']}", f"train.ckpt_every={every}",
               "train.keep_checkpoints=1000",  # every checkpoint stays until its evaluation has run
               f"train.val_every={every}",  # no validation split (DP3 trains on all 10): log.jsonl's progress
               f"train.device={device}", *p["overrides"], f"out={work / name}",
               "--no-progress")


def eval_command(checkpoint: Path, episodes: int, workers: int, out: Path, device: str) -> list[str]:
    p = PLAN
    return cli("metaworld", "eval", "--checkpoint", str(checkpoint), *[a for t in p["tasks"] for a in ("--task", t)],
               "--episodes", str(episodes), "--seed", str(EVAL_SEED), "--batch", str(p["eval_batch"]),
               "--workers", str(workers), "--device", device, "--max-steps", str(p["max_steps"] or MAX_STEPS),
               "--no-progress", "--out", str(out))


class Stages:
    """Commands side by side, each holding some of the machine's CPU cores: the caller starts one when its
    cores are free (an evaluation's scenes are CPU work; the GPU is shared) and stops them at its deadline."""

    def __init__(self, cores: int):
        self.cores = cores
        self.running: dict[str, tuple] = {}
        self.done: dict[str, dict] = {}

    def free(self) -> int:
        return self.cores - sum(r[3] for r in self.running.values())

    def start(self, name: str, argv: list[str], log: Path, cores: int) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)
        self.running[name] = (proc, time.time(), log, cores)
        print(f"[mw] {time.strftime('%H:%M:%S')} start {name} ({cores} cores)", flush=True)

    def poll(self) -> list[str]:
        """Names of the commands that ended since the last poll."""
        ended = []
        for name, (proc, t0, log, _) in list(self.running.items()):
            if proc.poll() is not None:
                self.done[name] = dict(rc=proc.returncode, seconds=round(time.time() - t0, 1), log=str(log))
                if proc.returncode:
                    print(f"[mw] {name} failed ({proc.returncode}):\n" + log.read_text()[-1500:], flush=True)
                del self.running[name]
                ended.append(name)
        return ended

    def stop(self, name: str, why: str) -> None:
        proc, t0, log, _ = self.running.pop(name)
        proc.kill()
        proc.wait()
        self.done[name] = dict(rc=why, seconds=round(time.time() - t0, 1), log=str(log))
        print(f"[mw] {name}: {why}", flush=True)


def rates(report: Path, episodes: int | None = None) -> dict[str, dict]:
    """task -> successes / episodes of an evaluation's report, over its first ``episodes`` seeds (all: None)."""
    out = {}
    for e in json.loads(report.read_text())["evaluations"]:
        eps = [d for d in e["episodes_detail"] if episodes is None or d["seed"] < EVAL_SEED + episodes]
        ok = sum(d["success"] for d in eps)
        out[e["task"]] = dict(successes=ok, episodes=len(eps), rate=ok / max(len(eps), 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="training seed (train.seed) of this call's runs")
    ap.add_argument("--out", type=Path, required=True, help="results JSON (a .md table is written beside it)")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole call")
    ap.add_argument("--device", default="cuda", help="training and the engine in the evaluations")
    ap.add_argument("--only", default="", help=f"comma-separated runs of {sorted(RUNS)} (default: all)")
    ap.add_argument("--demo-workers", type=int, default=14)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="CPU cores the stages share")
    args = ap.parse_args()
    names = [n for n in RUNS if not args.only or n in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - set(RUNS)
    if unknown or not names:
        raise SystemExit(f"--only: unknown run(s) {sorted(unknown)}; known: {sorted(RUNS)}")
    p = PLAN
    t_start = time.time()
    deadline = t_start + args.budget
    work = ROOT / "runs" / "gpu_suite" / f"metaworld_s{args.seed}"
    results: dict = dict(benchmark="metaworld-v3", seed=args.seed, device=args.device, budget=args.budget,
                         started=time.strftime("%Y-%m-%dT%H:%M:%S"), plan={k: v for k, v in p.items()},
                         demos={}, runs={})

    def save():
        write_json(args.out, results)

    results.update(machine())

    stages = Stages(args.cores)
    # 1. demos (reused when every task has them)
    have = {t: len(list((DEMOS / t).glob("ep*"))) if (DEMOS / t).is_dir() else 0 for t in p["tasks"]}
    missing = [t for t in p["tasks"] if have[t] < p["demos_per_task"]]
    if missing:
        stages.start("demos", cli("metaworld", "demos", *[a for t in missing for a in ("--task", t)], "--episodes",
                                  str(p["demos_per_task"]), "--seed", "0", "--workers", str(args.demo_workers),
                                  "--images", "raw", "--out", str(DEMOS), "--no-progress"),
                     work / "logs" / "demos.log", args.cores)
        while stages.running and time.time() < deadline:
            stages.poll()
            time.sleep(0.5)
        if stages.running:
            stages.stop("demos", "killed at the deadline")
        results["demos"] = stages.done["demos"]
        summary = DEMOS / "summary.json"
        if summary.is_file():
            s = json.loads(summary.read_text())
            results["demos"].update(tasks=s["tasks"], seconds_per_demo=s["seconds_per_demo"])
    else:
        results["demos"] = dict(rc=0, reused=have)
    print(f"[mw] demos: {results['demos'].get('rc')} after {time.time() - t_start:.0f} s", flush=True)
    save()

    # 2 + 3. training side by side; each checkpoint evaluated as it appears, the last ones first
    # training stops in time for the last checkpoints' evaluation: its length estimated from the earlier
    # checkpoints' evaluations (steps per worker-second, steps per episode: both known only there), at least
    # PLAN["last_eval_reserve"]
    speed = dict(steps=0, episodes=0, worker_seconds=0.0)
    results["last_eval_estimate"] = dict(seconds=p["last_eval_reserve"], basis="PLAN['last_eval_reserve']")
    queue: list[tuple] = []  # (priority, name, argv, log, cores): 0 = a last checkpoint, 1 = an earlier one
    seen: dict[str, set] = {n: set() for n in names}
    evals: dict[str, list] = {n: [] for n in names}  # (step, checkpoint, key, episodes, last)
    for n in names:
        results["runs"][n] = dict(backbone=RUNS[n])
        stages.start(f"train_{n}", train_command(n, args.seed, work, args.device), work / "logs" / f"train_{n}.log",
                     p["train_cores"])

    def queue_eval(n: str, step: int, checkpoint: Path, last: bool) -> None:
        episodes = p["last_episodes"] if last else p["early_episodes"]
        workers = p["last_workers"] if last else p["early_workers"]
        key = f"eval_{n}_{'last' if last else 'step'}_{step}"
        evals[n].append((step, checkpoint, key, episodes, last))
        queue.append((0 if last else 1, key, eval_command(checkpoint, episodes, workers, work / "eval" / key,
                                                          args.device), work / "logs" / f"{key}.log", workers))

    while (stages.running or queue) and time.time() < deadline:
        for name in stages.poll():
            report = work / "eval" / name / "metaworld_eval.json"
            if name.startswith("eval_") and report.is_file():
                r = json.loads(report.read_text())
                speed["steps"] += sum(d["steps"] for e in r["evaluations"] for d in e["episodes_detail"])
                speed["episodes"] += sum(e["episodes"] for e in r["evaluations"])
                speed["worker_seconds"] += r["wall_seconds"] * r["workers"]
                training = sum(f"train_{n}" in stages.running for n in names)
                per_worker, per_episode = speed["steps"] / speed["worker_seconds"], speed["steps"] / speed["episodes"]
                cores = min(args.cores, len(names) * p["last_workers"])
                estimate = 30 + training * len(p["tasks"]) * p["last_episodes"] * per_episode / (per_worker * cores)
                results["last_eval_estimate"] = dict(
                    seconds=round(max(p["last_eval_reserve"], 1.2 * estimate)), estimate=round(estimate),
                    steps_per_worker_second=round(per_worker, 1), steps_per_episode=round(per_episode, 1),
                    basis=f"{speed['episodes']} episodes of the earlier checkpoints")
            if name.startswith("train_"):
                n = name[len("train_"):]
                final = work / n / "final"
                if (final / "model.safetensors").is_file():
                    queue_eval(n, p["steps"], final, last=True)
        for n in names:
            train_running = f"train_{n}" in stages.running
            if train_running and time.time() >= deadline - results["last_eval_estimate"]["seconds"]:
                stages.stop(f"train_{n}", "stopped for the last evaluation's time")
                results["runs"][n]["stopped_at_s"] = round(time.time() - t_start)
                newest = step_checkpoints(work / n)
                if newest:  # its newest checkpoint is then its last
                    seen[n].add(newest[-1][0])
                    evals[n] = [e for e in evals[n] if e[0] != newest[-1][0]]
                    queue[:] = [q for q in queue if q[1] != f"eval_{n}_step_{newest[-1][0]}"]
                    queue_eval(n, newest[-1][0], newest[-1][1], last=True)
                continue
            for step, folder in step_checkpoints(work / n):
                if step not in seen[n] and step < p["steps"]:  # the final step is the last checkpoint
                    seen[n].add(step)
                    queue_eval(n, step, folder, last=False)
        queue.sort(key=lambda q: q[0])
        while queue and stages.free() >= min(queue[0][4], stages.cores):
            _, key, argv, log, workers = queue.pop(0)
            stages.start(key, argv, log, workers)
        time.sleep(1.0)
    for name in list(stages.running):
        stages.stop(name, "killed at the deadline")
    for _, key, *_ in queue:
        stages.done[key] = dict(rc="not started (deadline)")

    # 4. what each run reached
    for n in names:
        entry = results["runs"][n]
        entry["train"] = stages.done.get(f"train_{n}", {})
        summary = work / n / "summary.json"
        if summary.is_file():
            s = json.loads(summary.read_text())
            entry["train"].update({k: s.get(k) for k in ("steps", "epochs", "batch", "train_seconds",
                                                        "samples_per_second", "final_train_loss", "parameters",
                                                        "device", "amp_bf16", "mamba_kernels")})
            entry["train"]["dataset"] = {k: s["dataset"].get(k) for k in ("episodes", "train_windows", "tasks")}
        elif (work / n / "log.jsonl").is_file() and (work / n / "config.yaml").is_file():  # stopped: its progress
            import yaml

            logged = [json.loads(line) for line in (work / n / "log.jsonl").read_text().splitlines() if line]
            batch = yaml.safe_load((work / n / "config.yaml").read_text())["train"]["batch_size"]
            if logged:
                entry["train"].update(steps=logged[-1]["step"], train_seconds=logged[-1]["elapsed_s"],
                                      samples_per_second=logged[-1]["step"] * batch / logged[-1]["elapsed_s"],
                                      final_train_loss=logged[-1]["loss"])
        checkpoints = []
        for step, folder, key, _, last in sorted(evals[n], key=lambda e: e[0]):
            report = work / "eval" / key / "metaworld_eval.json"
            res = dict(step=step, checkpoint=str(folder), last=last, eval=stages.done.get(key, {}))
            if report.is_file():
                r = json.loads(report.read_text())
                res["eval"].update(wall_seconds=r["wall_seconds"], steps_per_second=r["steps_per_second"],
                                   batch=r["batch"], workers=r["workers"])
                res["tasks"] = rates(report)
                res["early"] = rates(report, p["early_episodes"])  # best-5's share: the first seeds
            checkpoints.append(res)
        entry["checkpoints"] = checkpoints
        last = next((c for c in checkpoints if c["last"] and "tasks" in c), None)
        scored = [c for c in checkpoints if "early" in c]
        entry["last"] = None if last is None else dict(
            step=last["step"], per_task={t: v["rate"] for t, v in last["tasks"].items()},
            successes={t: v["successes"] for t, v in last["tasks"].items()},
            wilson95={t: wilson_interval(v["successes"], v["episodes"]) for t, v in last["tasks"].items()},
            episodes=p["last_episodes"], mean=sum(v["rate"] for v in last["tasks"].values()) / len(last["tasks"]))
        entry["best5"] = None if not scored else dict(
            per_task={t: best_k([c["early"][t]["rate"] for c in scored if t in c["early"]]) for t in p["tasks"]},
            best5_checkpoints=len(scored), best5_episodes=p["early_episodes"], k=BEST_K)
        if entry["best5"]:
            entry["best5"]["mean"] = sum(entry["best5"]["per_task"].values()) / len(p["tasks"])
    results["seconds"] = round(time.time() - t_start, 1)
    save()

    def pct(v):
        return "-" if v is None else f"{100 * v:.0f}"

    lines = [f"Meta-World v3, seed {args.seed}: success % over the last checkpoint's {p['last_episodes']} starts / "
             f"best-{BEST_K} of each run's checkpoints on {p['early_episodes']} starts", "",
             "| task | " + " | ".join(f"{RUNS[n]} last | best-{BEST_K}" for n in names) + " |",
             "| --- |" + " --- | --- |" * len(names)]
    for t in [*p["tasks"], "mean"]:
        cells = []
        for n in names:
            e = results["runs"][n]
            last = e["last"] and (e["last"]["mean"] if t == "mean" else e["last"]["per_task"].get(t))
            b5 = e["best5"] and (e["best5"]["mean"] if t == "mean" else e["best5"]["per_task"].get(t))
            cells.append(f"{pct(last)} | {pct(b5)}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "| run | train s | windows/s | loss | steps | checkpoints for best-5 |", "|" + " --- |" * 6]
    for n in names:
        e = results["runs"][n]
        tr = e.get("train", {})
        lines.append(f"| {RUNS[n]} | {tr.get('train_seconds') or 0:.0f} | {tr.get('samples_per_second') or 0:.0f} | "
                     f"{tr.get('final_train_loss') or float('nan'):.4f} | {tr.get('steps')} ({tr.get('rc')}) | "
                     f"{(e['best5'] or {}).get('best5_checkpoints', 0)} |")
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
