"""The vectorised (parallel prefix) selective scan against the sequential reference."""

import pytest
import torch

from mail_policy_node.model.scan import selective_scan, selective_scan_parallel, selective_scan_sequential


def scan_inputs(b=2, d=6, n=4, length=13, big_dt=False):
    u = torch.randn(b, d, length)
    delta = torch.randn(b, d, length) + (3.0 if big_dt else 0.0)
    a = -torch.exp(torch.randn(d, n))
    bb, cc = torch.randn(b, n, length), torch.randn(b, n, length)
    dd, z, bias = torch.randn(d), torch.randn(b, d, length), torch.randn(d)
    return u, delta, a, bb, cc, dd, z, bias


@pytest.mark.parametrize("length", [0, 1, 2, 5, 11, 16, 17])
@pytest.mark.parametrize("big_dt", [False, True])
def test_parallel_equals_sequential(length, big_dt):
    u, delta, a, b, c, d, z, bias = scan_inputs(length=length, big_dt=big_dt)
    h0 = torch.randn(2, 6, 4)
    kw = dict(D=d, z=z, delta_bias=bias, delta_softplus=True, h0=h0)
    y_ref, h_ref = selective_scan_sequential(u, delta, a, b, c, **kw)
    y, h = selective_scan_parallel(u, delta, a, b, c, **kw)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


def test_all_states_and_gradients_match():
    u, delta, a, b, c, d, z, bias = scan_inputs()
    ins = [t.clone().requires_grad_(True) for t in (u, delta, b, c)]
    outs = {}
    for impl in ("sequential", "parallel"):
        for t in ins:
            t.grad = None
        y, hs = selective_scan(ins[0], ins[1], a, ins[2], ins[3], d, z, bias, True, return_states=True, impl=impl)
        (y.sum() + hs.sum()).backward()
        outs[impl] = (y.detach(), hs.detach(), [t.grad.clone() for t in ins])
    (y1, h1, g1), (y2, h2, g2) = outs["sequential"], outs["parallel"]
    assert h1.shape == (2, 6, 13, 4)
    torch.testing.assert_close(y2, y1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h2, h1, atol=1e-5, rtol=1e-5)
    for a_, b_ in zip(g2, g1):
        torch.testing.assert_close(a_, b_, atol=1e-5, rtol=1e-5)


def test_long_sequence_stays_finite_and_exact():
    """Strong decay over 300 tokens: the prefix scan only multiplies factors <= 1."""
    u, delta, a, b, c, d, z, bias = scan_inputs(length=300, big_dt=True)
    y_ref, _ = selective_scan_sequential(u, delta * 10, a * 20, b, c, d, z, bias, True)
    y, _ = selective_scan_parallel(u, delta * 10, a * 20, b, c, d, z, bias, True)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)


def test_unknown_impl_is_named():
    with pytest.raises(ValueError, match="scan impl"):
        selective_scan(*scan_inputs()[:5], impl="magic")
