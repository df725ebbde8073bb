"""Meta-World tests run under .venv-metaworld's Python (metaworld pins mujoco 3.3.0, the project 4.0.0):
`make metaworld-env` creates it, and `.venv-metaworld/bin/python -m pytest tests/metaworld` runs them
(`make test` does, after the main run: scripts/run_tests.sh). Under another Python the modules that
need Meta-World skip, saying which of the two is missing; test_state_names.py needs only the project.
Everything a test writes stays in its tmp_path; demos are 80 steps (the expert pushes the puck home by
about step 65), not the 200 of the benchmark, to keep the suite fast."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

ROOT = Path(__file__).resolve().parents[2]
MW_VENV = Path(os.environ.get("MAIL_METAWORLD_VENV", ROOT / ".venv-metaworld"))


def metaworld_skip_reason() -> str | None:
    """None when Meta-World runs in this interpreter, else why these tests skip."""
    if importlib.util.find_spec("metaworld") is not None:
        return None
    if not (MW_VENV / "bin" / "python").exists():
        return f"{MW_VENV} is missing: `make metaworld-env` creates it (Meta-World v3 has a venv of its own)"
    return (f"metaworld is not importable in {sys.executable}: these tests run under {MW_VENV}/bin/python "
            f"(`{MW_VENV}/bin/python -m pytest tests/metaworld`)")


def require_metaworld() -> None:
    """Skip the calling test module unless Meta-World runs here."""
    reason = metaworld_skip_reason()
    if reason:
        pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="session")
def push_demos(tmp_path_factory) -> Path:
    """Two expert demos of push (seeds 0 and 1, 80 steps) recorded by the command, as bags under OUT/push."""
    from mail_policy_node.benchmarks import metaworld as mw

    out = tmp_path_factory.mktemp("mw") / "demos"
    assert mw.main(["demos", "--task", "push", "--episodes", "2", "--steps", "80", "--out", str(out),
                    "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def push_bc_checkpoint(push_demos, tmp_path_factory) -> Path:
    """A tiny BC policy (deterministic: no sampling noise) trained 2 steps on the push demos with a goal token,
    as the benchmark's multi-task runs train (data.tasks names the demos' episode task, push-v3)."""
    from mail_policy_node.commands import train as train_cmd

    tmp = tmp_path_factory.mktemp("mw_bc")
    assert train_cmd.main([str(ROOT / "mail_bringup/config/train/metaworld_dma_ddpm_gpu.yaml"),
                           f"data.bags=[{push_demos}]", "data.tasks=[push-v3]", "data.image_size=[32, 32]",
                           f"data.cache_dir={tmp / 'cache'}", "policy.size=tiny", "policy.head=BC",
                           "policy.obs_horizon=2", "policy.action_horizon=3", "train.device=cpu", "train.steps=2",
                           "train.batch_size=8", "train.threads=1", f"out={tmp / 'run'}", "--no-progress"]) == 0
    return tmp / "run" / "final"
