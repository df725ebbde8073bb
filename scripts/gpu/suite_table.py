#!/usr/bin/env python3
"""Issue 22's first table from the suite calls' results (train_suite.py --plan suite): success per
backbone, fraction of the demonstrations and task over the seeds that ran, with two 95 % intervals.

    python scripts/gpu/suite_table.py docs/results/suite_*.json --out docs/results/suite_table

Each call's JSON holds some runs named suite_<backbone>_<pct>pct_s<seed>, each evaluated on every task of
the suite (eval.exec_horizon_<h>_<task>). A run is counted only when its training finished, at the plan's
number of steps for its share of the demos (train_suite.SUITE_STEPS: runs of an earlier recipe are listed, not
scored), and every one of its evaluations ran to the end (a run stopped by a call's deadline is listed as missing,
not scored). Two intervals, because they answer different questions: the Wilson interval of all episodes pooled
over the seeds (how well these policies do, given these trainings) and the t interval of the per-seed rates (how
much another training seed could move the mean; with 3 seeds it is wide). Between backbones, over the runs' tasks
together: the difference of their seed means with Welch's t interval (`difference`). And, since the plan asks
for enough steps to converge, each scored run's training: the step of its lowest validation loss (the checkpoint
evaluated) against its last, flagged where they are the same (still falling at the end). Writes OUT.json and OUT.md.
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
from train_suite import SUITE_STEPS  # noqa: E402

RUN = re.compile(r"^suite_(?P<backbone>[a-z0-9]+)_(?P<pct>\d+)pct_s(?P<seed>\d+)$")
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # two-sided 95 %
BACKBONES = {"dma": "D-Ma", "edma": "ED-Ma", "dtr": "D-Tr", "dpunet": "DP-UNet"}


def collect(files: list[Path]) -> tuple[dict, dict, list[str]]:
    """(backbone, pct, task) -> {seed: (successes, episodes)}, run name -> its training (`training`), and why runs
    were left out. A run that appears in several files (a call repeated) is taken from the last file given."""
    cells: dict = {}
    trainings: dict = {}
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
            train = run.get("train", {})
            if train.get("rc") != 0 or len(scored) != len(tasks):
                left_out.append(f"{name} in {f.name}: training rc {train.get('rc')}, "
                                f"{len(scored)}/{len(tasks)} evaluations complete")
                continue
            planned = SUITE_STEPS.get(int(m["pct"]) / 100)
            if train.get("steps") != planned:
                left_out.append(f"{name} in {f.name}: trained {train.get('steps')} steps, the plan's {m['pct']} % "
                                f"runs train {planned}")
                continue
            key = (BACKBONES.get(m["backbone"], m["backbone"]), int(m["pct"]))
            for task, value in scored.items():
                cells.setdefault((*key, task), {})[int(m["seed"])] = value
            trainings[name] = training(train)
    return cells, trainings, left_out


def training(train: dict) -> dict:
    """A run's training as the table reports it: its steps, the step and validation loss of its best checkpoint
    (the one evaluated), its last validation loss, and whether the loss was still falling at the end (best = last)."""
    best = train.get("best") or {}
    return dict(steps=train.get("steps"), best_step=best.get("step"), best_val=best.get("val_loss"),
                final_val=train.get("final_val_loss"), still_falling=best.get("step") == train.get("steps"))


def training_lines(trainings: dict) -> list[str]:
    """Markdown lines for `collect`'s trainings, one per run."""
    lines = []
    for name, t in sorted(trainings.items()):
        if t["best_step"] is None:
            lines.append(f"- {name}: {t['steps']} steps, no validation recorded")
            continue
        end = ("still falling at the end" if t["still_falling"]
               else f"last {t['final_val']:.4f}" if t["final_val"] is not None else "")
        lines.append(f"- {name}: best at step {t['best_step']} of {t['steps']} (validation loss {t['best_val']:.4f}"
                     f"{'; ' + end if end else ''})")
    if not lines:
        return []
    falling = sum(t["still_falling"] for t in trainings.values())
    return ["", "Training (each run evaluated at its lowest validation loss; still falling at the last step: "
                f"{falling} of {len(trainings)}):", *lines]


def t975(df: float) -> float:
    """The two-sided 95 % quantile of Student's t; a fractional df (Welch's) and one over 9 take the table's
    next lower entry: the interval errs wide."""
    return T975[min(max(1, int(df + 1e-9)), max(T975))]  # + 1e-9: a df of 4 computed as 3.9999999999999996 is 4


def seed_rates(per_seed: dict) -> list[float]:
    """Each seed's success rate, in ``per_seed``'s order (a row's per_seed, or summarize's (successes, episodes))."""
    return [s / e for s, e in per_seed.values()]


