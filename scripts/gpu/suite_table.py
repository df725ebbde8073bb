#!/usr/bin/env python3
"""Issue 22's first table from the suite calls' results (train_suite.py --plan suite): success per
backbone, fraction of the demonstrations and task over the seeds that ran, with two 95 % intervals.

    python scripts/gpu/suite_table.py docs/results/suite_*.json --out docs/results/suite_table

Each call's JSON holds some runs named suite_<backbone>_<pct>pct_s<seed>, each evaluated on every task of
the suite (eval.exec_horizon_<h>_<task>). A run is counted only when its training finished and every one of
its evaluations ran to the end (a run stopped by a call's deadline is listed as missing, not scored). Two
intervals, because they answer different questions: the Wilson interval of all episodes pooled over the seeds
(how well these policies do, given these trainings) and the t interval of the per-seed rates (how much
another training seed could move the mean; with 3 seeds it is wide). Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "mail_policy_node"))

from mail_policy_node.training.evaluate import wilson_interval  # noqa: E402

RUN = re.compile(r"^suite_(?P<backbone>[a-z0-9]+)_(?P<pct>\d+)pct_s(?P<seed>\d+)$")
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # two-sided 95 %
BACKBONES = {"dma": "D-Ma", "edma": "ED-Ma", "dtr": "D-Tr", "dpunet": "DP-UNet"}


def collect(files: list[Path]) -> tuple[dict, list[str]]:
    """(backbone, pct, task) -> {seed: (successes, episodes)}, and why runs were left out. A run that
    appears in several files (a call repeated) is taken from the last file given."""
    cells: dict = {}
    left_out = []
    for f in files:
        data = json.loads(f.read_text())
        for name, run in data.get("runs", {}).items():
            m = RUN.match(name)
            if not m:
                continue
            evals = run.get("eval") or {}
            tasks = run["task"].split(",")
            scored = {}
            for task in tasks:
                e = next((v for k, v in evals.items() if k.endswith(f"_{task}")), None)
                if not e or e.get("episodes") is None or e.get("rc") != 0:
                    break
                scored[task] = (int(e["successes"]), int(e["episodes"]))
            if run.get("train", {}).get("rc") != 0 or len(scored) != len(tasks):
                left_out.append(f"{name} in {f.name}: training rc {run.get('train', {}).get('rc')}, "
                                f"{len(scored)}/{len(tasks)} evaluations complete")
                continue
            key = (BACKBONES.get(m["backbone"], m["backbone"]), int(m["pct"]))
            for task, value in scored.items():
                cells.setdefault((*key, task), {})[int(m["seed"])] = value
    return cells, left_out


def summarize(per_seed: dict[int, tuple[int, int]]) -> dict:
    ok = sum(s for s, _ in per_seed.values())
    n = sum(e for _, e in per_seed.values())
    rates = [s / e for s, e in per_seed.values()]
    mean = sum(rates) / len(rates)
    row = dict(seeds=sorted(per_seed), per_seed={str(k): list(v) for k, v in sorted(per_seed.items())},
               successes=ok, episodes=n, pooled_rate=ok / n, pooled_wilson95=list(wilson_interval(ok, n)),
               seed_mean=mean, seed_t95=None)
    if len(rates) > 1:
        sd = math.sqrt(sum((r - mean) ** 2 for r in rates) / (len(rates) - 1))
        half = T975.get(len(rates) - 1, 1.96) * sd / math.sqrt(len(rates))
        row["seed_t95"] = [max(0.0, mean - half), min(1.0, mean + half)]
    return row


def across_tasks(rows: list[dict]) -> dict[int, tuple[int, int]]:
    """One run's rows (a task each) as one: per seed that has every task, its successes and episodes summed
    (empty when no seed has them all)."""
    seeds = set.intersection(*(set(r["seeds"]) for r in rows)) if rows else set()
    return {s: (sum(r["per_seed"][str(s)][0] for r in rows), sum(r["per_seed"][str(s)][1] for r in rows))
            for s in seeds}


def write_table(out: Path, sources: list[Path], rows: list[dict], left_out: list[str], text: str) -> None:
    """OUT.json (the rows, their sources, what was left out) and OUT.md (``text``, and what was left out)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(sources=[p.name for p in sources], rows=rows,
                                                        left_out=left_out), indent=1))
    if left_out:
        text += "\n".join(["", "Left out (not scored):", *(f"- {x}" for x in left_out)]) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)


def table(cells: dict) -> list[dict]:
    rows = [dict(backbone=b, pct=p, task=t, **summarize(v)) for (b, p, t), v in sorted(cells.items())]
    by_run: dict = {}  # the mean over the suite's tasks, per seed that has every task
    for r in rows:
        by_run.setdefault((r["backbone"], r["pct"]), []).append(r)
    for (b, p), rs in sorted(by_run.items()):
        merged = across_tasks(rs)
        if merged:
            rows.append(dict(backbone=b, pct=p, task="all", **summarize(merged)))
    return rows


def markdown(rows: list[dict]) -> str:
    def pct(x):
        return f"{100 * x:.0f}"

    lines = ["| backbone | demos | task | seeds | success (pooled) | 95 % Wilson (pooled) | seed mean | 95 % t (seeds) "
             "| per seed |", "|" + " --- |" * 9]
    for r in sorted(rows, key=lambda r: (r["pct"], r["task"] == "all", r["task"], r["backbone"])):
        t95 = f"{pct(r['seed_t95'][0])}-{pct(r['seed_t95'][1])} %" if r["seed_t95"] else "-"
        seeds = ", ".join(f"{s}/{e}" for s, e in r["per_seed"].values())
        lines.append(f"| {r['backbone']} | {r['pct']} % | {r['task']} | {len(r['seeds'])} | {r['successes']}/"
                     f"{r['episodes']} ({pct(r['pooled_rate'])} %) | {pct(r['pooled_wilson95'][0])}-"
                     f"{pct(r['pooled_wilson95'][1])} % | {pct(r['seed_mean'])} % | {t95} | {seeds} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="train_suite.py --plan suite result JSONs")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    cells, left_out = collect(args.results)
    if not cells:
        print("suite_table: no complete suite run in " + ", ".join(map(str, args.results)), file=sys.stderr)
        return 2
    rows = table(cells)
    write_table(args.out, args.results, rows, left_out, markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
