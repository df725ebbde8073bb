"""scripts/gpu/train_suite.py's stage runner: a failing stage is started again as often as asked, its failures
kept beside the result; a stage that keeps failing ends failed; none is retried unless asked."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.scripts import load_script

SCRIPT = "scripts/gpu/train_suite.py"


def _fails_first(marker: Path) -> list[str]:
    """A command that fails the first time it runs (no marker yet) and succeeds after."""
    return [sys.executable, "-c", f"import pathlib, sys; m = pathlib.Path({str(marker)!r}); ok = m.exists(); "
            "m.touch(); print('second' if ok else 'first'); sys.exit(0 if ok else 3)"]


def test_a_failed_stage_is_retried_and_its_failure_kept(tmp_path):
    ts = load_script(SCRIPT)
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
    ts = load_script(SCRIPT)
    done = ts.run_all([("flaky", _fails_first(tmp_path / "m"), tmp_path / "f.log")], parallel=1,
                      deadline=time.time() + 60)
    assert done["flaky"]["rc"] == 3 and len(done["flaky"]["failures"]) == 1
