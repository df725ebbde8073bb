"""The kernel-structured continue-from-state path (`Mamba._kernel_continue`), run on the CPU with PyTorch
stand-ins for the kernels (`kernel_emulation`), against the plain PyTorch reference paths (fp32, 1e-5).
On CUDA the same code calls causal_conv1d_fn, selective_scan_fn and selective_state_update; the GPU parity
script (scripts/gpu/model_parity.py) checks that."""

import copy

import pytest
import torch

from mail_policy_node.model import kernels
from mail_policy_node.model.diffusion import DDPM, DiffusionConfig
from mail_policy_node.model.mamba import Mamba, MambaConfig
from mail_policy_node.model.scan import selective_scan_sequential

from .tiny import backbone_inputs, build, tiny_backbone

TOL = dict(atol=1e-5, rtol=1e-5)
IMPLS = ["scan", "state_update", "auto"]  # auto: state_update up to 8 tokens, scan beyond


def block(d_conv=4):
    m = Mamba(MambaConfig(d_model=16, d_state=8, d_conv=d_conv))
    with torch.no_grad():  # move away from the init so that every term matters
        m.A_log.add_(0.3 * torch.randn_like(m.A_log))
        m.D.add_(torch.randn_like(m.D))
        m.conv1d.bias.normal_()
        m.dt_proj.bias.add_(torch.randn_like(m.dt_proj.bias))
    m.scan_impl = "sequential"
    return m


def emulated(m, impl):
    e = copy.deepcopy(m)
    e.kernel_emulation, e.continue_impl = True, impl
    return e


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cut,total", [(7, 13), (3, 4), (0, 6), (10, 11), (2, 14)])
def test_continue_matches_full_forward(impl, cut, total):
    m = block()
    x = torch.randn(3, total, 16)
    with torch.no_grad():
        y_full, s_full = m.forward_with_state(x)
        s0 = m.allocate_inference_cache(3)
        ya, sa = m.forward_with_state(x[:, :cut], s0) if cut else (x[:, :0], s0)
        sa_copy = copy.deepcopy(sa)
        e = emulated(m, impl)
        yb, sb = e.forward_with_state(x[:, cut:], sa)
        # the reference continue path too
        yr, _sr = m.forward_with_state(x[:, cut:], sa)
    torch.testing.assert_close(torch.cat([ya, yb], 1), y_full, **TOL)
    torch.testing.assert_close(yb, yr, **TOL)
    torch.testing.assert_close(sb.ssm, s_full.ssm, **TOL)
    torch.testing.assert_close(sb.conv, s_full.conv, **TOL)
    assert sb.ssm.dtype == torch.float32 and sb.conv.dtype == torch.float32
    assert torch.equal(sa.ssm, sa_copy.ssm) and torch.equal(sa.conv, sa_copy.conv)  # functional


@pytest.mark.parametrize("impl", IMPLS)
def test_step_matches_reference_step(impl):
    m = block()
    x = torch.randn(2, 9, 16)
    e = emulated(m, impl)
    with torch.no_grad():
        s_ref = s_e = m.allocate_inference_cache(2)
        for t in range(9):
            y_ref, s_ref = m.step(x[:, t], s_ref)
            y_e, s_e = e.step(x[:, t], s_e)
            torch.testing.assert_close(y_e, y_ref, **TOL)
        torch.testing.assert_close(s_e.ssm, s_ref.ssm, **TOL)
        torch.testing.assert_close(s_e.conv, s_ref.conv, **TOL)


@pytest.mark.parametrize("impl", ["scan", "state_update"])
def test_continue_from_random_state_matches_reference(impl):
    """Any state (not only one a sequence can reach), a long decay (large delta) and d_conv 2 and 3."""
    for d_conv in (2, 3):
        m = block(d_conv)
        with torch.no_grad():
            m.dt_proj.bias.add_(2.0)
        st = m.allocate_inference_cache(2)
        st = type(st)(torch.randn_like(st.conv), torch.randn_like(st.ssm))
        x = torch.randn(2, 6, 16)
        with torch.no_grad():
            y_ref, s_ref = m.forward_with_state(x, st)
            y_e, s_e = emulated(m, impl).forward_with_state(x, st)
        torch.testing.assert_close(y_e, y_ref, **TOL)
        torch.testing.assert_close(s_e.ssm, s_ref.ssm, **TOL)
        torch.testing.assert_close(s_e.conv, s_ref.conv, **TOL)


def test_bad_continue_impl():
    m = emulated(block(), "nope")
    with pytest.raises(ValueError, match="continue_impl must be one of"):
        m(torch.randn(1, 3, 16), m.allocate_inference_cache(1))


