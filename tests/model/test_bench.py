"""`mail-il bench model` runs end to end and writes its JSON (no timing assertions)."""

import json

from mail_policy_node.cli import main


def test_bench_model_quick_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "model", "--quick", "--presets", "d_tr_bc,d_ma_ddpm_stream", "--batch", "1,2", "--iters", "1",
               "--threads", "1", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    rows = {(r["preset"], r["batch"]): r for r in result["results"]}
    assert set(rows) == {("d_tr_bc", 1), ("d_tr_bc", 2), ("d_ma_ddpm_stream", 1), ("d_ma_ddpm_stream", 2)}
    for r in rows.values():
        assert r["forward_ms"] > 0 and r["chunk_ms"] > 0 and r["train_samples_per_s"] > 0
    assert rows[("d_ma_ddpm_stream", 1)]["layout"] == "streaming"
    assert "train samples/s" in capsys.readouterr().out


def test_bench_model_rejects_unknown_presets(capsys):
    assert main(["bench", "model", "--presets", "d_xx", "--quick"]) == 2
    assert "unknown presets ['d_xx']" in capsys.readouterr().out
