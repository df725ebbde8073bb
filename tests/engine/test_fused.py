"""The fused Triton path (model/fused.py, engine/fused_act.py), run in Triton's CPU interpreter (Triton is
pinned in env/requirements.txt for this; scripts/gpu/engine_parity.py runs the same kernels on CUDA):
one kernel per Mamba block against the stack's PyTorch path, and the fused DDPM loop against the policy's
own sampler, fp32, 1e-5."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are first imported
pytest.importorskip("triton")
if os.environ["TRITON_INTERPRET"] != "1":
    pytest.skip("TRITON_INTERPRET is off: the fused kernels need CUDA", allow_module_level=True)

from mail_policy_node.engine.fused_act import FusedDDPM
from mail_policy_node.model import fused
from mail_policy_node.model.mamba import MambaConfig, MambaState
from mail_policy_node.model.stack import MambaStack

from .helpers import tiny_policy, tiny_spec

TOL = dict(atol=1e-5, rtol=1e-5)


def stack(d_state=16, d_conv=4, layers=2):
    s = MambaStack(MambaConfig(d_model=32, d_state=d_state, d_conv=d_conv), layers)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.1 * torch.randn_like(p))
    s.set_runtime(scan_impl="sequential")
    return s


def random_state(s, batch):
    return tuple(MambaState(torch.randn_like(m.conv), torch.randn_like(m.ssm))
                 for m in s.allocate_inference_cache(batch))


@pytest.mark.parametrize("d_state,d_conv,length,zero,add", [(16, 4, 6, False, False), (8, 2, 3, False, True),
                                                            (16, 4, 1, True, False), (16, 4, 17, False, False),
                                                            (16, 3, 2, False, False), (16, 4, 2, True, True)])
@pytest.mark.parametrize("split", [False, True], ids=["block_out", "scan+proj"])
def test_fused_stack_matches_torch(monkeypatch, split, d_state, d_conv, length, zero, add):
    """block_out, or its split form (block_scan over all tokens once per channel block, then block_proj)."""
    monkeypatch.setattr(fused, "SPLIT_OUT", split)
    monkeypatch.setattr(fused, "SCAN_BLOCK", 16)  # d_inner 64: 4 scan programs per batch row
    s = stack(d_state, d_conv)
    x = torch.randn(2, length, 32)
    a = torch.randn(2, length, 32) if add else None
    st = None if zero else random_state(s, 2)
    with torch.no_grad():
        ref, ref_state = s.forward_with_state(x, st if st is not None else s.allocate_inference_cache(2), add=a)
        s.set_runtime(fused="on")
        out, new = s.forward_with_state(x, st, add=a)
        out_only = s(x, st if st is not None else s.allocate_inference_cache(2), add=a)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(out_only, ref, **TOL)
    for n, r in zip(new, ref_state):
        torch.testing.assert_close(n.ssm, r.ssm, **TOL)
        torch.testing.assert_close(n.conv, r.conv, **TOL)


@pytest.mark.parametrize("block_c,dt_block,out_block,zero", [(16, 16, 8, False), (64, 64, 16, True)])
def test_fused_channel_blocks(monkeypatch, block_c, dt_block, out_block, zero):
    """block_in split over 4 or 1 channel blocks (x_proj partial sums added in block_dt), dt over 4 or 1
    programs per token, out_proj over 4 or 2: the same results."""
    monkeypatch.setattr(fused, "BLOCK_C", block_c)
    monkeypatch.setattr(fused, "DT_BLOCK", dt_block)
    monkeypatch.setattr(fused, "OUT_BLOCK", out_block)
    s = stack(8, 2)
    x = torch.randn(2, 5, 32)
    st = None if zero else random_state(s, 2)
    with torch.no_grad():
        ref, ref_state = s.forward_with_state(x, st if st is not None else s.allocate_inference_cache(2))
        s.set_runtime(fused="on")
        out, new = s.forward_with_state(x, st)
    torch.testing.assert_close(out, ref, **TOL)
    for n, r in zip(new, ref_state):
        torch.testing.assert_close(n.ssm, r.ssm, **TOL)
        torch.testing.assert_close(n.conv, r.conv, **TOL)


@pytest.mark.parametrize("split", [False, True], ids=["block_out", "scan+proj"])
def test_fused_state_rows(monkeypatch, split):
    """Row i continues from state row i % state_rows (the ED-Ma encoder over all diffusion steps)."""
    monkeypatch.setattr(fused, "SPLIT_OUT", split)
    s = stack()
    st = random_state(s, 2)
    x = torch.randn(6, 4, 32)
    with torch.no_grad():
        h, _ = fused.stack_continue(s, x, st, state_rows=2)
        rep = tuple(MambaState(m.conv.repeat(3, 1, 1), m.ssm.repeat(3, 1, 1)) for m in st)
        ref = s(x, rep)
    torch.testing.assert_close(s.norm_f(h), ref, **TOL)


@pytest.mark.parametrize("split", [False, True], ids=["block_out", "scan+proj"])
@pytest.mark.parametrize("variant", ["d_ma", "ed_ma"])
def test_fused_ddpm_matches_policy_sampler(monkeypatch, variant, split):
    monkeypatch.setattr(fused, "SPLIT_OUT", split)
    policy = tiny_policy(variant, "ddpm", spec=tiny_spec(j=4))
    policy.backbone.set_runtime(scan_impl="sequential")
    b = 2
    tokens = torch.randn(b, 7, policy.cfg.backbone.d_model)
    noise = torch.randn(policy.ddpm.noise_shape((b, 4, policy.cfg.spec.action_dim)))
    with torch.no_grad():
        state = policy.observe(tokens, policy.init_state(b))
        ref = policy.act(state, noise)
        policy.backbone.set_runtime(fused="on")
        out = policy.unnormalize_actions(FusedDDPM(policy, b)(state, noise))
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_encoder_matches_module(channels_last):
    """Camera trunk with each GroupNorm + ReLU / residual add as one kernel (engine/fused_encoder.py), in
    NCHW and in channels-last memory, against the module's own forward."""
    from mail_policy_node.engine import fused_encoder

    enc = tiny_policy().encoder
    img = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # NHWC memory
    assert fused_encoder.supports(enc)
    with torch.no_grad():
        ref = enc.encode_frame("wrist", img)
        if channels_last:
            enc.to(memory_format=torch.channels_last)
        out = fused_encoder.encode_frame(enc, "wrist", img)
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("relu,res", [(True, False), (True, True), (False, False)])
def test_group_norm_act(relu, res):
    from mail_policy_node.engine.fused_encoder import group_norm_act

    gn = torch.nn.GroupNorm(2, 32)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    x = torch.randn(2, 32, 5, 7) * 3 + 1
    r = torch.randn(2, 32, 5, 7) if res else None
    with torch.no_grad():
        ref = gn(x) + (r if res else 0)
        ref = torch.relu(ref) if relu else ref
        for xx in (x, x.to(memory_format=torch.channels_last)):
            torch.testing.assert_close(group_norm_act(xx, gn, r, relu=relu), ref, **TOL)
