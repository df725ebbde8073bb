"""`mail-il eval --through-stack`: the synchronous evaluation and the same seeds through the sim profile's
ROS stack, side by side (commands/fidelity.py).

Fast tests assemble the comparison from given results (no stack); the `ros`/`slow` one runs two episodes
of the shipped reach checkpoint through both and checks what fidelity.json holds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mail_bringup.closed_loop import ClosedLoopReport, EpisodeResult
from mail_policy_node.commands import eval as eval_cmd
from mail_policy_node.commands import fidelity
from mail_policy_node.sim.tasks import get_task

SHIPPED = Path(__file__).resolve().parents[2] / "mail_bringup" / "checkpoints" / "reach_dma_small"


def _sync(seed, success, steps=60, failed=False, final=0.05):
    return dict(seed=seed, success=success, failed=failed, steps=steps, chunk_latency_ms=20.0, step_ms=3.0,
                episode_s=1.0, final_goal_distance=0.02 if success else final, min_goal_distance=0.02)


def _ep(seed, success, **kw):
    base = dict(seed=seed, success=success, duration_s=3.0 if success else 6.05, chunks=30, max_velocity_ratio=0.5,
                max_acceleration_ratio=0.4, position_violations=0, limit_hits=0, watchdog_trips=0, chunks_rejected=0,
                start_distance=0.2, final_distance=0.02 if success else 0.08, min_distance=0.02,
                cycle_jitter_p99_ms=1.5, limits={"jerk": 100, "acceleration": 50},
                sim_duration_s=2.9 if success else 5.5, timeout_s=6.0, chunk_age_p50_ms=40.0, chunk_age_p99_ms=120.0)
    base.update(kw)
    return EpisodeResult(**base)


def _results():
    sync_eps = [_sync(1000, True, 25), _sync(1001, True, 30), _sync(1002, False), _sync(1003, True, 20),
                _sync(1004, False)]
    sync_summary = dict(task="reach", checkpoint="ck", policy_id="abc", mean_steps=39.0, chunk_latency_ms=20.0,
                        exec_horizon=2, history="window", render_size=[128, 128], wall_seconds=10.0,
                        failed_final_goal_distance_median=0.05)
    report = ClosedLoopReport("reach", "ck", latency_p50_ms=45.0, latency_p99_ms=210.0, inference_p50_ms=25.0,
                              controller_jitter_p99_ms=2.0)
    report.episodes = [
        _ep(1000, True),
        _ep(1001, False, limit_hits=12, limits={"velocity": 10, "workspace": 2, "jerk": 400}),  # timeout
        _ep(1002, True),  # only the stack
        _ep(1003, False, watchdog_trips=1, chunks_rejected=2, rejections={"far_from_arm": 2},
            actions_dropped_stale=5),  # held after a late chunk
        EpisodeResult.errored(1004, "episode 1004: sim_world exited with 1"),
    ]
    return sync_summary, sync_eps, report


def test_comparison_per_seed_intervals_and_breakdown():
    sync_summary, sync_eps, report = _results()
    r = fidelity.compare(sync_summary, sync_eps, report.summary(), step_limit=60, dt=0.1, settings={"exec_horizon": 2})
    json.dumps(r)  # what fidelity.json holds
    s, k, c = r["synchronous"], r["stack"], r["comparison"]
    assert (s["successes"], s["episodes"], k["successes"], k["episodes"]) == (3, 5, 2, 5)
    assert s["wilson95"][0] < 0.6 < s["wilson95"][1] and k["wilson95"][0] < 0.4 < k["wilson95"][1]
    assert s["ended_by"] == {"success": 3, "step_limit": 2, "task_failure": 0}
    assert k["ended_by"] == {"success": 2, "timeout": 1, "task_failure": 0, "watchdog": 1, "no_motion": 0, "error": 1}
    assert c["same_seeds"] and c["seeds"] == [1000, 1001, 1002, 1003, 1004]
    assert (c["both_success"], c["both_fail"], c["sync_only"], c["stack_only"]) == (1, 1, 2, 1)
    assert c["differing_seeds"] == [1001, 1002, 1003]
    assert c["mcnemar_exact_p"] == pytest.approx(1.0)  # 2 vs 1 discordant: no evidence
    assert c["rate_difference"] == pytest.approx(-0.2)
    # overrides per limit, apart from the smoothing, and where they happened
    assert k["overrides"] == {"velocity": 10, "workspace": 2} and k["limit_hits"] == 12
    assert k["overrides_in_failures"] == {"velocity": 10, "workspace": 2} and k["overrides_in_successes"] == {}
    assert k["smoothing"] == {"acceleration": 150, "jerk": 700}
    assert k["rejections"] == {"far_from_arm": 2} and k["chunks_rejected"] == 2 and k["actions_dropped_stale"] == 5
    assert k["watchdog_trips"] == 1 and k["errors"] == {1004: "episode 1004: sim_world exited with 1"}
    assert (k["latency_p50_ms"], k["latency_p99_ms"], k["controller_jitter_p99_ms"]) == (45.0, 210.0, 2.0)
    assert k["episode_timeout_s"] == 6.0 and s["episode_limit_s"] == 6.0
    assert k["sim_per_wall"] == pytest.approx((2.9 * 2 + 5.5 * 2) / (3.0 * 2 + 6.05 * 2), abs=1e-3)
    rows = {row["seed"]: row for row in r["per_seed"]}
    assert rows[1001]["differs"] and rows[1001]["sync"]["ended_by"] == "success"
    assert rows[1001]["stack"]["ended_by"] == "timeout" and rows[1001]["stack"]["overrides"] == {"velocity": 10,
                                                                                              "workspace": 2}
    assert rows[1003]["stack"]["ended_by"] == "watchdog" and rows[1004]["stack"]["ended_by"] == "error"
    assert not rows[1004]["differs"] and rows[1000]["differs"] is False
    assert any("wall clock" in n for n in r["not_identical"]) and any("latency" in n for n in r["not_identical"])

    table = fidelity.markdown(r)
    assert "| success | 3/5 (60 %) | 2/5 (40 %) |" in table
    assert "| 1001 **differs** | success (30 steps) | timeout |" in table
    assert "velocity 10, workspace 2" in table and "timeout 1, watchdog 1, error 1" in table
    assert "only synchronous 2, only the stack 1; differing: 1001, 1002, 1003" in table
    assert c["real_time"] is True and "Not in real time" not in table  # 0.93 simulated s per wall s


def test_a_stack_run_slower_than_real_time_is_flagged():
    """franky-sim at 0.36x real time (the 2-core machine with the stack running): the arm lags plans made on
    the wall clock, which a real FR3 never does; the report says so above the table."""
    sync_summary, sync_eps, report = _results()
    report.episodes = [_ep(e.seed, e.success, duration_s=e.duration_s, sim_duration_s=0.36 * e.duration_s)
                       for e in report.episodes[:4]]
    r = fidelity.compare(sync_summary, sync_eps, report.summary(), 60, 0.1)
    assert r["stack"]["sim_per_wall"] == pytest.approx(0.36) and r["comparison"]["real_time"] is False
    table = fidelity.markdown(r)
    assert "**Not in real time**: franky-sim ran at 0.36 simulated seconds per wall second" in table
    assert table.index("Not in real time") < table.index("| success |")
    # the same pace on the world's clock (the sim profile's use_sim_time): the plans kept the arm's pace
    report.on_world_clock = True
    r = fidelity.compare(sync_summary, sync_eps, report.summary(), 60, 0.1)
    assert r["stack"]["on_world_clock"] and r["comparison"]["real_time"] is True
    assert "Not in real time" not in fidelity.markdown(r)
    assert any("ran on the world's clock" in note for note in r["not_identical"])


def test_seed_sets_that_differ_are_said():
    sync_summary, sync_eps, report = _results()
    report.episodes = report.episodes[:3]
    r = fidelity.compare(sync_summary, sync_eps, report.summary(), 60, 0.1)
    assert not r["comparison"]["same_seeds"]
    assert "NOT cover the same seeds" in fidelity.markdown(r)
    assert {row["seed"]: row["stack"] for row in r["per_seed"]}[1004] is None


def test_mcnemar_exact():
    assert fidelity.mcnemar_exact_p(0, 0) == 1.0
    assert fidelity.mcnemar_exact_p(6, 0) == pytest.approx(2 / 64)
    assert fidelity.mcnemar_exact_p(1, 5) == pytest.approx(2 * (1 + 6) / 64)
    assert fidelity.mcnemar_exact_p(3, 3) == 1.0


def test_ended_by_order():
    assert _ep(1, True, watchdog_trips=1).ended_by() == "success"
    assert _ep(1, False, failed=True, watchdog_trips=1).ended_by() == "task_failure"
    assert _ep(1, False, failed=True, reason="the arm never moved").ended_by() == "no_motion"
    assert EpisodeResult.errored(1, "x").ended_by() == "error"


def test_the_command_gives_the_stack_the_same_seeds_and_limit(tmp_path, monkeypatch, capsys):
    """--through-stack: the synchronous half as before (eval.json), then the stack with the same seeds,
    execution horizon and episode length; no ROS here (both halves replaced)."""
    import mail_bringup.closed_loop as closed_loop
    from mail_policy_node.training import evaluate as evaluate_mod

    sync_summary, sync_eps, report = _results()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "train_state.pt").write_text("big")
    calls = {}

    def fake_evaluate(checkpoint, task, episodes, seed, *rest):
        calls["sync"], calls["sync_rtc"] = (task, episodes, seed), rest[-1]
        return dict(sync_summary, episodes=len(sync_eps), seeds=[seed, seed + episodes - 1], successes=3,
                    success_rate=0.6, wilson95=[0.2, 0.9], step_ms=3.0), [dict(r, frames=[]) for r in sync_eps]

    def fake_closed_loop(root, name, task, seeds, image_size, log, overrides, keep_going):
        calls["stack"] = dict(root=root, name=name, task=task, seeds=seeds, image_size=image_size,
                              overrides=overrides, keep_going=keep_going)
        return report

    monkeypatch.setattr(evaluate_mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(closed_loop, "run_closed_loop", fake_closed_loop)
    out = tmp_path / "out"
    assert eval_cmd.main(["--checkpoint", str(ckpt), "--task", "reach", "--episodes", "5", "--seed", "1000",
                          "--exec-horizon", "2", "--out", str(out), "--no-progress", "--through-stack",
                          "--real-time-chunking"]) == 0
    st = calls["stack"]
    assert calls["sync"] == ("reach", 5, 1000) and st["seeds"] == (1000, 1001, 1002, 1003, 1004)
    assert st["overrides"]["policy_node"]["execution_horizon"] == 2
    # real-time chunking in both halves: the synchronous evaluation's and the stack's policy node
    assert calls["sync_rtc"] is True and st["overrides"]["policy_node"]["real_time_chunking"] is True
    assert st["overrides"]["sim_world"]["episode_timeout"] == pytest.approx(get_task("reach").max_steps * 0.1)
    assert st["keep_going"] and st["image_size"] == 128 and st["name"] == "ckpt"
    assert sorted(p.name for p in Path(st["root"], "ckpt").iterdir()) == ["config.json"]  # no training state
    assert (out / "eval.json").is_file()  # the synchronous output as without the option
    r = json.loads((out / "fidelity.json").read_text())
    assert (r["settings"]["step_limit"] == get_task("reach").max_steps and r["settings"]["real_time_chunking"]
            and r["comparison"]["seeds"] == [1000, 1001, 1002, 1003, 1004])
    assert "| success | 3/5 (60 %) | 2/5 (40 %) |" in capsys.readouterr().out


def test_the_stack_runs_any_horizon_the_evaluation_runs():
    # push at the paper's J = 5 replanned every 0.5 s, then the sim profile's watchdog timeout: the
    # controller refused every chunk (slower_than_watchdog) and the command refused such horizons. The
    # watchdog now expects each chunk one replanning period after the last: every horizon runs.
    assert fidelity.stack_exec_horizon(SHIPPED, 7) == 7
    assert fidelity.stack_exec_horizon(SHIPPED, 0) == 5  # the profile's: the checkpoint's J
    assert fidelity.stack_exec_horizon(SHIPPED, 2, fidelity.profile_params(
        ["franka_controller.watchdog_timeout:=0.1"])) == 2


def test_both_halves_run_the_profiles_horizon_by_default(tmp_path, monkeypatch):
    import mail_bringup.closed_loop as closed_loop
    from mail_policy_node.training import evaluate as evaluate_mod

    sync_summary, sync_eps, report = _results()
    seen = {}

    def fake_evaluate(checkpoint, task, episodes, seed, workers, history, exec_horizon, *rest):
        seen["sync"] = exec_horizon
        return dict(sync_summary, episodes=len(sync_eps), seeds=[seed, seed + episodes - 1], successes=3,
                    success_rate=0.6, wilson95=[0.2, 0.9], step_ms=3.0), [dict(r, frames=[]) for r in sync_eps]

    def fake_closed_loop(root, name, task, seeds, image_size, log, overrides, keep_going):
        seen["stack"] = overrides["policy_node"]["execution_horizon"]
        return report

    monkeypatch.setattr(evaluate_mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(closed_loop, "run_closed_loop", fake_closed_loop)
    assert eval_cmd.main(["--checkpoint", str(SHIPPED), "--task", "reach", "--episodes", "5", "--out",
                          str(tmp_path / "out"), "--no-progress", "--pictures", "0", "--through-stack"]) == 0
    assert seen == {"sync": 5, "stack": 5}  # sim.yaml's policy_node.execution_horizon 0: the checkpoint's J


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_through_stack_on_the_shipped_checkpoint(tmp_path):
    out = tmp_path / "eval"
    assert eval_cmd.main(["--checkpoint", str(SHIPPED), "--task", "reach", "--episodes", "2", "--seed", "1000",
                          "--exec-horizon", "2", "--pictures", "0", "--out", str(out), "--no-progress",
                          "--through-stack"]) == 0
    r = json.loads((out / "fidelity.json").read_text())
    print(fidelity.markdown(r))
    s, k, c = r["synchronous"], r["stack"], r["comparison"]
    assert c["same_seeds"] and c["seeds"] == [1000, 1001]
    assert s["episodes"] == k["episodes"] == 2
    assert [row["seed"] for row in r["per_seed"]] == [1000, 1001]
    for row in r["per_seed"]:
        assert row["sync"]["ended_by"] in fidelity.SYNC_ENDINGS
        assert row["stack"]["ended_by"] in fidelity.STACK_ENDINGS and row["stack"]["ended_by"] != "error", row
        assert row["stack"]["chunks"] > 0 and row["stack"]["sim_duration_s"] > 0
        assert row["differs"] == (row["sync"]["success"] != row["stack"]["success"])
    assert sum(s["ended_by"].values()) == sum(k["ended_by"].values()) == 2
    limit = get_task("reach").max_steps
    assert s["step_limit"] == limit and k["episode_timeout_s"] == pytest.approx(limit * 0.1)
    assert 0.0 < k["latency_p50_ms"] <= k["latency_p99_ms"] and k["controller_jitter_p99_ms"] > 0
    assert k["smoothing"].get("jerk", 0) > 0  # the filter's cycles per limit reached the report
    for key in ("overrides", "overrides_in_failures", "rejections", "chunks_rejected", "watchdog_trips",
                "actions_dropped_stale", "chunk_age_p50_ms_median", "sim_per_wall"):
        assert key in k, key
    assert all(0 <= x[0] <= x[1] <= 1 for x in (s["wilson95"], k["wilson95"]))
    assert math.isfinite(c["mcnemar_exact_p"]) and r["not_identical"]
    assert (out / "eval.json").is_file() and (out / "fidelity.md").is_file()


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_diffusion_policy_runs_through_the_stack(tmp_path):
    """Issue 22: the policy users would pick instead of MaIL, Chi et al.'s Diffusion Policy (DP-UNet, DDPM),
    behind the same stack: a small one trained 200 steps on 20 reach demos here (not to succeed), then two
    seeds synchronously and through the sim profile (policy node, controller node, franky-sim). The stack must
    run it as it runs D-Ma: the policy node loads it and streams chunks every episode, the controller keeps
    every command within the FR3's limits, and no episode ends in an error."""
    from mail_policy_node.commands import demos as demos_cmd
    from mail_policy_node.commands import train as train_cmd
    from mail_policy_node.model.checkpoint import read_config

    assert demos_cmd.main(["--task", "reach", "--episodes", "20", "--out", str(tmp_path / "demos"),
                           "--workers", "2"]) == 0
    config = Path(__file__).resolve().parents[2] / "mail_bringup" / "config" / "train" / "reach_dma_bc_cpu.yaml"
    run = tmp_path / "run"
    assert train_cmd.main([str(config), f"data.bags=[{tmp_path / 'demos' / 'reach'}]", "policy.backbone=DP-UNet",
                           "policy.head=DDPM", "train.steps=200", "train.val_every=200", "train.ckpt_every=200",
                           f"data.cache_dir={tmp_path / 'cache'}", f"out={run}", "--no-progress"]) == 0
    cfg, _, _ = read_config(run / "final")
    assert (cfg.backbone.variant, cfg.backbone.head) == ("dp_unet", "ddpm")
    out = tmp_path / "eval"
    assert eval_cmd.main(["--checkpoint", str(run / "final"), "--task", "reach", "--episodes", "2", "--seed", "1000",
                          "--pictures", "0", "--out", str(out), "--no-progress", "--through-stack"]) == 0
    r = json.loads((out / "fidelity.json").read_text())
    print(fidelity.markdown(r))
    k = r["stack"]
    assert k["episodes"] == 2 and r["comparison"]["same_seeds"]
    for row in r["per_seed"]:
        assert row["stack"]["ended_by"] in fidelity.STACK_ENDINGS and row["stack"]["ended_by"] != "error", row
        assert row["stack"]["chunks"] > 0 and not row["stack"]["error"], row
    assert k["inference_p50_ms"] > 0 and k["position_violations"] == 0
    assert k["max_velocity_ratio"] <= 1.0 + 1e-9 and k["max_acceleration_ratio"] <= 1.0 + 1e-9, k


