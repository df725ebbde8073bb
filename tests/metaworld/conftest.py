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
