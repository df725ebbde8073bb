#!/usr/bin/env python3
"""Issue 22's second table on the GPU machine: MaIL's backbones against Diffusion Policy on Meta-World v3, one
run (one backbone, one training seed) per call, one results JSON (and a markdown table beside it).

    source scripts/gpu/metaworld_env.sh          # the call carries .mwwheels (what it holds: below)
    python3 scripts/gpu/metaworld_suite.py --seed 0 --only dma --out $OUT/metaworld_s0_dma.json [--budget 540]

One run per call (`--only dma`, `edma`, `dtr`, `dpunet`), four calls per seed (0, 1, 2): a run trains 2000 steps
alone in 144-199 s and its evaluations take 206-223 s, a call 370-460 s; two runs side by side would get ~700
steps each in a call. The results of a run are under runs/gpu_suite/metaworld_s<seed>/ there; what comes back is
the JSON: its training, every checkpoint's per-task successes, "last" and best-5. The calls' JSONs make the table
(a seed comes in several files, each with some of its runs): `python scripts/gpu/metaworld_table.py
docs/results/metaworld_s*.json --out docs/results/metaworld_table`.

A call (every stage a `mail-il` or `mail-il metaworld` command in its own process; a stage that fails or runs
out of time is recorded and the others go on):
1. Demos: DP3's 10 scripted-expert demos per task of the 7 tasks (`mail-il metaworld demos`, seeds from 0, 14
   workers), raw rgb8 frames (PNG needs OpenCV, and costs time to save disk), reused by a later call on the
   same warm machine. The same demos for every seed, as DP3: the seeds vary the training. 26-28 s.
2. Training, side by side on the GPU: one multi-task policy per backbone over the 7 tasks (`RUNS`: D-Ma, ED-Ma,
   D-Tr, DP-UNet), each episode's goal token the one-hot of its task (data.tasks: the demos' /mail/episode start
   events name it ``T-v3``), all with the same DDPM head (16 steps, EMA), so that the table compares backbones
   and nothing else: DP-UNet has no BC head, and MaIL reports its backbones with either. `policy.size` small
   (metaworld_dma_ddpm_gpu.yaml otherwise: 128x128 corner2 + gripperPOV, hand position and gripper opening,
   K 5, J 5, batch 256, Adam 5e-4), `--steps` steps, a checkpoint every steps / `PLAN["checkpoints"]`. A small
   D-Ma trains at 2,240-2,730 windows/s alone on the H100 (the PyTorch scan; 715 each with four runs and four
   evaluations beside it). Training stops early where the evaluations would not fit (`eval_reserve`).
3. Evaluation (`mail-il metaworld eval --batch`, the engine on the GPU, the scenes on the CPU cores), after
   training: the last checkpoints first on the benchmark's 100 starts per task (seeds 1000-1099), the cores
   shared among them, then every earlier checkpoint on DP3's 20 episodes per task (seeds 1000-1019; DP3's
   MetaworldRunner evaluates 20). Reported per run and task: "last" (100 episodes) and DP3's best-5, the mean
   of the 5 best success rates over the run's checkpoints, each on seeds 1000-1019 (the last checkpoint's are
   the first 20 of its 100 episodes); the JSON says how many checkpoints and episodes best-5 had
   (`best5_checkpoints`, `best5_episodes`). With 5 checkpoints best-5 is their mean.

Measured on the H100 (2026-12-06). The first call ran four trainings with the earlier checkpoints' evaluations
beside them: all shared the GPU, time-sliced between processes, so a scene's step (physics and two 128x128
renders through the NVIDIA EGL) took 10 ms and a DDPM chunk of 10 rows 43 ms, ~52 steps/s per worker; the
evaluations of the last checkpoints did not finish. On the idle GPU, four workers: 3.5 ms a step, 11.7 ms a
chunk, 317 steps/s per worker (with the engine on the CPU 72 ms a step). So the stages now
run one after the other. Seed 0's four calls (H100, 2026-12-06): ~25 s demos (once per warm machine), training
2000 steps at 2,564-3,526 windows/s (ED-Ma / D-Ma / DP-UNet / D-Tr: 199 / 186 / 189 / 144 s with the
start), then 184,000-194,000 evaluation steps (7 tasks x (100 + 4 x 20) episodes x 146-154 steps, a failure
runs 200) at 960-1,100/s after a ~30 s start: 206-223 s. PLAN's estimate of the evaluations is set from those.

What travels (`bash scripts/gpu/pack_carry.sh metaworld` builds it, scripts/gpu/metaworld_env.sh installs it):
the git-ignored folder .mwwheels/ (52.6 MiB; with the tracked tree 59.2 MiB of the 64 MiB a call carries): the
cp312 manylinux wheels of metaworld 3.1.1, mujoco 3.3.0 (Meta-World's pin), gymnasium 1.4.0 (+ cloudpickle,
farama-notifications), glfw (gymnasium's MuJoCo renderer imports it), pyopengl, imageio, packaging, rosbags (+
ruamel.yaml, lz4, backports.zstd, apsw, which it imports), safetensors, pyyaml, tqdm, typing_extensions, and gl/
with the Debian packages libegl1, libglvnd0, libopengl0. Not carried: scipy (35 MB, Meta-World's rotations),
numpy, pillow, absl-py, etils, torch: the image's own (device KINDS.md lists them). No mamba-ssm: the small Mamba
runs the PyTorch scan.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    steps=2000,  # of batch 256 (the config's): ~37 epochs of the 7 tasks' ~14,000 windows (--steps)
    checkpoints=5,  # evaluated per run for best-5 (the last one included)
    size="small",
    overrides=(),  # more training overrides (the CPU check makes the policy tiny)
    early_episodes=20,  # per task and earlier checkpoint (DP3's eval_episodes)
    last_episodes=EVAL_EPISODES,  # per task, the last checkpoint (the benchmark's 100 starts)
    max_steps=0,  # episode length (0: the benchmark's 200)
    eval_batch=10,  # episodes per engine batch: the policy's share of a step is small, few scenes to build
    early_workers=2,  # worker processes of an earlier checkpoint's evaluation, at least
    train_cores=2,  # CPU cores a training run keeps busy: its loop and the thread gathering its next batch
    # Evaluations start when training has ended, never beside it: every process on the one GPU is time-sliced,
    # and with four trainings beside four evaluations a scene's step (its two renders) took 10 ms and a
    # chunk of 10 rows 43 ms, against 3.5 and 11.7 ms on the idle GPU (H100, 2026-12-06). Training stops in
    # time for all evaluations, estimated at these steps per second over all workers and steps per episode
    # (a failure runs all 200). The GPU bounds them, not the cores: 4 workers of batch 10 stepped 1,270/s
    # with the GPU 75 % busy, 16 workers ~1,000/s with it 99 % busy (its renders and the engine's chunks):
    eval_steps_per_second=950,  # 958-1,101 measured in seed 0's calls (16 workers, H100)
    steps_per_episode=160,  # 146-154 on average in seed 0's calls
    eval_setup_seconds=30,  # the evaluations' workers' start, scenes and engines
)


def eval_reserve(runs: int, checkpoints: int) -> float:
    """Seconds the evaluations of ``runs`` runs with ``checkpoints`` checkpoints each are expected to take."""
    p = PLAN
    episodes = runs * len(p["tasks"]) * (p["last_episodes"] + (checkpoints - 1) * p["early_episodes"])
    return p["eval_setup_seconds"] + episodes * p["steps_per_episode"] / p["eval_steps_per_second"]


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


def rates(report: dict, episodes: int | None = None) -> dict[str, dict]:
    """task -> successes / episodes of an evaluation's report (metaworld_eval.json), over its first ``episodes``
    seeds (all: None)."""
    out = {}
    for e in report["evaluations"]:
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
    ap.add_argument("--steps", type=int, default=PLAN["steps"], help="training steps of every run")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="CPU cores the stages share")
    args = ap.parse_args()
    names = [n for n in RUNS if not args.only or n in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - set(RUNS)
    if unknown or not names:
        raise SystemExit(f"--only: unknown run(s) {sorted(unknown)}; known: {sorted(RUNS)}")
    PLAN["steps"] = args.steps
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

    # 2. training side by side, alone on the GPU, until done or until the evaluations need the rest of the time
    reserve = eval_reserve(len(names), p["checkpoints"])
    results["eval_reserve"] = dict(seconds=round(reserve), basis="PLAN: eval_steps_per_second, steps_per_episode")
    for n in names:
        results["runs"][n] = dict(backbone=RUNS[n])
        for old in (work / n, *(work / "eval").glob(f"eval_{n}_*")):  # an earlier call's, on a warm machine
            shutil.rmtree(old, ignore_errors=True)
        stages.start(f"train_{n}", train_command(n, args.seed, work, args.device), work / "logs" / f"train_{n}.log",
                     p["train_cores"])
    while stages.running and time.time() < deadline - reserve:
        stages.poll()
        time.sleep(1.0)
    for n in names:
        if f"train_{n}" in stages.running:
            stages.stop(f"train_{n}", "stopped for the evaluations' time")
            results["runs"][n]["stopped_at_s"] = round(time.time() - t_start)
    stages.poll()
    print(f"[mw] training done after {time.time() - t_start:.0f} s", flush=True)
    save()

    # 3. evaluations, the last checkpoints first (all cores shared among them), then the earlier ones (14 groups
    # of 10 episodes each, the cores shared among them too)
    queue: list[tuple] = []  # (name, argv, log, workers)
    evals: dict[str, list] = {n: [] for n in names}  # (step, checkpoint, key, episodes, last)

    def queue_eval(n: str, step: int, folder: Path, last: bool, workers: int) -> None:
        episodes = p["last_episodes"] if last else p["early_episodes"]
        key = f"eval_{n}_{'last' if last else 'step'}_{step}"
        evals[n].append((step, folder, key, episodes, last))
        queue.append((key, eval_command(folder, episodes, workers, work / "eval" / key, args.device),
                      work / "logs" / f"{key}.log", workers))

    found = {n: step_checkpoints(work / n) for n in names}
    last_step = {}
    for n in names:  # its final checkpoint, or a stopped run's newest
        final = work / n / "final"
        last = (p["steps"], final) if (final / "model.safetensors").is_file() else (found[n] or [None])[-1]
        if last is not None:
            last_step[n] = last[0]
            queue_eval(n, *last, True, max(1, args.cores // len(names)))
    early_workers = max(p["early_workers"], args.cores // (len(names) * max(1, p["checkpoints"] - 1)))
    for n in last_step:
        for step, folder in found[n]:
            if step < last_step[n]:
                queue_eval(n, step, folder, False, early_workers)
    t_eval = time.time()
    while (stages.running or queue) and time.time() < deadline:
        stages.poll()
        while queue and stages.free() >= min(queue[0][3], stages.cores):
            key, argv, log, workers = queue.pop(0)
            stages.start(key, argv, log, workers)
        time.sleep(0.5)
    for name in list(stages.running):
        stages.stop(name, "killed at the deadline")
    for key, *_ in queue:
        stages.done[key] = dict(rc="not started (deadline)")
    eval_seconds = time.time() - t_eval

    # 4. what each run reached
    steps_run = 0  # scene steps of every evaluation, for their rate
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
                steps_run += sum(d["steps"] for e in r["evaluations"] for d in e["episodes_detail"])
                res["eval"].update(wall_seconds=r["wall_seconds"], steps_per_second=r["steps_per_second"],
                                   batch=r["batch"], workers=r["workers"])
                res["tasks"] = rates(r)
                res["early"] = rates(r, p["early_episodes"])  # best-5's share: the first seeds
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
    results["evaluation"] = dict(seconds=round(eval_seconds), steps=steps_run,
                                 steps_per_second=round(steps_run / max(eval_seconds, 1e-9)))
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
