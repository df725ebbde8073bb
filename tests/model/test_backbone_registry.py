"""A backbone is added in one place, model/backbone_registry.py: one register_backbone entry makes it a
preset, a training-config name with its sizes, a benchmark row and a checkpoint the budget can count.
Shown with a small backbone registered here (and removed again by the fixture)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mail_policy_node.model import backbone_registry as registry
from mail_policy_node.model.backbones import BackboneConfig, build_backbone, count_parameters

D = 32


class PooledMLP(nn.Module):
    """The smallest honest backbone: each action slot (the embedded noisy actions for DDPM, learnable
    queries for BC) plus the mean of the observation tokens (and the time embedding), through n_layers
    residual MLP layers. Same call as DMamba / DTransformer: (obs (B, N, D), actions, time) -> (B, J, D)."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if cfg.head == "bc":
            self.queries = nn.Parameter(torch.randn(1, cfg.action_horizon, d) * 0.02)
        self.layers = nn.ModuleList(nn.Linear(d, d) for _ in range(cfg.n_layers))

    def forward(self, obs: Tensor, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        if self.cfg.head == "ddpm" and (actions is None or time is None):
            raise ValueError("a DDPM backbone needs the embedded noisy actions and the time embedding")
        slots = actions if self.cfg.head == "ddpm" else self.queries.expand(obs.shape[0], -1, -1)
        context = obs.mean(1, keepdim=True) + (time[:, None] if time is not None else 0)
        x = slots + context
        for layer in self.layers:
            x = x + torch.nn.functional.gelu(layer(x))
        return x


def pooled_mlp_params(b: BackboneConfig) -> int:
    return b.n_layers * (b.d_model * b.d_model + b.d_model) + (b.action_horizon * b.d_model if b.head == "bc" else 0)


@pytest.fixture
def pooled_mlp():
    """D-MLP registered for the test; the registry as it was afterwards."""
    before = registry.backbone_variants()
    family = registry.register_backbone(
        variant="d_mlp", name="D-MLP", module=PooledMLP, mamba=False, encoder_decoder=False,
        paper_depths={"ddpm": dict(n_layers=3), "bc": dict(n_layers=3)},
        reference_params={"ddpm": 3 * (128 * 128 + 128), "bc": 3 * (128 * 128 + 128) + 5 * 128},
        parameter_count=pooled_mlp_params, size_depths={"small": dict(n_layers=2), "tiny": dict(n_layers=1)})
    try:
        yield family
    finally:
        registry.unregister_backbone("d_mlp")
        assert registry.backbone_variants() == before


def test_the_shipped_families_keep_their_checkpoint_names():
    """Checkpoints store these strings: the registry must not change them."""
    assert registry.backbone_variants() == ("d_ma", "ed_ma", "d_tr", "ed_tr", "dp_unet")
    assert registry.streaming_variants() == ("d_ma", "ed_ma")
    assert [registry.backbone_by_name(n).variant for n in ("D-Ma", "ed-ma", "D-TR", "ED-Tr", "dp-unet")] == \
        ["d_ma", "ed_ma", "d_tr", "ed_tr", "dp_unet"]


def test_a_registered_backbone_has_presets_and_builds(pooled_mlp):
    from mail_policy_node.model.presets import backbone_preset, preset_names, reference_params

    assert {"d_mlp_ddpm", "d_mlp_bc"} <= set(preset_names())
    assert not any(n.startswith("d_mlp") and n.endswith("_stream") for n in preset_names())  # not Mamba
    for name in ("d_mlp_ddpm", "d_mlp_bc"):
        cfg = backbone_preset(name)
        model = build_backbone(cfg)
        assert isinstance(model, PooledMLP) and cfg.n_layers == 3 and not cfg.is_mamba
        assert count_parameters(model) == reference_params()[name] == pooled_mlp_params(cfg)
    with pytest.raises(ValueError, match="unknown backbone preset 'd_mlp_bc_stream'"):
        backbone_preset("d_mlp_bc_stream")
    with pytest.raises(ValueError, match="'streaming' exists for d_ma and ed_ma only, got variant 'd_mlp'"):
        BackboneConfig(variant="d_mlp", layout="streaming")


def test_the_training_config_takes_it_by_name_with_its_sizes(pooled_mlp):
    from mail_policy_node.model.policy import MailPolicy
    from mail_policy_node.training.config import ConfigError, TrainConfig
    from mail_policy_node.training.trainer import make_policy_config, make_spec

    cfg = TrainConfig.from_dict({"policy": {"backbone": "d-mlp", "head": "BC", "size": "small", "obs_horizon": 2},
                                 "data": {"image_size": [32, 32], "use_joint_state": True}})
    assert cfg.policy.variant == "d_mlp"
    pc = make_policy_config(cfg, make_spec(cfg, tuple(f"j{i}" for i in range(8))))
    assert (pc.backbone.variant, pc.backbone.n_layers, pc.backbone.d_model) == ("d_mlp", 2, 64)  # "small"
    policy = MailPolicy(pc)
    batch = dict(images={c: torch.rand(2, 2, 3, 32, 32) for c in pc.spec.camera_names},
                 state=torch.randn(2, 2, pc.spec.state_dim), actions=torch.randn(2, pc.spec.action_horizon, 8))
    policy.set_normalization(torch.zeros(8), torch.ones(8), torch.full((8,), -3.0), torch.full((8,), 3.0),
                             torch.zeros(pc.spec.state_dim), torch.ones(pc.spec.state_dim))
    loss = policy(batch)
    loss.backward()
    assert torch.isfinite(loss) and policy.backbone.layers[0].weight.grad is not None
    with pytest.raises(ConfigError,
                       match="policy.backbone must be one of D-Ma, ED-Ma, D-Tr, ED-Tr, DP-UNet, D-MLP, got 'S4'"):
        TrainConfig.from_dict({"policy": {"backbone": "S4"}})


def test_the_model_bench_lists_and_measures_it(pooled_mlp):
    import argparse

    from mail_policy_node.commands.bench import bench_preset, default_presets
    from mail_policy_node.engine.bench import add_arguments

    assert {"d_mlp_ddpm", "d_mlp_bc"} <= set(default_presets())
    row = bench_preset("d_mlp_ddpm", 2, torch.device("cpu"), torch.float32, iters=1, train=True)
    assert row["variant"] == "d_mlp" and row["params"] == pooled_mlp_params(BackboneConfig(variant="d_mlp", n_layers=3))
    assert row["chunk_ms"] > 0 and row["train_step_ms"] > 0
    p = argparse.ArgumentParser()
    add_arguments(p)  # the engine bench compares streaming modes: only the streaming families
    assert p.parse_args([]).variants == "d_ma,ed_ma"


def test_its_checkpoints_are_counted_saved_and_loaded(pooled_mlp, tmp_path):
    from mail_policy_node.checkpoint_limits import estimate
    from mail_policy_node.model.checkpoint import load_checkpoint, save_checkpoint
    from mail_policy_node.model.policy import MailPolicy, PolicyConfig
    from mail_policy_node.spec import CameraSpec, FeatureSpec

    spec = FeatureSpec(cameras=(CameraSpec("agentview", 32, 32),), obs_horizon=2, action_horizon=3)
    cfg = PolicyConfig.make(spec, "d_mlp_ddpm", encoder=dict(base_width=16, camera_features=16, d_model=D, keypoints=4))
    policy = MailPolicy(cfg)
    a = spec.action_dim
    policy.set_normalization(torch.zeros(a), torch.ones(a), torch.full((a,), -3.0), torch.full((a,), 3.0))
    assert estimate(cfg)[0] == count_parameters(policy)  # the budget counts it before anything is built
    save_checkpoint(policy, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.describe()["variant"] == "d_mlp" and isinstance(loaded.backbone, PooledMLP)
    for k, v in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_a_backbone_is_registered_once_and_gone_when_unregistered(pooled_mlp):
    common = dict(module=PooledMLP, mamba=False, encoder_decoder=False, paper_depths={"bc": {}},
                  reference_params={"bc": 1.0}, parameter_count=pooled_mlp_params)
    with pytest.raises(ValueError, match="variant 'd_mlp' is registered already"):
        registry.register_backbone(variant="d_mlp", name="Other", **common)
    with pytest.raises(ValueError, match="name 'd-mlp' is taken by variant 'd_mlp'"):
        registry.register_backbone(variant="other", name="d-mlp", **common)
    with pytest.raises(ValueError, match="same heads"):
        registry.register_backbone(variant="other", name="Other", **{**common, "reference_params": {"ddpm": 1.0}})
    with pytest.raises(ValueError, match="lower-case identifier"):
        registry.register_backbone(variant="x_stream", name="X", **common)
    assert "other" not in registry.backbone_variants()


def test_an_unknown_backbone_is_refused_naming_the_registered_ones():
    with pytest.raises(ValueError,
                       match=r"variant must be one of \('d_ma', 'ed_ma', 'd_tr', 'ed_tr', 'dp_unet'\), got 'd_mlp'"):
        BackboneConfig(variant="d_mlp")  # the fixture's backbone is gone again
    with pytest.raises(ValueError, match="unknown backbone 'S4'; registered: D-Ma, ED-Ma, D-Tr, ED-Tr, DP-UNet"):
        registry.backbone_by_name("S4")
