"""DDPM schedule, samplers with explicit noise, time embedding, EMA warm-up."""

import math

import pytest
import torch

from mail_policy_node.model.diffusion import DDPM, EMA, DiffusionConfig, TimeEmbedding, cosine_betas


def test_cosine_schedule():
    betas = cosine_betas(16)
    assert betas.shape == (16,) and betas.max() <= 0.999 and betas.min() > 0
    f = lambda t: math.cos((t / 16 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abs(float(torch.prod(1 - betas[:8])) - f(8) / f(0)) < 1e-9
    assert float(cosine_betas(4, max_beta=0.5).max()) == 0.5


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="ddim_steps must be in 1..16, got 20"):
        DiffusionConfig(ddim_steps=20)
    with pytest.raises(ValueError, match="sampler must be one of .* got 'euler'"):
        DiffusionConfig(sampler="euler")


def _denoiser():
    w = torch.randn(3, 3)
    return lambda x, t: torch.tanh(x @ w) * (t.float()[:, None, None] + 1) / 16


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_explicit_noise_and_generator_give_identical_samples(sampler):
    ddpm = DDPM(DiffusionConfig())
    den = _denoiser()
    low, high = torch.full((3,), -1.5), torch.full((3,), 1.5)
    shape = (2, 4, 3)
    run = ddpm.sample if sampler == "ddpm" else ddpm.sample_ddim
    noise = torch.randn(ddpm.noise_shape(shape, sampler), generator=torch.Generator().manual_seed(3))
    a = run(den, shape, low, high, noise=noise)
    b = run(den, shape, low, high, generator=torch.Generator().manual_seed(3))
    c = run(den, shape, low, high, noise=noise)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert a.shape == shape and a.min() >= -1.5 - 1e-5 and a.max() <= 1.5 + 1e-5  # x0 clamped at the end
    with pytest.raises(ValueError, match="noise must have shape"):
        run(den, shape, low, high, noise=torch.zeros(2, 2))


def test_loss_is_epsilon_mse_and_perfect_predictor_scores_zero():
    ddpm = DDPM(DiffusionConfig())
    x0 = torch.randn(8, 4, 3)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 16, (8,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    noisy = ddpm.add_noise(x0, t, eps)
    oracle = lambda x, tt: ((x - ddpm.alpha_bar[tt].sqrt()[:, None, None] * x0)  # noqa: E731
                            / (1 - ddpm.alpha_bar[tt]).sqrt()[:, None, None])
    assert ddpm.loss(oracle, x0, generator=torch.Generator().manual_seed(0)) < 1e-8
    torch.testing.assert_close(oracle(noisy, t), eps, atol=1e-4, rtol=1e-4)


def test_time_embedding_shapes():
    emb = TimeEmbedding(128, 128)
    assert [tuple(m.weight.shape) for m in emb.mlp if hasattr(m, "weight")] == [(256, 128), (128, 256)]
    assert emb(torch.arange(16)).shape == (16, 128)


def test_ema_warmup_and_average():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(model)
    assert ema.decay() == pytest.approx(0.1)
    ema.updates = 100
    assert ema.decay() == pytest.approx(101 / 110)
    ema.updates = 1791  # (1 + n) / (10 + n) reaches 0.995 here
    assert ema.decay() == 0.995
    ema = EMA(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    start = ema.shadow["weight"].clone()
    ema.update(model)  # decay 0.1
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * start + 0.9)
    target = torch.nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])
