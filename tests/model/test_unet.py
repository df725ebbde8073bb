"""DP-UNet (model/unet.py, Chi et al.'s CNN Diffusion Policy as a backbone family): its parameter arithmetic
equals the built module for every size, any chunk length J works, the condition reaches the output, a tiny
policy trains, its checkpoint round-trips exactly and the engine runs it on the generic window path."""

from __future__ import annotations

import pytest
import torch

from mail_policy_node.checkpoint_limits import estimate, unet1d_params
from mail_policy_node.model.backbone_registry import backbone_by_name, backbone_family
from mail_policy_node.model.backbones import BackboneConfig, build_backbone, count_parameters
from mail_policy_node.model.presets import backbone_preset, preset_names, reference_params
from mail_policy_node.model.unet import KERNEL_SIZE, DPUNet, unet_widths
from mail_policy_node.spec import CameraSpec, FeatureSpec

from .test_policy import ONE_CAM, overfit
from .tiny import D, backbone_inputs, build, policy_batch, tiny_policy


def unet_config(**kw) -> BackboneConfig:
    """A small DP-UNet config: D 32, 3 levels of 32/64/128, K 3, P 2, a goal token, J 5."""
    base = dict(d_model=D, n_layers=3, expand=1, obs_steps=3, obs_tokens_per_step=2, goal_token=True,
                action_horizon=5)
    return backbone_preset("dp_unet_ddpm", **{**base, **kw})


def size_config(size: str, **kw) -> BackboneConfig:
    """The DP-UNet backbone a training config of ``size`` builds (training/trainer.make_policy_config)."""
    from mail_policy_node.training.config import SIZE_PRESETS

    depths = backbone_family("dp_unet").size_depths.get(size, {})
    return backbone_preset("dp_unet_ddpm", d_model=SIZE_PRESETS[size]["encoder"]["d_model"], **{**depths, **kw})


# ---- registration and sizes --------------------------------------------------------------------------------
def test_it_is_registered_as_a_ddpm_only_window_family():
    family = backbone_by_name("dp-unet")
    assert (family.variant, family.name, family.mamba, family.encoder_decoder) == ("dp_unet", "DP-UNet", False, False)
    assert "dp_unet_ddpm" in preset_names() and not any(n.startswith("dp_unet_bc") for n in preset_names())
    cfg = backbone_preset("dp_unet_ddpm")
    assert unet_widths(cfg) == [256, 512, 1024] and cfg.d_model == 128  # Chi et al.'s ConditionalUnet1D dims
    with pytest.raises(ValueError, match="variant 'dp_unet' has no head 'bc'; it has \\('ddpm',\\)"):
        BackboneConfig(variant="dp_unet", head="bc")
    with pytest.raises(ValueError, match="'streaming' exists for d_ma and ed_ma only, got variant 'dp_unet'"):
        BackboneConfig(variant="dp_unet", layout="streaming")
    with pytest.raises(ValueError, match="unknown backbone preset 'dp_unet_bc'"):
        backbone_preset("dp_unet_bc")


@pytest.mark.parametrize("size", ["paper", "small", "tiny"])
@pytest.mark.parametrize("k, p, goal", [(5, 1, False), (2, 2, True), (1, 1, False)])
def test_parameter_arithmetic_equals_the_built_module(size, k, p, goal):
    cfg = size_config(size, obs_steps=k, obs_tokens_per_step=p, goal_token=goal)
    with torch.device("meta"):  # the paper size has 72 M parameters: count them without memory
        model = build_backbone(cfg)
    assert isinstance(model, DPUNet)
    assert cfg.family.parameter_count(cfg) == count_parameters(model) > 0


@pytest.mark.parametrize("levels, expand, d", [(1, 1, 32), (4, 1, 16), (2, 3, 12)])  # 12: GroupNorm of 4 groups
def test_parameter_arithmetic_for_other_depths_and_widths(levels, expand, d):
    cfg = unet_config(n_layers=levels, expand=expand, d_model=d, n_heads=2)
    assert cfg.family.parameter_count(cfg) == count_parameters(build_backbone(cfg))


def test_reference_count_is_the_paper_preset_and_the_default_kernel_is_the_modules():
    cfg = backbone_preset("dp_unet_ddpm")
    assert reference_params()["dp_unet_ddpm"] == cfg.family.parameter_count(cfg) == 72_250_240
    assert unet1d_params(8, 16, 8, 2) == unet1d_params(8, 16, 8, 2, kernel=KERNEL_SIZE)


