"""The `sim` profile closed loop with a trained checkpoint, every node its own process over DDS, the
controller driving franky-sim through franky: the arm goes to the task goal, and no command the
controller sent exceeds the configured limits.

The checkpoint is the one shipped in mail_bringup/checkpoints (trained by `mail-il train` with
mail_bringup/config/train/reach_dma_bc_cpu.yaml, exported with fp16 weights; see its README)."""

import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SHIPPED = Path(__file__).resolve().parents[2] / "mail_bringup" / "checkpoints" / "reach_dma_small"
SOLVED_SEEDS = (1000, 1003, 1005)


def test_trained_policy_reaches_toward_the_goal_within_limits(tmp_path):
    from mail_bringup.closed_loop import run_closed_loop

    root = tmp_path / "checkpoints"
    shutil.copytree(SHIPPED, root / "reach")
    lines = []
    # seeds the policy solves in the synchronous evaluation (`mail-il eval`, see the checkpoint's
    # README): what is tested here is that the ROS stack carries that behaviour over, not the policy
    report = run_closed_loop(str(root), "reach", task="reach", seeds=SOLVED_SEEDS, log=lines.append)
    s = report.summary()
    print(s)
    assert len(report.episodes) == 3
    for e in report.episodes:
        # every episode ran and the arm moved toward the target
        assert e.start_distance is not None and e.min_distance is not None, lines
        assert e.min_distance < e.start_distance - 0.03, (e, lines)
        assert e.chunks > 0
        assert not e.controller_error, (e, lines)  # no reflex, no tracking error: the arm followed
    # most went at least halfway. Not all: on a loaded 2-core machine the latency doubles (chunks
    # planned from older frames) and this 80 % policy then stops short on one seed now and then
    halfway = [e.min_distance < 0.5 * e.start_distance for e in report.episodes]
    assert sum(halfway) >= 2, (report.episodes, lines)
    assert s["successes"] >= 1, s
    # safety: what the controller sent stayed inside the filter's limits
    assert s["position_violations"] == 0
    assert s["max_velocity_ratio"] <= 1.0 + 1e-6
    assert s["max_acceleration_ratio"] <= 1.0 + 1e-6
    assert s["watchdog_trips"] == 0, "chunks must keep up with execution in the sim profile"
    # the controller's cycles per limit reach the report (smoothing shows in every moving episode)
    assert s["limits"].get("jerk", 0) > 0 and s["limit_hits"] <= sum(s["limits"].values()), s["limits"]
    assert 0.0 < s["latency_p50_ms"] <= s["latency_p99_ms"]