def test_torch_stand_ins_follow_kernel_conventions():
    """Shapes and semantics the stand-ins share with the kernels (as read from mamba-ssm 2.3.2.post1 /
    causal-conv1d 1.7.0): causal conv with zero left padding; scan from a zero state returning the last
    state; state update in place."""
    torch.manual_seed(1)
    b, d, n, length = 2, 6, 4, 5
    x = torch.randn(b, d, length)
    w, bias = torch.randn(d, 3), torch.randn(d)
    out = kernels.TORCH_OPS.causal_conv1d_fn(x, w, bias, activation="silu")
    ref = torch.stack([sum(w[:, k] * (x[..., t - 2 + k] if t - 2 + k >= 0 else 0) for k in range(3)) + bias
                       for t in range(length)], -1)
    torch.testing.assert_close(out, torch.nn.functional.silu(ref), **TOL)
    u, dt, z = torch.randn(b, d, length), torch.randn(b, d, length), torch.randn(b, d, length)
    A, B, C, D, db = -torch.rand(d, n), torch.randn(b, n, length), torch.randn(b, n, length), torch.randn(d), \
        torch.randn(d)
    y, last = kernels.TORCH_OPS.selective_scan_fn(u, dt, A, B, C, D, z, delta_bias=db, delta_softplus=True,
                                                  return_last_state=True)
    state = torch.zeros(b, d, n)
    for t in range(length):
        yt = kernels.TORCH_OPS.selective_state_update(state, u[..., t], dt[..., t], A, B[..., t], C[..., t], D,
                                                      z=z[..., t], dt_bias=db, dt_softplus=True)
        torch.testing.assert_close(yt, y[..., t], **TOL)
    torch.testing.assert_close(state, last, **TOL)
    y2, _ = selective_scan_sequential(u, dt, A, B, C, D, z, delta_bias=db, delta_softplus=True)
    torch.testing.assert_close(y, y2, **TOL)


@pytest.mark.parametrize("variant", ["d_ma", "ed_ma"])
def test_streaming_backbone_observe_act_emulated(variant):
    """observe (from None and from a state) and act through the emulated kernel path vs the full forward."""
    bb = build(tiny_backbone(variant, "streaming", "ddpm"))
    bb.set_runtime(scan_impl="sequential")
    obs, act, tim = backbone_inputs(bb.cfg, batch=2, n_obs=5)
    with torch.no_grad():
        y_full = bb(obs, act, tim)
        em = copy.deepcopy(bb)
        for m in em.modules():
            if isinstance(m, Mamba):
                m.kernel_emulation = True
        s = em.observe(obs[:, :2], None)
        s = em.observe(obs[:, 2:], s)
        y = em.act(s, act, tim)
        s_zero = bb.observe(obs, bb.init_state(2))
        s_none = bb.observe(obs, None)
    torch.testing.assert_close(y, y_full, atol=1e-4, rtol=1e-4)
    for a, b in zip(s_zero.stacks, s_none.stacks):
        for la, lb in zip(a, b):
            torch.testing.assert_close(la.ssm, lb.ssm, **TOL)
            torch.testing.assert_close(la.conv, lb.conv, **TOL)


def test_set_runtime_continue_impl():
    bb = build(tiny_backbone("ed_ma", "streaming", "ddpm"))
    bb.set_runtime(continue_impl="state_update")
    assert {m.continue_impl for m in bb.modules() if isinstance(m, Mamba)} == {"state_update"}
    with pytest.raises(ValueError, match="continue_impl must be one of"):
        bb.set_runtime(continue_impl="bad")


def test_ddim_makes_no_host_tensors(monkeypatch):
    """DDIM's last step uses a buffer, not x.new_tensor (a host-to-device copy that breaks graph capture)."""
    ddpm = DDPM(DiffusionConfig(steps=16, ddim_steps=4))

    def boom(*a, **k):
        raise AssertionError("new_tensor called in the sampling loop")

    monkeypatch.setattr(torch.Tensor, "new_tensor", boom)
    x = ddpm.sample_ddim(lambda x, t: torch.zeros_like(x), (2, 3, 4), torch.full((4,), -1.0), torch.full((4,), 1.0),
                         noise=torch.randn(1, 2, 3, 4))
    assert x.shape == (2, 3, 4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant,head", [("d_ma", "bc"), ("d_ma", "ddpm"), ("ed_ma", "ddpm")])
def test_training_gradients_through_the_kernel_path(variant, head, impl):
    """Training a streaming layout continues each action branch from the trunk's state (forward_branches),
    which on CUDA is the kernel continue path. selective_state_update has no backward (nor has its
    stand-in): the path must still give the PyTorch path's gradients, or the trunk learns nothing (a
    memory stream policy trained on the H200 with mamba-ssm installed stayed at loss 0.27, 0/30)."""
    torch.manual_seed(0)
    bb = build(tiny_backbone(variant, "streaming", head, dropout=0.0))
    bb.set_runtime(scan_impl="sequential")
    em = copy.deepcopy(bb)
    for m in em.modules():
        if isinstance(m, Mamba):
            m.kernel_emulation, m.continue_impl = True, impl
    obs = torch.randn(2, 6 * bb.cfg.obs_tokens_per_step, bb.cfg.d_model)
    at = torch.arange(6) * bb.cfg.obs_tokens_per_step + bb.cfg.obs_tokens_per_step - 1
    act = time = None
    if head == "ddpm":
        act, time = torch.randn(2, 6, bb.cfg.action_horizon, bb.cfg.d_model), torch.randn(2, 6, bb.cfg.d_model)
    grads = []
    for model in (bb, em):
        model.train().zero_grad()
        out = model.forward_episode(obs, at, act, time)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    ref, got = grads
    missing = sorted(n for n, g in got.items() if ref[n] is not None and (g is None or not g.abs().sum()))
    assert not missing, f"no gradient through the kernel path: {missing[:5]}"
    for n, g in ref.items():
        if g is not None:
            torch.testing.assert_close(got[n], g, atol=1e-4, rtol=1e-4, msg=f"gradient of {n}")
