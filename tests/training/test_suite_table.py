"""scripts/gpu/suite_table.py: issue 22's table from the GPU calls' results. Scores only complete runs, pools
episodes over seeds (Wilson) and gives the t interval of the per-seed rates."""

from __future__ import annotations

import json
import math

import pytest

from tests.scripts import load_script

SCRIPT = "scripts/gpu/suite_table.py"


def _run(successes: dict, rc=0, complete=True, steps=400, best_step=300) -> dict:
    evals = {f"exec_horizon_0_{t}": dict(rc=0, successes=s, episodes=50) for t, s in successes.items()}
    if not complete:
        evals["exec_horizon_0_push"] = dict(rc="killed at the deadline", seconds=199.0)
    train = dict(rc=rc, steps=steps, best=dict(step=best_step, val_loss=0.17), final_val_loss=0.19)
    return dict(task="reach,push", train=train, eval=evals)


def test_pools_seeds_and_leaves_out_incomplete_runs(tmp_path):
    st = load_script(SCRIPT)
    a = dict(runs={"suite_dma_20pct_s0": _run(dict(reach=10, push=5)),
                   "suite_dtr_20pct_s0": _run(dict(reach=20, push=0), complete=False)})
    b = dict(runs={"suite_dma_20pct_s1": _run(dict(reach=20, push=3)),
                   "suite_dtr_20pct_s1": _run(dict(reach=1, push=1), rc="killed at the deadline"),
                   "push_dma_ddpm_20pct": _run(dict(reach=50, push=50))})  # not a suite run: ignored
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for f, d in zip(files, (a, b)):
        f.write_text(json.dumps(d))
    assert st.main([str(f) for f in files] + ["--out", str(tmp_path / "t")]) == 0
    out = json.loads((tmp_path / "t.json").read_text())
    rows = {(r["backbone"], r["pct"], r["task"]): r for r in out["rows"]}
    assert set(rows) == {("D-Ma", 20, "reach"), ("D-Ma", 20, "push"), ("D-Ma", 20, "all")}
    reach = rows[("D-Ma", 20, "reach")]
    assert (reach["successes"], reach["episodes"], reach["seeds"]) == (30, 100, [0, 1])
    assert reach["pooled_wilson95"] == pytest.approx(list(st.wilson_interval(30, 100)))
    # rates 0.2 and 0.4: mean 0.3, sd 0.1414, half = 12.706 * 0.1414 / sqrt(2) = 1.27 -> clipped to [0, 1]
    assert reach["seed_mean"] == pytest.approx(0.3) and reach["seed_t95"] == [0.0, 1.0]
    push = rows[("D-Ma", 20, "push")]  # rates 0.10 and 0.06: half = 12.706 * 0.02828 / sqrt(2) = 0.254
    half = 12.706 * math.sqrt(2 * 0.02 ** 2) / math.sqrt(2)
    assert push["seed_t95"] == pytest.approx([0.0, 0.08 + half])
    assert rows[("D-Ma", 20, "all")]["successes"] == 38 and rows[("D-Ma", 20, "all")]["episodes"] == 200
    assert len(out["left_out"]) == 2 and all("D-Tr" not in k[0] for k in rows)
    assert "Left out" in (tmp_path / "t.md").read_text()


def test_runs_of_another_step_count_are_listed_not_scored(tmp_path):
    """The 100 % runs of the 900-step recipe (still improving at their end) sit beside the plan's own in
    docs/results: a table of one recipe scores only runs trained at the plan's steps for their share."""
    st = load_script(SCRIPT)
    assert st.SUITE_STEPS[0.2] == 400 and st.SUITE_STEPS[1.0] != 900
    runs = {"suite_dma_100pct_s0": _run(dict(reach=40, push=30), steps=900),
            "suite_dtr_100pct_s0": _run(dict(reach=20, push=10), steps=st.SUITE_STEPS[1.0]),
            "suite_dma_20pct_s0": _run(dict(reach=5, push=0), steps=st.SUITE_STEPS[1.0])}
    f = tmp_path / "a.json"
    f.write_text(json.dumps(dict(runs=runs)))
    assert st.main([str(f), "--out", str(tmp_path / "t")]) == 0
    out = json.loads((tmp_path / "t.json").read_text())
    assert {(r["backbone"], r["pct"]) for r in out["rows"]} == {("D-Tr", 100)}
    assert sorted(x.split(" in ")[0] for x in out["left_out"]) == ["suite_dma_100pct_s0", "suite_dma_20pct_s0"]
    assert "trained 900 steps, the plan's 100 % runs train" in out["left_out"][0]


