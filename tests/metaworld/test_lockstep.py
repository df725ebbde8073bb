"""Meta-World's evaluation in lockstep (`mail-il metaworld eval --batch`): the episodes of a group share one
engine batch, and each must still do what it does alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import require_metaworld

require_metaworld()

from mail_policy_node.benchmarks import metaworld as mw  # noqa: E402
from mail_policy_node.model.checkpoint import load_checkpoint  # noqa: E402

RENDER = (128, 128)  # the demos' frames; the policy resizes them to its 32x32


def _same(row: dict, alone: dict) -> None:
    assert (row["seed"], row["steps"], row["success"], row["first_success_step"]) == \
        (alone["seed"], alone["steps"], alone["success"], alone["first_success_step"])
    # a batch of 3 and a batch of 1 differ by float32 rounding; a few steps of the scene do not grow it much
    np.testing.assert_allclose(row["mean_abs_action"], alone["mean_abs_action"], atol=1e-4)
    assert row["hand_moved_m"] == pytest.approx(alone["hand_moved_m"], abs=1e-4)


def test_a_lockstep_group_gives_each_episode_what_it_gives_alone(push_bc_checkpoint):
    # rows of different lengths (the shorter ones stop observing while the others go on) and horizons (they
    # replan at different steps: chunks for some rows of the batch only)
    ck = str(push_bc_checkpoint)
    jobs = [mw.EvalJob(ck, "push", seed, exec_horizon=h, max_steps=steps, render_size=RENDER)
            for seed, steps, h in ((1000, 7, 0), (1001, 16, 2), (1002, 11, 1))]
    try:
        together = mw.run_episodes(tuple(jobs))
        alone = [mw.run_episode(job) for job in jobs]
    finally:
        mw._close_envs()
    for job, row, one in zip(jobs, together, alone):
        _same(row, one)
        assert row["actions_sent"] == row["steps"] and (row["success"] or row["steps"] == job.max_steps)
    assert len({r["hand_moved_m"] for r in together}) == 3  # three scenes, not one


def test_the_command_runs_groups_and_asks_a_multitask_policy_for_its_task(push_bc_checkpoint, tmp_path):
    spec = load_checkpoint(push_bc_checkpoint, "cpu").cfg.spec
    assert spec.task_names == ("push-v3",)  # the demos' episode events name Meta-World's environment
    out = tmp_path / "eval"
    assert mw.main(["eval", "--checkpoint", str(push_bc_checkpoint), "--task", "push", "--episodes", "3",
                    "--max-steps", "6", "--batch", "2", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "metaworld_eval.json").read_text())
    assert report["batch"] == 2 and report["workers"] == 1
    rows = report["evaluations"][0]["episodes_detail"]
    assert [r["seed"] for r in rows] == [1000, 1001, 1002] and all(r["steps"] == 6 for r in rows)
    try:  # the groups were 1000-1001 and 1002: the lone episode is the one-row loop's
        alone = mw.run_episode(mw.EvalJob(str(push_bc_checkpoint), "push", 1002, max_steps=6, render_size=RENDER))
    finally:
        mw._close_envs()
    _same(rows[2], alone)
    # a task it was not trained on is refused before any episode runs
    with pytest.raises(ValueError, match="not one this policy was trained on"):
        mw.evaluate([str(push_bc_checkpoint)], ["hammer"], episodes=1)
