"""Evaluation: Wilson interval, and a tiny end-to-end run: sim demos -> train -> checkpoint -> eval."""

from __future__ import annotations

import json

import pytest

from mail_policy_node.commands import eval as eval_cmd
from mail_policy_node.commands import train as train_cmd
from mail_policy_node.commands.demos import record_demo
from mail_policy_node.training.evaluate import wilson_interval

from .conftest import tiny_config


def test_wilson_interval():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_end_to_end_demos_train_checkpoint_eval(tmp_path):
    from mail_policy_node.sim import make_task

    env = make_task("reach", render=True, image_size=(64, 64))
    for seed in (0, 1):
        record_demo(env, seed, tmp_path / "demos" / f"ep{seed}", episode=seed)
    env.close()
    cfg = tiny_config([tmp_path / "demos"], tmp_path / "run", tmp_path / "cache", train__steps=2,
                      data__val_fraction=0.5)
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
    assert train_cmd.main([str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    ckpt = tmp_path / "run" / "final"
    out = tmp_path / "eval"
    assert eval_cmd.main(["--checkpoint", str(ckpt), "--task", "reach", "--episodes", "2", "--seed", "100",
                          "--max-steps", "4", "--pictures", "1", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "eval.json").read_text())
    s = report["summary"]
    assert s["episodes"] == 2 and s["render_size"] == [64, 64] and s["history"] == "window"
    assert [e["steps"] for e in report["episodes"]] == [4, 4] and s["seeds"] == [100, 101]
    assert 0 <= s["wilson95"][0] <= s["success_rate"] <= s["wilson95"][1] <= 1
    assert s["chunk_latency_ms"] > 0 and (out / "eval.md").read_text().startswith("| checkpoint")
    assert len(list(out.glob("rollout_seed100_*.png"))) == 1
