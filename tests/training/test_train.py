"""Training: normalisation in the checkpoint, determinism, exact resume, config and CLI errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mail_policy_node.commands import train as train_cmd
from mail_policy_node.model.checkpoint import load_checkpoint
from mail_policy_node.training.config import ConfigError, TrainConfig, apply_overrides, load_config
from mail_policy_node.training.trainer import Trainer

from .conftest import tiny_config, write_bag


def _train(bag_dir, tmp_path, name, resume=None, **over):
    cfg = TrainConfig.from_dict(tiny_config([bag_dir], tmp_path / name, tmp_path / "cache", **over))
    trainer = Trainer(cfg, resume=resume, progress=False)
    return trainer, trainer.run()


def _weights(folder) -> dict:
    return load_file(str(folder / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_normalisation_is_computed_on_train_split_stored_and_applied(bag_dir, tmp_path):
    trainer, summary = _train(bag_dir, tmp_path, "run")
    policy = load_checkpoint(summary["final_checkpoint"])
    train_actions = np.concatenate([e.actions for e in trainer.data.train])
    np.testing.assert_allclose(policy.action_mean.numpy(), train_actions.mean(0), rtol=1e-5)
    np.testing.assert_allclose(policy.action_std.numpy(), train_actions.std(0).clip(1e-6), rtol=1e-5)
    normed = policy.normalize_actions(torch.as_tensor(train_actions))
    np.testing.assert_allclose(normed.mean(0).numpy(), 0, atol=1e-4)
    assert policy.metadata["training"]["normalisation"]["action_mean"][0] == pytest.approx(train_actions[:, 0].mean())
    assert (tmp_path / "run" / "summary.json").is_file() and summary["steps"] == 3
    # the run's config.yaml is YAML (it was JSON under that name) and trains the same run again
    written = (tmp_path / "run" / "config.yaml").read_text()
    assert written.startswith("# the configuration") and written.splitlines()[1].startswith("data:")
    assert load_config(tmp_path / "run" / "config.yaml").to_dict() == trainer.cfg.to_dict()
    # and a picture of the loss curves
    assert summary["loss_plot"] == str(tmp_path / "run" / "loss.png")
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["final_val_loss"] is not None and np.isfinite(summary["final_train_loss"])
    assert summary["mamba_kernels"] is False  # a CPU run: the PyTorch path trained it


def test_relative_actions_are_trained_and_stored(bag_dir, tmp_path):
    # The checkpoint says its actions are offsets (the engine adds the state back: tests/engine) and
    # carries the offsets' statistics; without the joint state the config is refused.
    trainer, summary = _train(bag_dir, tmp_path, "rel", policy__relative_actions=True)
    policy = load_checkpoint(summary["final_checkpoint"])
    assert policy.cfg.spec.relative_actions and policy.cfg.spec.relative_index[0] == tuple(range(7))
    offsets = np.concatenate([trainer.data.relative.chunks(e).reshape(-1, 8) for e in trainer.data.train])
    np.testing.assert_allclose(policy.action_mean.numpy(), offsets.mean(0), rtol=1e-5, atol=1e-6)
    absolute = np.concatenate([e.actions for e in trainer.data.train])
    assert not np.allclose(policy.action_mean.numpy()[:7], absolute.mean(0)[:7])
    with pytest.raises(ConfigError, match="use_joint_state"):
        TrainConfig.from_dict(tiny_config([bag_dir], tmp_path / "x", tmp_path / "cache", data__use_joint_state=False,
                                          policy__relative_actions=True)).validate()


def test_two_runs_with_one_seed_give_identical_weights(bag_dir, tmp_path):
    _, _a = _train(bag_dir, tmp_path, "a")
    _, _b = _train(bag_dir, tmp_path, "b")
    assert _same(_weights(tmp_path / "a" / "final"), _weights(tmp_path / "b" / "final"))
    _, _c = _train(bag_dir, tmp_path, "c", train__seed=1)
    assert not _same(_weights(tmp_path / "a" / "final"), _weights(tmp_path / "c" / "final"))


@pytest.mark.parametrize("head,layout,history,shift", [("DDPM", "paper", "window", 0), ("BC", "streaming", "stream", 0),
                                                      ("BC", "paper", "window", 3)])
def test_resume_continues_exactly(bag_dir, tmp_path, head, layout, history, shift):
    # with augmentation too: the shifts are drawn from (seed, step), so a resumed run draws the same ones
    over = dict(policy__head=head, policy__layout=layout, policy__history=history, train__steps=4,
                train__ckpt_every=2, train__episodes_per_batch=2, train__augment_shift=shift)
    _train(bag_dir, tmp_path, "straight", **over)
    trainer, _ = _train(bag_dir, tmp_path, "split", **{**over, "train__steps": 2})
    assert trainer.use_ema == (head == "DDPM")
    state = json.loads((tmp_path / "split" / "checkpoints" / "step_0000002" / "train_state.json").read_text())
    assert state["step"] == 2 and state["param_groups"][0]["lr"] == 5e-4
    assert not list((tmp_path / "split").rglob("*.pt"))  # no pickles anywhere
    _resumed, summary = _train(bag_dir, tmp_path, "split", resume="auto", **over)
    assert summary["steps_this_run"] == 2 and summary["steps"] == 4
    final = _weights(tmp_path / "straight" / "final")
    assert _same(final, _weights(tmp_path / "split" / "final"))
    raw_a = load_file(str(tmp_path / "straight" / "final" / "train_state.safetensors"))
    raw_b = load_file(str(tmp_path / "split" / "final" / "train_state.safetensors"))
    assert _same(raw_a, raw_b)  # raw weights, EMA shadow, Adam moments, RNG state


def test_best_is_the_policy_at_the_lowest_validation_loss_and_survives_resume(bag_dir, tmp_path):
    """OUT/best holds the weights of the validation with the lowest loss (not the last step's), a
    deployable checkpoint without training state; a run stopped and resumed picks the same one."""
    over = dict(train__steps=8, train__val_every=1, train__ckpt_every=1, train__keep_checkpoints=10,
                train__lr=0.05)  # a large step: the validation loss goes up and down
    _, summary = _train(bag_dir, tmp_path, "straight", **over)
    vals = [(h["val_loss"], h["step"]) for h in summary["history"]]
    best_val, best_step = min(vals)
    assert summary["best"]["step"] == best_step and summary["best"]["val_loss"] == best_val
    assert best_step != 8, "the recipe should leave the lowest validation loss before the last step"
    best = tmp_path / "straight" / "best"
    assert sorted(p.name for p in best.iterdir()) == ["config.json", "model.safetensors"]
    assert _same(_weights(best), _weights(tmp_path / "straight" / "checkpoints" / f"step_{best_step:07d}"))
    assert not _same(_weights(best), _weights(tmp_path / "straight" / "final"))
    assert load_checkpoint(best).metadata["training"]["val_loss"] == best_val
    # stopped after the best step and resumed: the resumed run must not replace it with a worse one
    _train(bag_dir, tmp_path, "split", **{**over, "train__steps": best_step + 1})
    _, resumed = _train(bag_dir, tmp_path, "split", resume="auto", **over)
    assert resumed["best"] == {**summary["best"], "checkpoint": str(tmp_path / "split" / "best")}
    assert _same(_weights(tmp_path / "split" / "best"), _weights(best))
    # stopped after saving best/ but before the next step checkpoint: the state resumed from is older than
    # best/, and best/'s own validation loss is what a later step must beat
    shutil.rmtree(tmp_path / "split")
    _train(bag_dir, tmp_path, "split", **{**over, "train__steps": best_step + 1})
    for folder in (tmp_path / "split" / "checkpoints").glob("step_*"):
        if int(folder.name.split("_")[1]) >= best_step:
            shutil.rmtree(folder)
    _, resumed = _train(bag_dir, tmp_path, "split", resume="auto", **over)
    assert resumed["steps_this_run"] == 8 - (best_step - 1)
    assert resumed["best"]["step"] == best_step and _same(_weights(tmp_path / "split" / "best"), _weights(best))


def test_resume_refuses_a_different_model(bag_dir, tmp_path):
    _train(bag_dir, tmp_path, "run")
    with pytest.raises(ConfigError, match="policy config differs"):
        _train(bag_dir, tmp_path, "run", resume="auto", policy__action_horizon=4)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown keys in train: \\['stepz'\\]"):
        TrainConfig.from_dict({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match="policy.backbone must be one of"):
        TrainConfig.from_dict({"policy": {"backbone": "S4"}})
    with pytest.raises(ConfigError, match="needs policy.layout 'streaming'"):
        TrainConfig.from_dict({"policy": {"history": "stream"}})
    d = apply_overrides({"train": {"steps": 1}}, ["train.steps=7", "policy.head=BC", "data.image_size=[64, 64]"])
    assert d == {"train": {"steps": 7}, "policy": {"head": "BC"}, "data": {"image_size": [64, 64]}}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("policy: {head: BC}\ntrain: {steps: 5}\n")
    cfg = load_config(cfg_file, ["train.device=cuda"])
    assert cfg.policy.head == "BC" and cfg.train.steps == 5 and cfg.train.device == "cuda"


def test_on_off_settings_survive_yaml_booleans(tmp_path):
    """YAML reads a bare off / on as a boolean: `amp: off` in a file or `train.amp=off` on the command line
    (which failed a GPU run: 'train.amp must be auto, bf16 or off, got False') means the word."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train: {steps: 5, amp: off, ema: on}\n")
    cfg = load_config(cfg_file)
    assert (cfg.train.amp, cfg.train.ema) == ("off", "on")
    cfg = load_config(cfg_file, ["train.amp=off", "train.ema=off", "train.kernels=off"])
    assert (cfg.train.amp, cfg.train.ema, cfg.train.kernels) == ("off", "off", "off")
    with pytest.raises(ConfigError, match="train.amp must be auto, bf16 or off, got 'on'"):
        load_config(cfg_file, ["train.amp=on"])
    with pytest.raises(ConfigError, match="data.use_joint_state"):  # a real boolean setting stays one
        load_config(cfg_file, ["data.use_joint_state=off", "policy.relative_actions=true"])


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    """YAML 1.1 reads `1e-3` (no dot) as text: `train.lr=1e-3` failed a GPU run with a TypeError inside
    validation. A number setting given text reads it as the number; text that is none is refused by name."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train: {steps: 5, lr: 1e-3}\n")
    assert load_config(cfg_file).train.lr == pytest.approx(1e-3)
    cfg = load_config(cfg_file, ["train.lr=2e-4", "train.steps=7"])
    assert cfg.train.lr == pytest.approx(2e-4) and cfg.train.steps == 7
    with pytest.raises(ConfigError, match="train.lr must be a number, got 'fast'"):
        load_config(cfg_file, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="train.batch_size must be an integer, got '3e1'"):
        load_config(cfg_file, ["train.batch_size=3e1"])


def test_cli_trains_and_reports_clear_errors(bag_dir, tmp_path, capsys):
    cfg = tiny_config([bag_dir], tmp_path / "cli", tmp_path / "cache")
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    assert train_cmd.main([str(path), "train.steps=1", "--no-progress"]) == 0
    assert "checkpoint:" in capsys.readouterr().out
    broken = write_bag(tmp_path / "broken" / "b", cameras=("agentview",))
    assert train_cmd.main([str(path), f"data.bags=[{broken.parent}]", "--no-progress"]) == 2
    assert "lacks topic(s) ['/camera/wrist/image_raw']" in capsys.readouterr().err
    assert train_cmd.main([str(path), "train.epochs=0", "train.steps=0"]) == 2


@pytest.mark.parametrize("scan", ["auto", "parallel", "sequential"])
def test_every_scan_setting_builds_a_trainer(bag_dir, tmp_path, scan):
    # the names the config accepts are the ones the Mamba stack knows (a CUDA-only default once was not)
    cfg = TrainConfig.from_dict(tiny_config([bag_dir], tmp_path / "run", tmp_path / "cache", train__scan=scan))
    trainer = Trainer(cfg, progress=False)
    loss, _ = trainer.train_step(trainer._numpy_batch(trainer._rows(0), "train"))
    assert np.isfinite(loss)


def test_trains_on_hand_guided_demonstrations(tmp_path):
    """Bags with cameras and joint states but no commands train with data.action_topic=/joint_states: the
    checkpoint predicts joint targets and the gripper width, the stack's joint_position actions."""
    from mail_policy_node.data.bags import ARM_ACTION_NAMES

    root = tmp_path / "bags"
    for i, n in enumerate((9, 10, 11)):
        write_bag(root / f"ep{i}", lengths=(n,), actions=False)
    with pytest.raises(Exception, match="no messages on /mail/action_command"):
        _train(root, tmp_path, "commands")
    trainer, summary = _train(root, tmp_path, "guided", data__action_topic="/joint_states")
    policy = load_checkpoint(summary["final_checkpoint"])
    spec = policy.cfg.spec
    assert tuple(spec.action_names) == ARM_ACTION_NAMES and spec.action_space == "joint_position"
    # joint 1 of step k is k / 100 in these bags: the actions are the joints one step later
    first = trainer.data.train[0]
    np.testing.assert_allclose(first.actions[:, 0], first.state[:, 0] + 0.01, atol=1e-6)