def test_the_policy_budget_counts_it_exactly_and_takes_the_paper_size_but_not_the_image_widths():
    from mail_policy_node.checkpoint_limits import MAX_PARAMS, CheckpointError, check_budget
    from mail_policy_node.model.policy import PolicyConfig

    policy = tiny_policy("dp_unet_ddpm", spec=ONE_CAM, expand=1)
    assert estimate(policy.cfg)[0] == count_parameters(policy)
    paper = PolicyConfig.make(FeatureSpec(), "dp_unet_ddpm")  # K 5, two cameras, ResNet-18 trunks: ~95 M
    assert check_budget(paper)[0] < MAX_PARAMS / 2
    with pytest.raises(CheckpointError, match="over the budget"):  # Chi et al.'s image dims 512/1024/2048
        check_budget(PolicyConfig.make(FeatureSpec(), "dp_unet_ddpm", expand=4))


# ---- shapes and conditioning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("j", [1, 2, 3, 5, 7, 8, 16])
@pytest.mark.parametrize("k", [1, 3])
def test_any_chunk_length(j, k):
    """J need not be a multiple of 2**(levels - 1): the up path crops to each level's length."""
    cfg = unet_config(action_horizon=j, obs_steps=k)
    obs, actions, time = backbone_inputs(cfg, batch=3)
    out = build(cfg)(obs, actions, time)
    assert out.shape == (3, j, D) and torch.isfinite(out).all()


def test_the_condition_and_the_actions_reach_the_output():
    cfg = unet_config(action_horizon=7)
    model = build(cfg)
    obs, actions, time = backbone_inputs(cfg)
    out = model(obs, actions, time)

    def changed(o=obs, a=actions, t=time):
        return (model(o, a, t) - out).abs().amax(dim=(0, 2))  # (J,): the change at each chunk position

    for i in (0, cfg.n_obs_tokens - 1):  # the goal token and the newest observation token
        o = obs.clone()
        o[:, i] += 1.0
        assert (changed(o=o) > 1e-4).all(), f"observation token {i}"
    assert (changed(t=time + 1.0) > 1e-4).all()
    a = actions.clone()
    a[:, -1] += 1.0  # the last action of an odd-length chunk (the step the up path crops around)
    assert changed(a=a)[-1] > 1e-4
    rows = model(torch.cat([obs, obs]), torch.cat([actions, actions]), torch.cat([time, time + 1.0]))
    assert torch.allclose(rows[:2], out, atol=1e-5) and not torch.allclose(rows[2:], out, atol=1e-3)


def test_it_refuses_what_it_cannot_use():
    cfg = unet_config()
    model = build(cfg)
    obs, actions, time = backbone_inputs(cfg)
    with pytest.raises(ValueError, match="diffusion policy: it needs the embedded noisy actions"):
        model(obs)
    with pytest.raises(ValueError, match="diffusion policy"):
        model(obs, actions, None)
    with pytest.raises(ValueError, match=f"expects {cfg.n_obs_tokens} observation tokens .* got 3"):
        model(obs[:, :3], actions, time)


# ---- training, checkpoints, the engine ---------------------------------------------------------------------
@pytest.mark.parametrize("levels, lr, steps, ratio", [(1, 3e-3, 60, 0.7), (2, 1e-3, 150, 0.9)])
def test_tiny_policy_trains_and_its_loss_drops(levels, lr, steps, ratio):
    """Adam on one batch of 16 windows (J 4), the encoder frozen: the fixed-draw DDPM loss drops. With a
    down and an up level it drops more slowly (Chi et al.'s structure: the full-resolution skip is unused,
    everything passes the stride-2 and transposed convs; GroupNorm over 4 steps): 1.01 -> 0.83 in 150 steps
    here (seeds 0-2: ratios 0.77-0.82), where one level goes 1.08 -> 0.55 in 60 (0.51-0.59)."""
    spec = FeatureSpec(cameras=(CameraSpec("agentview", 32, 32),), use_joint_state=True, obs_horizon=1,
                       action_horizon=4)
    policy = tiny_policy("dp_unet_ddpm", spec=spec, expand=1, n_layers=levels).train()
    assert isinstance(policy.backbone, DPUNet) and len(policy.backbone.up) == levels - 1
    before, after = overfit(policy, policy_batch(policy, batch=16), steps, train_encoder=False, lr=lr)
    assert after < ratio * before, f"{levels} levels: DDPM loss {before:.3f} -> {after:.4f}"