def mean_and_variance(values: list[float]) -> tuple[float, float]:
    """The mean and the sample variance (n - 1)."""
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def summarize(per_seed: dict[int, tuple[int, int]]) -> dict:
    ok = sum(s for s, _ in per_seed.values())
    n = sum(e for _, e in per_seed.values())
    ordered = dict(sorted(per_seed.items()))
    rates = seed_rates(ordered)
    mean = sum(rates) / len(rates)
    row = dict(seeds=list(ordered), per_seed={str(k): list(v) for k, v in ordered.items()},
               successes=ok, episodes=n, pooled_rate=ok / n, pooled_wilson95=list(wilson_interval(ok, n)),
               seed_mean=mean, seed_t95=None)
    if len(rates) > 1:
        half = t975(len(rates) - 1) * math.sqrt(mean_and_variance(rates)[1] / len(rates))
        row["seed_t95"] = [max(0.0, mean - half), min(1.0, mean + half)]
    return row


def difference(a: dict, b: dict) -> dict | None:
    """Row ``a``'s seed mean minus row ``b``'s, with Welch's 95 % t interval (within -1..1, as rates differ); None
    unless both have two seeds or more. Not paired by seed: a seed is one training of one backbone (the demos and
    the evaluation starts are the same for every seed), so seed 0 of two backbones share nothing the difference
    could cancel."""
    ra, rb = seed_rates(a["per_seed"]), seed_rates(b["per_seed"])
    if len(ra) < 2 or len(rb) < 2:
        return None
    (ma, va), (mb, vb) = mean_and_variance(ra), mean_and_variance(rb)
    wa, wb = va / len(ra), vb / len(rb)  # the squared standard errors of the two means
    df = (wa + wb) ** 2 / (wa ** 2 / (len(ra) - 1) + wb ** 2 / (len(rb) - 1)) if wa + wb > 0 else len(ra) + len(rb) - 2
    half = t975(df) * math.sqrt(wa + wb)
    return dict(a=a["backbone"], b=b["backbone"], seeds_a=a["seeds"], seeds_b=b["seeds"], difference=ma - mb,
                welch_t95=[max(-1.0, ma - mb - half), min(1.0, ma - mb + half)], df=df)


def differences(rows: list[dict]) -> list[dict]:
    """``difference`` of every pair of ``rows`` (each backbone against those after it), where both have seeds."""
    return [d for i, a in enumerate(rows) for b in rows[i + 1:] if (d := difference(a, b))]


def difference_lines(diffs: list[dict], what: str) -> list[str]:
    """Markdown lines for ``differences``' results (each with its share of the demos where it has one)."""
    lines = []
    for d in diffs:
        at = f" at {d['pct']} %" if "pct" in d else ""
        low, high = (100 * x for x in d["welch_t95"])
        lines.append(f"- {d['a']} - {d['b']}{at}: {100 * d['difference']:+.0f} ({low:+.0f} to {high:+.0f}; "
                     f"{len(d['seeds_a'])} and {len(d['seeds_b'])} seeds)")
    return ["", f"Differences of the seed means ({what}; Welch's 95 % t interval, in points):", *lines] if lines else []


def across_tasks(rows: list[dict]) -> dict[int, tuple[int, int]]:
    """One run's rows (a task each) as one: per seed that has every task, its successes and episodes summed
    (empty when no seed has them all)."""
    seeds = set.intersection(*(set(r["seeds"]) for r in rows)) if rows else set()
    return {s: (sum(r["per_seed"][str(s)][0] for r in rows), sum(r["per_seed"][str(s)][1] for r in rows))
            for s in seeds}


def write_table(out: Path, sources: list[Path], rows: list[dict], left_out: list[str], text: str,
                diffs: list[dict], diffs_over: str, trainings: dict | None = None) -> None:
    """OUT.json (the rows, the differences between backbones, their sources, the runs' trainings where given,
    what was left out) and OUT.md (``text``, the differences, over ``diffs_over``, the trainings, what was left
    out)."""
    text += "\n".join(difference_lines(diffs, diffs_over) + training_lines(trainings or {})) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if trainings is None else dict(trainings=trainings)
    out.with_suffix(".json").write_text(json.dumps(dict(sources=[p.name for p in sources], rows=rows,
                                                        differences=diffs, **extra, left_out=left_out), indent=1))
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
    cells, trainings, left_out = collect(args.results)
    if not cells:
        print("suite_table: no complete suite run in " + ", ".join(map(str, args.results)), file=sys.stderr)
        return 2
    rows = table(cells)
    diffs = [dict(d, pct=pct) for pct in sorted({r["pct"] for r in rows})
             for d in differences([r for r in rows if r["pct"] == pct and r["task"] == "all"])]
    write_table(args.out, args.results, rows, left_out, markdown(rows), diffs, "all tasks", trainings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
