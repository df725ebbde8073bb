"""Checkpoints: exact round trip, content identity, and clear refusals of bad folders."""

import hashlib
import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from mail_policy_node.model.checkpoint import (CONFIG_NAME, WEIGHTS_NAME, CheckpointError, checkpoint_hash,
                                               load_checkpoint, policy_id, save_checkpoint)
from mail_policy_node.model.policy import MailPolicy

from .tiny import policy_batch, tiny_policy


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    policy = tiny_policy("ed_ma_ddpm_stream").eval()
    folder = tmp_path_factory.mktemp("ckpt") / "p"
    pid = save_checkpoint(policy, folder, metadata={"epochs": 3, "dataset": "tiny"})
    return policy, folder, pid


def copy_ckpt(src, dst):
    dst.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def rewrite(folder, tensors=None, config_edit=None):
    """Rewrite weights and/or config, keeping weights_sha256 consistent (so deeper checks are reached)."""
    config = json.loads((folder / CONFIG_NAME).read_text())
    if tensors is not None:
        data = st_save(tensors)
        (folder / WEIGHTS_NAME).write_bytes(data)
        config["weights_sha256"] = hashlib.sha256(data).hexdigest()
    if config_edit:
        config_edit(config)
    (folder / CONFIG_NAME).write_text(json.dumps(config))


def test_round_trip_reproduces_outputs_exactly(saved):
    policy, folder, pid = saved
    loaded = load_checkpoint(folder)
    assert pid == policy_id(folder) == checkpoint_hash(folder)[:16] and len(checkpoint_hash(folder)) == 64
    assert loaded.metadata["epochs"] == 3 and loaded.metadata["policy_id"] == pid
    assert loaded.describe()["variant"] == "ed_ma" and loaded.cfg == policy.cfg
    batch = policy_batch(policy)
    for use_cache in (True, False):
        a = policy.predict_chunk(batch, generator=torch.Generator().manual_seed(1), use_cache=use_cache)
        b = loaded.predict_chunk(batch, generator=torch.Generator().manual_seed(1), use_cache=use_cache)
        assert torch.equal(a, b)


def test_identity_is_content_hash(saved, tmp_path):
    _policy, folder, pid = saved
    assert save_checkpoint(load_checkpoint(folder), tmp_path / "again") == pid  # same content, same id
    other = tiny_policy("ed_ma_ddpm_stream")
    assert save_checkpoint(other, tmp_path / "other") != pid


def test_corrupted_weights_are_refused(saved, tmp_path):
    _, folder, _ = saved
    bad = copy_ckpt(folder, tmp_path / "bad")
    data = bytearray((bad / WEIGHTS_NAME).read_bytes())
    data[-5] ^= 0xFF  # one flipped bit pattern inside tensor data
    (bad / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the weights_sha256"):
        load_checkpoint(bad)
    data[8:20] = b"\xff" * 12  # garbage in the header
    (bad / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt header"):
        load_checkpoint(bad)


def test_truncated_weights_are_refused(saved, tmp_path):
    _, folder, _ = saved
    bad = copy_ckpt(folder, tmp_path / "bad")
    data = (bad / WEIGHTS_NAME).read_bytes()
    (bad / WEIGHTS_NAME).write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)
    (bad / WEIGHTS_NAME).write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)
    (bad / WEIGHTS_NAME).write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(bad)


def test_wrong_architecture_is_refused(saved, tmp_path):
    _, folder, _ = saved
    bad = copy_ckpt(folder, tmp_path / "bad")
    rewrite(bad, config_edit=lambda c: c["policy"]["backbone"].update(n_layers=3))
    with pytest.raises(CheckpointError, match=r"does not fit the config's architecture: missing tensors "
                                              r"\['backbone.decoder.layers.2"):
        load_checkpoint(bad)
    bad2 = copy_ckpt(folder, tmp_path / "bad2")
    rewrite(bad2, config_edit=lambda c: c["policy"]["backbone"].update(d_state=4))
    with pytest.raises(CheckpointError, match=r"stored != expected shape\): "
                                              r"backbone.encoder.layers.0.mixer.A_log: \(64, 8\) != \(64, 4\)"):
        load_checkpoint(bad2)