def test_command_accelerations_skip_commands_the_observer_did_not_get():
    """A loaded machine's observer drops command messages from its queue: the velocities on either side of
    the gap, differenced over one control period, read as 8-22x the acceleration limit in a closed loop
    whose filter never exceeded it. Pairs further apart than 1.5 periods are left out; consecutive ones
    are differenced as the filter limits them."""
    from mail_bringup.closed_loop import command_accelerations

    dq = np.zeros((6, 7))
    dq[:, 0] = [0.0, 0.01, 0.02, 0.2, 0.21, 0.5]
    stamps = np.array([0.0, 0.01, 0.02, 0.08, 0.09, 0.1])  # three commands lost between 0.02 and 0.08
    ddq = command_accelerations(dq, stamps, 100.0)
    assert ddq.shape == (5, 7)
    assert ddq[:, 0] == pytest.approx([1.0, 1.0, 0.0, 1.0, 29.0])  # the last pair is consecutive: reported
    # a controller keeping to an arm at a third of real time: its cycles 30 ms apart, one command lost
    paced = command_accelerations(dq, np.array([0.0, 0.03, 0.06, 0.12, 0.15, 0.18]), 100.0)
    assert paced[:, 0] == pytest.approx([1.0, 1.0, 0.0, 1.0, 29.0])


def test_the_demo_says_when_the_simulated_arm_could_not_keep_real_time(capsys):
    """`mail-il demo` prints the closed loop's pace from the same report (ClosedLoopReport.sim_per_wall, the
    one place it is computed) and says NOT real time under fidelity's threshold."""
    from mail_policy_node.commands import demo

    _sync_summary, _sync_eps, report = _results()
    for pace, said, world_clock in ((0.36, True, False), (0.95, False, False), (0.36, False, True)):
        report.on_world_clock = world_clock  # on the world's clock a slow machine's plans keep the arm's pace
        report.episodes = [_ep(1000, True, duration_s=4.0, sim_duration_s=4.0 * pace),
                           EpisodeResult.errored(1001, "no end")]
        s = dict(report.summary(), timings=dict(demos_s=1.0, train_s=2.0, closed_loop_s=3.0))
        assert s["sim_per_wall"] == pytest.approx(pace)
        demo.print_summary(s)
        line = next(x for x in capsys.readouterr().out.splitlines() if "simulated s per wall s" in x)
        assert ("NOT real time" in line) is said, line