def test_each_scored_runs_training_says_whether_it_was_still_falling(tmp_path):
    st = load_script(SCRIPT)
    runs = {"suite_dma_20pct_s0": _run(dict(reach=5, push=0)),
            "suite_dtr_20pct_s0": _run(dict(reach=5, push=0), best_step=400),
            "suite_dtr_20pct_s1": _run(dict(reach=5, push=0), complete=False, best_step=400)}  # not scored: not listed
    f = tmp_path / "a.json"
    f.write_text(json.dumps(dict(runs=runs)))
    assert st.main([str(f), "--out", str(tmp_path / "t")]) == 0
    trainings = json.loads((tmp_path / "t.json").read_text())["trainings"]
    assert set(trainings) == {"suite_dma_20pct_s0", "suite_dtr_20pct_s0"}
    assert trainings["suite_dma_20pct_s0"] == dict(steps=400, best_step=300, best_val=0.17, final_val=0.19,
                                                   still_falling=False)
    assert trainings["suite_dtr_20pct_s0"]["still_falling"]
    md = (tmp_path / "t.md").read_text()
    assert "still falling at the last step: 1 of 2" in md
    assert "- suite_dma_20pct_s0: best at step 300 of 400 (validation loss 0.1700; last 0.1900)" in md
    assert "- suite_dtr_20pct_s0: best at step 400 of 400 (validation loss 0.1700; still falling at the end)" in md


def test_nothing_complete_is_an_error(tmp_path, capsys):
    st = load_script(SCRIPT)
    f = tmp_path / "a.json"
    f.write_text(json.dumps(dict(runs={"suite_dtr_20pct_s0": _run(dict(reach=1, push=1), complete=False)})))
    assert st.main([str(f), "--out", str(tmp_path / "t")]) == 2
    assert "no complete suite run" in capsys.readouterr().err


def _row(backbone: str, rates: list[float]) -> dict:
    st = load_script(SCRIPT)
    return dict(backbone=backbone, **st.summarize({seed: (round(100 * r), 100) for seed, r in enumerate(rates)}))


def test_difference_of_seed_means_is_welchs():
    """A backbone's seed mean minus another's, with Welch's t interval: the degrees of freedom from both
    variances (2 where one backbone's seeds agree exactly, 4 for two equal variances of 3 seeds each)."""
    st = load_script(SCRIPT)
    a = _row("D-Ma", [0.3, 0.5, 0.4])  # mean 0.4, variance 0.01
    d = st.difference(a, _row("D-Tr", [0.2, 0.2, 0.2]))
    assert d["difference"] == pytest.approx(0.2) and d["df"] == pytest.approx(2)
    half = 4.303 * math.sqrt(0.01 / 3)
    assert d["welch_t95"] == pytest.approx([0.2 - half, 0.2 + half])
    d = st.difference(a, _row("D-Tr", [0.1, 0.3, 0.2]))
    half = 2.776 * math.sqrt(2 * 0.01 / 3)
    assert d["df"] == pytest.approx(4) and d["welch_t95"] == pytest.approx([0.2 - half, 0.2 + half])
    assert (d["a"], d["b"], d["seeds_a"]) == ("D-Ma", "D-Tr", [0, 1, 2])
    assert st.difference(a, _row("DP-UNet", [0.9])) is None  # one seed: no spread to measure
    wide = st.difference(_row("D-Ma", [0.0, 1.0]), _row("D-Tr", [0.0, 0.2]))
    assert wide["welch_t95"] == [-1.0, 1.0]  # clipped to what a difference of rates can be
    assert st.t975(3.75) == 3.182 and st.t975(40) == 2.262  # fractional and large df: the wider quantile


def test_the_table_says_the_differences(tmp_path):
    st = load_script(SCRIPT)
    runs = {}
    for seed, (ma, tr) in enumerate(((10, 5), (20, 5), (15, 10))):
        runs[f"suite_dma_20pct_s{seed}"] = _run(dict(reach=ma, push=0))
        runs[f"suite_dtr_20pct_s{seed}"] = _run(dict(reach=tr, push=0))
    f = tmp_path / "a.json"
    f.write_text(json.dumps(dict(runs=runs)))
    assert st.main([str(f), "--out", str(tmp_path / "t")]) == 0
    (d,) = json.loads((tmp_path / "t.json").read_text())["differences"]
    assert (d["a"], d["b"], d["pct"]) == ("D-Ma", "D-Tr", 20)
    assert d["difference"] == pytest.approx((45 - 20) / 300)  # of 100 episodes a seed (reach and push)
    assert "- D-Ma - D-Tr at 20 %: +8 (" in (tmp_path / "t.md").read_text()
