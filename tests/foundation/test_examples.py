"""examples/*.py run as a user runs them on a fresh clone (`python examples/X.py`, no arguments: the shipped
checkpoint, a demo recorded by the simulator, the dry-run arm), and print what they claim to show."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[-+\d.eE]+|nan|inf"


def run_example(name: str, tmp_path: Path, timeout: float = 120.0) -> str:
    # offscreen MuJoCo rendering; temporary bags and checkpoints under the test's own folder
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=timeout)
    assert done.returncode == 0, f"{name} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_policy_on_recorded_frames(tmp_path):
    out = run_example("policy_on_recorded_frames.py", tmp_path)
    assert re.search(r"^recorded .*: \d+ steps, success True$", out, re.M), out
    rows = re.findall(rf"^\s+(\d+)\s+({NUMBER})\s+({NUMBER})\s+fr3_joint[1-7]\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})"
                      rf"\s+({NUMBER})\s+({NUMBER})$", out, re.M)
    assert len(rows) > 10, out
    for k, (step, stamp, due, predicted, recorded, err, _, latency) in enumerate(rows):
        assert int(step) == k and float(due) == pytest.approx(float(stamp) + 0.1, abs=0.011)  # due one dt later
        assert math.isfinite(float(err)) and float(latency) > 0
        assert abs(float(predicted) - float(recorded)) >= float(err) - 1e-4  # the worst joint, the mean error
    mean = re.search(rf"^mean \|error\| over (\d+) steps: ({NUMBER}) rad", out, re.M)
    assert mean and int(mean[1]) == len(rows), out
    assert math.isfinite(float(mean[2])) and 0 < float(mean[2]) < 0.05, out  # the shipped policy: ~0.01 rad


@pytest.mark.slow
def test_dry_run_arm(tmp_path):
    out = run_example("dry_run_arm.py", tmp_path, timeout=60)
    assert "host='' dry_run=True connected=False" in out, out
    blocks = dict(re.findall(r"^(\S[^:\n]*): (.*\n(?:    .*\n)*)", out, re.M))
    nan = blocks["NaN (a broken policy)"]
    assert "'invalid_input': 40" in nan and "held" in nan and "now at rest" in nan, out
    assert "'workspace'" in blocks["TCP under the table"] and "held" in blocks["TCP under the table"], out
    far = blocks["1 rad on joint 1 at once"]
    assert "'velocity'" in far and "'gripper'" in far and "held" not in far, out
    moved = float(re.search(r"moved ([\d.]+) rad", far)[1])
    assert 0 < moved < 0.1, out  # 0.4 s at the lowest stage's 0.1 rad/s: nowhere near the 1 rad asked for
    assert "limit violations in the commands: 0" in out, out
    assert "sent to a robot: nothing (moves=False, franky imported: False)" in out, out


@pytest.mark.slow
def test_compare_checkpoints(tmp_path):
    out = run_example("compare_checkpoints.py", tmp_path)
    rows = re.findall(rf"^(reach_dma_small\S*)\s+(\d+)\s+(\d+)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})", out, re.M)
    assert [r[0] for r in rows] == ["reach_dma_small", "reach_dma_small_bf16"], out
    (_, obs_a, chunks_a, _, mae_a, _), (_, obs_b, chunks_b, _, mae_b, _) = rows
    assert obs_a == obs_b and int(obs_a) > 10 and chunks_a == chunks_b, out  # the same bag, a chunk per tick
    assert math.isfinite(float(mae_a)) and float(mae_b) == pytest.approx(float(mae_a), rel=0.1), out
    assert "x real time" in out, out