def test_checkpoint_round_trip_gives_identical_actions(tmp_path):
    from mail_policy_node.model.checkpoint import CONFIG_NAME, load_checkpoint, read_config, save_checkpoint

    policy = tiny_policy("dp_unet_ddpm", expand=1).eval()  # two cameras, joint state, goal, K 2, J 3
    save_checkpoint(policy, tmp_path / "dp")
    assert (tmp_path / "dp" / CONFIG_NAME).is_file() and (tmp_path / "dp" / "model.safetensors").is_file()
    cfg = read_config(tmp_path / "dp")[0]
    assert (cfg.backbone.variant, cfg.backbone.n_layers, cfg.backbone.expand) == ("dp_unet", 2, 1)
    loaded = load_checkpoint(tmp_path / "dp")
    assert isinstance(loaded.backbone, DPUNet) and loaded.cfg == policy.cfg
    batch = policy_batch(policy)
    for sampler in ("ddpm", "ddim"):
        a = policy.predict_chunk(batch, generator=torch.Generator().manual_seed(3), sampler=sampler)
        b = loaded.predict_chunk(batch, generator=torch.Generator().manual_seed(3), sampler=sampler)
        assert a.shape == (2, 3, policy.cfg.spec.action_dim) and torch.equal(a, b)


def test_a_bc_checkpoint_of_it_is_refused_with_a_reason(tmp_path):
    import json

    from mail_policy_node.model.checkpoint import CONFIG_NAME, CheckpointError, load_checkpoint, save_checkpoint

    save_checkpoint(tiny_policy("dp_unet_ddpm", spec=ONE_CAM, expand=1), tmp_path / "dp")
    config = json.loads((tmp_path / "dp" / CONFIG_NAME).read_text())
    config["policy"]["backbone"]["head"] = "bc"
    (tmp_path / "dp" / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="variant 'dp_unet' has no head 'bc'"):
        load_checkpoint(tmp_path / "dp")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_the_engine_runs_it_on_the_window_path(sampler):
    from mail_policy_node.engine import EngineConfig, InferenceEngine
    from mail_policy_node.engine.reference import reference_window_chunks

    from ..engine.helpers import run_episode
    from ..engine.helpers import tiny_policy as engine_policy
    from ..engine.helpers import tiny_spec as engine_spec

    policy = engine_policy("dp_unet", "ddpm", layout="paper", spec=engine_spec(k=3, j=5, cameras=1))
    engine = InferenceEngine(policy, EngineConfig(sampler=sampler))
    assert engine.describe()["path"] == "recompute" and not engine.cached
    actions, noise, log = run_episode(policy, "window", 6, sampler=sampler)
    assert actions.shape == (6, 2, 5, policy.cfg.spec.action_dim) and torch.isfinite(actions).all()
    assert actions.std() > 0
    ref = reference_window_chunks(policy, log, noise, sampler=sampler)
    assert (actions - ref).abs().max().item() < 1e-5


def test_the_training_config_takes_it_by_name_with_its_sizes():
    from mail_policy_node.training.config import ConfigError, TrainConfig
    from mail_policy_node.training.trainer import make_policy_config, make_spec

    cfg = TrainConfig.from_dict({"policy": {"backbone": "dp-unet", "size": "small", "obs_horizon": 2},
                                 "data": {"image_size": [32, 32]}})
    pc = make_policy_config(cfg, make_spec(cfg, tuple(f"j{i}" for i in range(8))))
    assert (pc.backbone.variant, pc.backbone.d_model, unet_widths(pc.backbone)) == ("dp_unet", 64, [128, 256])
    bc = TrainConfig.from_dict({"policy": {"backbone": "DP-UNet", "head": "BC"}, "data": {"image_size": [32, 32]}})
    with pytest.raises(ConfigError, match="unknown backbone preset 'dp_unet_bc'"):
        make_policy_config(bc, make_spec(bc, tuple(f"j{i}" for i in range(8))))