def test_unknown_and_missing_tensors_are_refused(saved, tmp_path):
    policy, folder, _ = saved
    tensors = {k: v.contiguous() for k, v in policy.state_dict().items()}
    bad = copy_ckpt(folder, tmp_path / "bad")
    rewrite(bad, tensors={**tensors, "backbone.extra": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unknown tensors \['backbone.extra'\]"):
        load_checkpoint(bad)
    rewrite(bad, tensors={k: v for k, v in tensors.items() if k != "action_out.bias"})
    with pytest.raises(CheckpointError, match=r"missing tensors \['action_out.bias'\]"):
        load_checkpoint(bad)
    rewrite(bad, tensors={k: (torch.full_like(v, float("nan")) if k == "action_std" else v)
                          for k, v in tensors.items()})
    with pytest.raises(CheckpointError, match="no usable normalisation: action_std"):
        load_checkpoint(bad)
    rewrite(bad, tensors={**tensors, "action_out.bias": torch.zeros(8, dtype=torch.int64)})
    with pytest.raises(CheckpointError, match="dtype I64, expected a float type"):
        load_checkpoint(bad)


def test_pickles_are_never_loaded(saved, tmp_path):
    _, folder, _ = saved
    bad = copy_ckpt(folder, tmp_path / "bad")
    (bad / WEIGHTS_NAME).write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(CheckpointError, match="pickle / torch.save file"):
        load_checkpoint(bad)
    (bad / WEIGHTS_NAME).write_bytes(b"PK\x03\x04" + b"\0" * 100)  # torch.save's zip container
    with pytest.raises(CheckpointError, match="pickle / torch.save file"):
        load_checkpoint(bad)
    ok = copy_ckpt(folder, tmp_path / "ok")
    (ok / "extra.pt").write_bytes(b"\x80\x04.")
    with pytest.raises(CheckpointError, match=r"holds pickle files \['extra.pt'\]"):
        load_checkpoint(ok)
    (tmp_path / "policy.pt").write_bytes(b"\x80\x04.")
    with pytest.raises(CheckpointError, match="looks like a pickle"):
        load_checkpoint(tmp_path / "policy.pt")


def test_config_problems_are_named(saved, tmp_path):
    _, folder, _ = saved
    cases = [
        (lambda c: c.update(format_version=2), "unknown format_version 2"),
        (lambda c: c.update(format="other"), "not a 'mail-policy' config"),
        (lambda c: c["policy"]["backbone"].update(wings=2), r"unknown BackboneConfig fields: \['wings'\]"),
        (lambda c: c["policy"]["backbone"].update(variant="x"), "variant must be one of"),
        (lambda c: c["policy"].pop("encoder"), r"missing \['encoder'\]"),
        (lambda c: c["policy"]["spec"].update(obs_horizon=0), r"policy.spec.obs_horizon = 0 is outside \[1, 64\]"),
        (lambda c: c.update(extra=1), r"unknown top-level keys \['extra'\]"),
    ]
    for i, (edit, message) in enumerate(cases):
        bad = copy_ckpt(folder, tmp_path / f"bad{i}")
        rewrite(bad, config_edit=edit)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(bad)
    bad = copy_ckpt(folder, tmp_path / "notjson")
    (bad / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(bad)


def test_missing_files_size_bound_and_unnormalised_save(saved, tmp_path):
    _, folder, _ = saved
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    half = copy_ckpt(folder, tmp_path / "half")
    (half / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        load_checkpoint(half)
    with pytest.raises(CheckpointError, match="over the bound of 1000"):
        load_checkpoint(folder, max_weights_bytes=1000)
    fresh = MailPolicy(tiny_policy("d_ma_bc").cfg)
    with pytest.raises(CheckpointError, match="without normalisation"):
        save_checkpoint(fresh, tmp_path / "fresh")
