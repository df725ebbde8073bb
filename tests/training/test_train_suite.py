"""scripts/gpu/train_suite.py's stage runner: a failing stage is started again as often as asked, its failures
kept beside the result; a stage that keeps failing ends failed; none is retried unless asked."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

GPU = Path(__file__).resolve().parents[2] / "scripts" / "gpu"


def _module():
    sys.path.insert(0, str(GPU))
    try:
        spec = importlib.util.spec_from_file_location("train_suite", GPU / "train_suite.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(GPU))


def _fails_first(marker: Path) -> list[str]:
    """A command that fails the first time it runs (no marker yet) and succeeds after."""
    return [sys.executable, "-c", f"import pathlib, sys; m = pathlib.Path({str(marker)!r}); ok = m.exists(); "
            "m.touch(); print('second' if ok else 'first'); sys.exit(0 if ok else 3)"]


def test_a_failed_stage_is_retried_and_its_failure_kept(tmp_path):
    ts = _module()
    cmds = [("flaky", _fails_first(tmp_path / "m1"), tmp_path / "flaky.log"),
            ("bad", [sys.executable, "-c", "import sys; sys.exit(5)"], tmp_path / "bad.log"),
            ("good", [sys.executable, "-c", "print('fine')"], tmp_path / "good.log")]
    done = ts.run_all(cmds, parallel=2, deadline=time.time() + 60, retries=1)
    assert done["flaky"]["rc"] == 0 and [f["rc"] for f in done["flaky"]["failures"]] == [3]
    assert "first" in done["flaky"]["failures"][0]["tail"]
    assert (tmp_path / "flaky.log").read_text().strip() == "second"  # the log is the run that counts
    assert done["bad"]["rc"] == 5 and [f["rc"] for f in done["bad"]["failures"]] == [5, 5]
    assert done["good"] == dict(rc=0, seconds=done["good"]["seconds"], log=str(tmp_path / "good.log"))


def test_no_retry_unless_asked(tmp_path):
    ts = _module()
    done = ts.run_all([("flaky", _fails_first(tmp_path / "m"), tmp_path / "f.log")], parallel=1,
                      deadline=time.time() + 60)
    assert done["flaky"]["rc"] == 3 and len(done["flaky"]["failures"]) == 1
