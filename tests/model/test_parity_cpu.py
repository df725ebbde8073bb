"""CPU twin of scripts/gpu/model_parity.py: the same comparison function in degraded mode
(vectorised scan and PyTorch step path against the sequential reference)."""

import json

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def parity():
    return load_script("scripts/gpu/model_parity.py")


def test_degraded_parity_passes(parity):
    result = parity.run_parity("degraded", batch=2, seqlen=7)
    failed = [c for c in result["checks"] if not c["passed"]]
    assert result["ok"], failed
    names = {c["name"] for c in result["checks"]}
    assert {"step() token by token vs full forward", "continue from state vs full forward",
            "ED-Ma streaming observe/act vs reference full forward"} <= names


def test_cli_writes_json_and_exits_non_zero_on_failure(parity, tmp_path):
    out = tmp_path / "parity.json"
    # tolerance 0: float differences of ~1e-8 must now count as failures
    assert parity.main(["--mode", "degraded", "--tol", "0", "--stack-tol", "0", "--batch", "1", "--seqlen", "4",
                        "--out", str(out)]) == 1
    result = json.loads(out.read_text())
    assert result["ok"] is False and any(not c["passed"] for c in result["checks"])
    assert result["environment"]["torch"]
    if not parity.environment()["sequence_kernels"]:
        assert parity.main(["--mode", "kernels"]) == 2


@pytest.mark.gpu
def test_kernel_parity_on_gpu(parity):
    """The GPU run itself (skipped without CUDA + mamba-ssm): same function, kernels mode."""
    if not (parity.environment()["cuda"] and parity.environment()["sequence_kernels"]):
        pytest.skip("needs CUDA, mamba_ssm and causal_conv1d")
    result = parity.run_parity("kernels")
    assert result["ok"], [c for c in result["checks"] if not c["passed"]]
