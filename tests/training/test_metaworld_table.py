"""scripts/gpu/metaworld_table.py: issue 22's Meta-World table from the per-seed JSONs of metaworld_suite.py:
last checkpoints pooled over seeds, best-5 averaged over seeds, DP3's reference beside them."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script

SCRIPT = "scripts/gpu/metaworld_table.py"


def _seed(seed: int, runs: dict, evaluated: int = 5) -> dict:
    out = {}
    for backbone, (push, pick, best) in runs.items():
        out[backbone.lower()] = dict(backbone=backbone, last=None if push is None else dict(
            successes={"push": push, "pick-place": pick}, episodes=100),
            best5=dict(per_task={"push": best, "pick-place": 0.0}, best5_checkpoints=evaluated, k=5))
    return dict(seed=seed, runs=out)


def test_pools_the_last_checkpoints_and_averages_best5(tmp_path):
    mt = load_script(SCRIPT)
    files = []
    for seed, runs in ((0, {"D-Ma": (30, 0, 0.40), "D-Tr": (10, 2, 0.20)}),
                       (1, {"D-Ma": (50, 4, 0.60), "D-Tr": (None, None, None)})):
        files.append(tmp_path / f"metaworld_s{seed}.json")
        files[-1].write_text(json.dumps(_seed(seed, runs)))
    assert mt.main([str(f) for f in files] + ["--out", str(tmp_path / "t")]) == 0
    out = json.loads((tmp_path / "t.json").read_text())
    rows = {(r["backbone"], r["task"]): r for r in out["rows"]}
    push = rows[("D-Ma", "push")]
    assert (push["successes"], push["episodes"], push["seeds"]) == (80, 200, [0, 1])
    assert push["best5"] == pytest.approx(0.5) and push["dp3_image_dp_v2"] == pytest.approx(0.30)
    mean = rows[("D-Ma", "mean")]  # the two tasks' episodes of each seed together
    assert (mean["successes"], mean["episodes"]) == (84, 400) and mean["best5"] == pytest.approx(0.25)
    assert mean["best5_seeds"] == [0, 1]
    assert mean["dp3_image_dp_v2"] == pytest.approx(0.15)
    assert rows[("D-Tr", "push")]["seeds"] == [0]  # its seed 1 did not finish: left out, said so
    assert out["left_out"] == ["D-Tr seed 1 (metaworld_s1.json): no finished last evaluation"]
    text = (tmp_path / "t.md").read_text()
    assert "| push | 40 % (" in text and "Left out" in text
    assert "seeds 30 / 50 | 50 % |" in text  # D-Ma's push: each seed's rate beside the pooled one
    assert "| 10 % (6-17), 1 seed | 20 % |" in text  # D-Tr's push: seed 0 alone
    assert out["differences"] == [] and "Differences" not in text  # D-Tr's one seed has no spread


def test_differences_between_backbones_over_the_tasks(tmp_path):
    """D-Ma's seed mean over the tasks minus D-Tr's, with Welch's interval (suite_table.difference)."""
    mt = load_script(SCRIPT)
    files = []
    for seed, runs in ((0, {"D-Ma": (30, 10, 0.4), "D-Tr": (10, 10, 0.2)}),
                       (1, {"D-Ma": (50, 10, 0.6), "D-Tr": (20, 10, 0.3)})):
        files.append(tmp_path / f"metaworld_s{seed}.json")
        files[-1].write_text(json.dumps(_seed(seed, runs)))
    assert mt.main([str(f) for f in files] + ["--out", str(tmp_path / "t")]) == 0
    (d,) = json.loads((tmp_path / "t.json").read_text())["differences"]
    assert (d["a"], d["b"]) == ("D-Ma", "D-Tr")
    assert d["difference"] == pytest.approx((0.2 + 0.3) / 2 - (0.1 + 0.15) / 2)  # per seed: both tasks' episodes
    assert "- D-Ma - D-Tr: +12 (" in (tmp_path / "t.md").read_text()


def test_nothing_finished_is_an_error(tmp_path, capsys):
    mt = load_script(SCRIPT)
    f = tmp_path / "s0.json"
    f.write_text(json.dumps(_seed(0, {"D-Ma": (None, None, None)})))
    assert mt.main([str(f), "--out", str(tmp_path / "t")]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_a_best5_of_fewer_checkpoints_is_not_scored(tmp_path):
    """The earlier checkpoints' evaluations of a call ran out of time: its last checkpoint counts, its best-5
    (one checkpoint's 20 starts) does not, and the table says so."""
    mt = load_script(SCRIPT)
    files = [tmp_path / "metaworld_s0.json", tmp_path / "metaworld_s1.json"]
    files[0].write_text(json.dumps(_seed(0, {"DP-UNet": (30, 0, 0.40)})))
    files[1].write_text(json.dumps(_seed(1, {"DP-UNet": (50, 4, 0.90)}, evaluated=1)))
    assert mt.main([str(f) for f in files] + ["--out", str(tmp_path / "t")]) == 0
    out = json.loads((tmp_path / "t.json").read_text())
    push = {(r["backbone"], r["task"]): r for r in out["rows"]}[("DP-UNet", "push")]
    assert push["seeds"] == [0, 1] and push["best5"] == pytest.approx(0.40) and push["best5_seeds"] == [0]
    assert out["left_out"] == ["DP-UNet seed 1 (metaworld_s1.json): best-5 from 1 of 5 checkpoints, not scored"]
    mean = {(r["backbone"], r["task"]): r for r in out["rows"]}[("DP-UNet", "mean")]
    assert mean["best5_seeds"] == [0]  # the mean's best-5 is seed 0's alone, as each task's
