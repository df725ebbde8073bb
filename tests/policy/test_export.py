"""`mail-il export`: a checkpoint re-saved with fp16 weights is half the size, loads through every
check, and acts like the original within fp16 rounding."""

import json

import numpy as np

from mail_policy_node.cli import main
from mail_policy_node.engine.engine import EngineConfig, InferenceEngine
from mail_policy_node.engine.inputs import Observation
from mail_policy_node.model.checkpoint import load_checkpoint, policy_id
from tests.policy.ckpts import SIZE, make_checkpoint


def _chunks(folder, steps=6):
    engine = InferenceEngine(load_checkpoint(folder), EngineConfig())
    rng = np.random.default_rng(0)
    out = []
    for i in range(steps):
        images = {c: rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for c in ("agentview", "wrist")}
        out.append(engine.step(Observation(stamp=0.1 * i, images=images, state=np.linspace(-0.5, 0.5, 8))).actions)
    return np.stack(out)


def test_fp16_export_is_smaller_loads_and_acts_like_the_original(tmp_path, capsys):
    src = make_checkpoint(tmp_path / "src", seed=3)
    dst = tmp_path / "half"
    assert main(["export", src, str(dst)]) == 0
    assert "float16" in capsys.readouterr().out
    size = lambda f: (f / "model.safetensors").stat().st_size  # noqa: E731
    assert size(dst) < 0.6 * size(tmp_path / "src")
    header_len = int.from_bytes((dst / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((dst / "model.safetensors").read_bytes()[8:8 + header_len])
    policy = load_checkpoint(src)
    params = {name for name, _ in policy.named_parameters()}
    dtypes = {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert all(dtypes[k] == "F16" for k in params)
    buffers = {k for k in dtypes if k not in params}
    assert buffers and all(dtypes[k] != "F16" for k in buffers)  # normalisation statistics stay exact
    meta = json.loads((dst / "config.json").read_text())["metadata"]
    assert meta["exported_from"] == policy_id(src) and policy_id(dst) != policy_id(src)
    a, b = _chunks(src), _chunks(dst)
    assert np.all(np.isfinite(b))
    assert np.max(np.abs(a - b)) < 1e-2 * (1.0 + np.max(np.abs(a)))
