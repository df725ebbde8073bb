#!/usr/bin/env python3
"""Issue 22's second table from the Meta-World calls' results (metaworld_suite.py, one JSON per call):
per task and backbone, the last checkpoint's success over the seeds with 95 % intervals, DP3's best-5, and
DP3's published image Diffusion Policy beside them as a reference.

    python scripts/gpu/metaworld_table.py docs/results/metaworld_s*.json --out docs/results/metaworld_table

"last": each seed's last checkpoint on the benchmark's 100 starts per task; pooled over the seeds with a Wilson
interval, and the t interval of the per-seed rates (suite_table.summarize, as the suite's table). best-5: DP3's
metric, the mean of each run's 5 best checkpoint evaluations (20 starts each), then averaged over the seeds;
optimistic by construction, so it is reported beside "last", never instead of it. Between backbones: the difference
of their seed means over the tasks, with Welch's t interval (suite_table.difference). A run whose last evaluation
did not finish is listed as missing, not scored; so is a best-5 from fewer checkpoints' evaluations than it takes
(its earlier evaluations ran out of time): the mean of fewer would be another metric. The reference column is DP3's
(Ze et al., RSS 2024, arXiv 2403.03954, Table: image Diffusion Policy, Meta-World v2, 10 demos, 3 seeds, best-5):
another version of the benchmark under the optimistic metric, so a reference, not a baseline. Writes OUT.json and
OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite_table import across_tasks, differences, summarize, write_table

DP3_IMAGE_DP_V2 = {"assembly": 0.15, "disassemble": 0.43, "stick-push": 0.63, "hammer": 0.15, "peg-insert-side": 0.34,
                   "push": 0.30, "pick-place": 0.00}  # percent / 100, as the issue quotes DP3's table
BACKBONES = ("D-Ma", "ED-Ma", "D-Tr", "DP-UNet")  # the table's column order (metaworld_suite.RUNS'), then others


def collect(files: list[Path]) -> tuple[dict, dict, list[str], list[str]]:
    """(backbone, task) -> {seed: (successes, episodes)} of the last checkpoints, (backbone, task) -> {seed:
    best-5 rate}, the tasks in order, and why runs were left out. A seed given twice: the last file wins."""
    last: dict = {}
    best5: dict = {}
    tasks: list[str] = []
    left_out = []
    for f in files:
        data = json.loads(f.read_text())
        seed = int(data["seed"])
        for name, run in data.get("runs", {}).items():
            backbone = run.get("backbone", name)
            scored = run.get("last")
            if not scored:
                left_out.append(f"{backbone} seed {seed} ({f.name}): no finished last evaluation")
                continue
            for task, ok in scored["successes"].items():
                if task not in tasks:
                    tasks.append(task)
                last.setdefault((backbone, task), {})[seed] = (int(ok), int(scored["episodes"]))
            b5 = run["best5"]  # present wherever a last checkpoint was scored (metaworld_suite: it is one of them)
            if b5["best5_checkpoints"] < b5["k"]:  # fewer evaluations than best-5 takes
                left_out.append(f"{backbone} seed {seed} ({f.name}): best-5 from {b5['best5_checkpoints']} of "
                                f"{b5['k']} checkpoints, not scored")
                continue
            for task, rate in b5["per_task"].items():
                best5.setdefault((backbone, task), {})[seed] = float(rate)
    return last, best5, tasks, left_out


def table(last: dict, best5: dict, tasks: list[str]) -> list[dict]:
    found = set(b for b, _ in last)
    backbones = [b for b in BACKBONES if b in found] + sorted(found - set(BACKBONES))
    rows = []
    for backbone in backbones:
        for task in tasks:
            if (backbone, task) not in last:
                continue
            b5 = best5.get((backbone, task), {})
            rows.append(dict(backbone=backbone, task=task, **summarize(last[(backbone, task)]),
                             best5=sum(b5.values()) / len(b5) if b5 else None, best5_seeds=sorted(b5),
                             dp3_image_dp_v2=DP3_IMAGE_DP_V2.get(task)))
        per_task = [r for r in rows if r["backbone"] == backbone]
        merged = across_tasks(per_task)
        if merged and len(per_task) == len(tasks):  # the mean over the tasks, per seed that has every task
            b5 = [r["best5"] for r in per_task if r["best5"] is not None]
            rows.append(dict(backbone=backbone, task="mean", **summarize(merged),
                             best5=sum(b5) / len(b5) if len(b5) == len(per_task) else None,
                             best5_seeds=sorted(set.intersection(*(set(r["best5_seeds"]) for r in per_task))),
                             dp3_image_dp_v2=sum(DP3_IMAGE_DP_V2.get(t, 0) for t in tasks) / len(tasks)
                             if all(t in DP3_IMAGE_DP_V2 for t in tasks) else None))
    return rows


def markdown(rows: list[dict], tasks: list[str]) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}"

    def seeds(r):  # one seed: its count; several: each seed's rate, so their spread shows beside the pooled interval
        if len(r["seeds"]) == 1:
            return "1 seed"
        return "seeds " + " / ".join(pct(ok / n) for ok, n in r["per_seed"].values())

    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    head = "| task | " + " | ".join(f"{b}: last (95 % Wilson) | {b}: best-5" for b in backbones)
    lines = [head + " | DP3's image DP (v2, best-5) |", "|" + " --- |" * (2 + 2 * len(backbones))]
    cell = {(r["backbone"], r["task"]): r for r in rows}
    for task in [*tasks, "mean"]:
        out = []
        for b in backbones:
            r = cell.get((b, task))
            out += ["-", "-"] if r is None else [
                f"{pct(r['pooled_rate'])} % ({pct(r['pooled_wilson95'][0])}-{pct(r['pooled_wilson95'][1])}), "
                f"{seeds(r)}", "-" if r["best5"] is None else f"{pct(r['best5'])} %"]
        ref = DP3_IMAGE_DP_V2.get(task) if task != "mean" else next(
            (r["dp3_image_dp_v2"] for r in rows if r["task"] == "mean"), None)
        lines.append(f"| {task} | " + " | ".join(out) + f" | {pct(ref)} % |")
    lines += ["", "last: pooled over the seeds' episodes (Wilson), then each seed's own rate in seed order; the t "
              "intervals of the per-seed rates are in the JSON (seed_t95)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="metaworld_suite.py result JSONs, one per call")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    last, best5, tasks, left_out = collect(args.results)
    if not last:
        print("metaworld_table: no finished run in " + ", ".join(map(str, args.results)), file=sys.stderr)
        return 2
    rows = table(last, best5, tasks)
    diffs = differences([r for r in rows if r["task"] == "mean"])
    write_table(args.out, args.results, rows, left_out, markdown(rows, tasks), diffs,
                "the last checkpoints, the mean over the tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
