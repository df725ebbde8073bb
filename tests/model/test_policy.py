"""Policy: training losses go down on a tiny batch for every variant and head, cached and uncached
inference agree with the same noise, stream history equals full recompute, validation messages."""

import pytest
import torch

from mail_policy_node.model.policy import MailPolicy, PolicyConfig
from mail_policy_node.spec import CameraSpec, FeatureSpec

from .tiny import policy_batch, tiny_policy, tiny_spec

PAPER = [f"{v}_{h}" for v in ("d_ma", "ed_ma", "d_tr", "ed_tr") for h in ("bc", "ddpm")]
STREAM = [f"{v}_{h}_stream" for v in ("d_ma", "ed_ma") for h in ("bc", "ddpm")]
ONE_CAM = FeatureSpec(cameras=(CameraSpec("agentview", 32, 32),), use_joint_state=True, obs_horizon=1,
                      action_horizon=2)  # the overfit tests' spec: as small as the layouts allow


def fixed_draw_loss(policy: MailPolicy, batch: dict, draws: int = 8) -> float:
    """Mean loss over fixed seeds, so DDPM's random steps and noise are the same before and after."""
    with torch.no_grad():
        losses = []
        for seed in range(draws):
            torch.manual_seed(1000 + seed)
            losses.append(policy(batch).item())
    return sum(losses) / draws


def overfit(policy: MailPolicy, batch: dict, steps: int, train_encoder: bool, lr: float = 1e-2) -> tuple[float, float]:
    """Adam on one batch; returns the fixed-draw loss before and after."""
    policy.encoder.requires_grad_(train_encoder)  # exercised once below; it dominates CPU time
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr, foreach=True)
    before = fixed_draw_loss(policy, batch)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, fixed_draw_loss(policy, batch)


@pytest.mark.parametrize("preset", PAPER + STREAM)
def test_tiny_model_overfits_tiny_batch(preset):
    stream = preset.endswith("_stream")
    policy = tiny_policy(preset, "stream" if stream else "window", spec=ONE_CAM, dropout=0.0).train()
    batch = policy_batch(policy, batch=1, steps=3 if stream else None, episode=stream)
    bc = policy.cfg.backbone.head == "bc"
    before, after = overfit(policy, batch, 40 if bc else 60, train_encoder=preset == "d_ma_bc")
    if bc:  # MSE on normalised actions, targets of variance ~1
        assert after < 0.05, f"{preset}: BC loss {before:.3f} -> {after:.4f}"
    else:  # epsilon MSE at random steps cannot reach 0 on a tiny budget: demand a clear drop
        assert after < 0.6 * before, f"{preset}: DDPM loss {before:.3f} -> {after:.4f}"


@pytest.mark.parametrize("preset", ["d_ma_ddpm_stream", "ed_ma_ddpm_stream", "ed_ma_bc_stream"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_cached_prefix_equals_full_recompute_with_same_noise(preset, sampler):
    policy = tiny_policy(preset).eval()
    batch = policy_batch(policy)
    kw = dict(sampler=sampler)
    cached = policy.predict_chunk(batch, generator=torch.Generator().manual_seed(7), use_cache=True, **kw)
    full = policy.predict_chunk(batch, generator=torch.Generator().manual_seed(7), use_cache=False, **kw)
    assert cached.shape == (2, 3, 8)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["d_ma_ddpm_stream", "ed_ma_bc_stream"])
def test_stream_history_equals_recompute_over_the_whole_prefix(preset):
    policy = tiny_policy(preset, "stream").eval()
    ep = policy_batch(policy, steps=3)
    policy.reset()
    with torch.no_grad():
        all_tokens = policy._tokens(ep)  # goal + every step's tokens
        p = policy.cfg.encoder.tokens_per_step
        for k in range(3):
            step = dict(images={c: v[:, k:k + 1] for c, v in ep["images"].items()}, state=ep["state"][:, k:k + 1],
                        goal=ep["goal"])
            got = policy.predict_chunk(step, generator=torch.Generator().manual_seed(k))
            prefix = all_tokens[:, :1 + (k + 1) * p]
            ref = policy.sample_with(lambda x, t: policy.backbone(prefix, x, t), 2, None,  # noqa: B023 - called now
                                 torch.Generator().manual_seed(k), None)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", PAPER)
def test_predict_chunk_shapes_in_robot_units(preset):
    policy = tiny_policy(preset).eval()
    out = policy.predict_chunk(policy_batch(policy, batch=3), generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 8) and torch.isfinite(out).all()
    if policy.is_ddpm:  # x0 clamped to [-3, 3] in robot units -> normalised range
        assert out.min() >= -3 - 1e-4 and out.max() <= 3 + 1e-4


def test_episode_loss_respects_action_mask():
    policy = tiny_policy("d_ma_bc_stream", "stream")
    batch = policy_batch(policy, steps=3, episode=True)
    batch["action_mask"] = torch.ones(2, 3, 3, dtype=torch.bool)
    full = policy(batch)
    batch["action_mask"][:, 2] = False
    batch["actions"][:, 2] = 1e3  # masked targets cannot matter
    assert torch.isfinite(policy(batch)) and policy(batch) != full


def test_validation_and_missing_normalisation():
    spec = tiny_spec()
    cfg = PolicyConfig.make(spec, "d_ma_bc", encoder=dict(base_width=16, d_model=32), n_layers=1)
    with pytest.raises(ValueError, match="history 'stream' needs a streaming layout"):
        PolicyConfig(cfg.spec, cfg.backbone, cfg.encoder, history="stream")
    from dataclasses import replace
    with pytest.raises(ValueError, match="backbone.obs_steps = 4 does not match spec.obs_horizon = 2"):
        PolicyConfig(cfg.spec, replace(cfg.backbone, obs_steps=4), cfg.encoder)
    policy = MailPolicy(cfg)
    with pytest.raises(RuntimeError, match="normalisation missing: action_mean"):
        policy.predict_chunk(policy_batch(tiny_policy("d_ma_bc")))
    with pytest.raises(ValueError, match="pass state_mean and state_std"):
        policy.set_normalization([0] * 8, [1] * 8, [-1] * 8, [1] * 8)
