"""Only checkpoint folders inside the configured root can be named by the `checkpoint` parameter."""

import os

import pytest

from mail_policy_node.checkpoint_root import CheckpointRefused, resolve_checkpoint


def make_ckpt(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    return folder


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "ckpts"
    make_ckpt(r / "reach_v1")
    return r


def test_names_and_absolute_paths_inside_root_resolve(root):
    assert resolve_checkpoint(root, "reach_v1") == (root / "reach_v1").resolve()
    assert resolve_checkpoint(root, str(root / "reach_v1")) == (root / "reach_v1").resolve()


@pytest.mark.parametrize("name, why", [
    ("", "empty"),
    ("../outside", "outside the checkpoint root"),
    ("/etc", "outside the checkpoint root"),
    (".", "root itself"),
    ("missing", "not found"),
])
def test_refused_names(root, tmp_path, name, why):
    make_ckpt(tmp_path / "outside")
    with pytest.raises(CheckpointRefused, match=why):
        resolve_checkpoint(root, name)


def test_symlink_escaping_root_is_refused(root, tmp_path):
    make_ckpt(tmp_path / "evil")
    os.symlink(tmp_path / "evil", root / "innocent")
    with pytest.raises(CheckpointRefused, match="outside"):
        resolve_checkpoint(root, "innocent")
    (root / "half").mkdir()
    (root / "half" / "config.json").write_text("{}")
    os.symlink(tmp_path / "evil" / "model.safetensors", root / "half" / "model.safetensors")
    with pytest.raises(CheckpointRefused, match="links outside"):
        resolve_checkpoint(root, "half")


def test_pickle_file_and_incomplete_folders_are_refused(root):
    (root / "policy.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointRefused, match="folder"):
        resolve_checkpoint(root, "policy.pt")
    (root / "no_weights").mkdir()
    (root / "no_weights" / "config.json").write_text("{}")
    with pytest.raises(CheckpointRefused, match="model.safetensors"):
        resolve_checkpoint(root, "no_weights")


def test_no_root_configured_refuses_everything(root):
    with pytest.raises(CheckpointRefused, match="no checkpoint_root"):
        resolve_checkpoint("", "reach_v1")
