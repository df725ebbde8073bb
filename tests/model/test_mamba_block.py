"""The Mamba v1 block: mamba-ssm's parameter layout, and every path against the full forward (fp32)."""

import copy

import pytest
import torch

from mail_policy_node.model.mamba import Mamba, MambaConfig, MambaState, init_linear_paper

# mamba_ssm.Mamba(d_model=128) parameters, names and shapes (mamba-ssm 1.2 / 2.x, Mamba v1)
MAMBA_SSM_128 = {
    "A_log": (256, 16), "D": (256,), "in_proj.weight": (512, 128), "conv1d.weight": (256, 1, 4),
    "conv1d.bias": (256,), "x_proj.weight": (40, 256), "dt_proj.weight": (256, 8), "dt_proj.bias": (256,),
    "out_proj.weight": (128, 256),
}
TOL = dict(atol=1e-5, rtol=1e-5)


def small(**kw):
    return Mamba(MambaConfig(d_model=16, d_state=8, **kw))


def test_parameters_match_mamba_ssm_layout():
    block = Mamba(MambaConfig(d_model=128))
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == MAMBA_SSM_128


def test_config_names_bad_values():
    with pytest.raises(ValueError, match="d_conv must be >= 2, got 1"):
        MambaConfig(d_conv=1)
    with pytest.raises(ValueError, match="dt_min <= dt_max"):
        MambaConfig(dt_min=0.5, dt_max=0.1)


def test_inits():
    block = Mamba(MambaConfig(d_model=128))
    dt = torch.nn.functional.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6  # Mamba's own dt range
    init_linear_paper(block)
    assert torch.all(block.dt_proj.bias == 0)  # the authors' quirk: dt starts at softplus(0)
    assert abs(block.in_proj.weight.std().item() - 0.02) < 0.002


@pytest.mark.parametrize("d_conv", [2, 4])
def test_step_and_continuation_match_full_forward(d_conv):
    block = small(d_conv=d_conv)
    x = torch.randn(3, 11, 16)
    with torch.no_grad():
        full = block(x)
        state = block.allocate_inference_cache(3)
        ys = []
        for t in range(11):
            y, state = block.step(x[:, t], state)
            ys.append(y)
        torch.testing.assert_close(torch.stack(ys, 1), full, **TOL)
        for cut in (1, 3, 7):
            ya, sa = block.forward_with_state(x[:, :cut])
            saved = copy.deepcopy(sa)
            yb, sb = block.forward_with_state(x[:, cut:], sa)
            torch.testing.assert_close(torch.cat([ya, yb], 1), full, **TOL)
            torch.testing.assert_close(sb.ssm, state.ssm, **TOL)
            torch.testing.assert_close(sb.conv, state.conv, **TOL)
            assert torch.equal(sa.ssm, saved.ssm) and torch.equal(sa.conv, saved.conv)  # functional



@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("emulate", [False, True], ids=["torch", "kernel_emulation"])
def test_forward_returns_a_tensor_and_forward_with_state_a_tuple(grad, emulate):
    """One return type per method whatever the arguments and the path (PyTorch, with and without grad,
    or the kernel-structured continue path), and forward's y is forward_with_state's, bit for bit."""
    block = small()
    block.kernel_emulation = emulate
    x = torch.randn(2, 5, 16)
    with torch.set_grad_enabled(grad):
        for state in (None, block.allocate_inference_cache(2)):
            y = block(x, state)
            assert type(y) is torch.Tensor and y.shape == x.shape
            out = block.forward_with_state(x, state)
            assert type(out) is tuple and len(out) == 2
            y2, new = out
            assert type(y2) is torch.Tensor and isinstance(new, MambaState)
            assert new.ssm.shape == (2, 32, 8) and new.conv.shape == (2, 32, 4)
            assert torch.equal(y, y2)
    with pytest.raises(TypeError):
        block(x, None, True)  # the former return_state flag is gone: an old call fails, not a silent change


def test_forward_states_gives_the_state_after_every_token():
    block = small()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        _, every = block.forward_states(x)
        for t in (0, 2, 5):
            _, s = block.forward_with_state(x[:, :t + 1])
            torch.testing.assert_close(every.ssm[:, :, t], s.ssm, **TOL)
            torch.testing.assert_close(every.conv[:, :, t], s.conv, **TOL)


def test_causal():
    block = small()
    x = torch.randn(2, 9, 16)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x)[:, :5], block(x2)[:, :5], atol=0, rtol=0)


def test_sequential_reference_and_parallel_agree_with_gradients():
    block = small()
    x = torch.randn(2, 10, 16)
    out = {}
    for impl in ("sequential", "parallel"):
        block.zero_grad()
        block.scan_impl = impl
        y = block(x)
        y.pow(2).sum().backward()
        out[impl] = (y.detach(), {k: p.grad.clone() for k, p in block.named_parameters()})
    torch.testing.assert_close(out["parallel"][0], out["sequential"][0], **TOL)
    for k in out["sequential"][1]:
        torch.testing.assert_close(out["parallel"][1][k], out["sequential"][1][k], **TOL)


def test_bf16_weights_keep_fp32_states():
    block = small().to(torch.bfloat16)
    x = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    y, s = block.forward_with_state(x)
    assert y.dtype == torch.bfloat16 and s.ssm.dtype == torch.float32 and s.conv.dtype == torch.float32
    y1, s1 = block.step(x[:, 0], block.allocate_inference_cache(2))
    assert y1.dtype == torch.bfloat16 and s1.ssm.dtype == torch.float32
