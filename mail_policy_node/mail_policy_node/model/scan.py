"""Selective scan (Mamba v1's SSM recurrence) in plain PyTorch, always computed in fp32.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        (per channel d, state n)
    y_t = <h_t, C_t> + D * u_t,   then  y_t *= silu(z_t)

Two implementations of the same function:
- `selective_scan_sequential`: a Python loop over tokens. Obviously right: the reference.
- `selective_scan_parallel`: the vectorised form, a parallel prefix scan (Hillis-Steele) over the affine
  maps h -> a_t h + b_t with a_t = exp(delta_t A) <= 1: ceil(log2 L) whole-tensor steps instead of L
  Python iterations. Products of factors <= 1 cannot overflow, and no difference of cumulative sums is
  ever formed, so it agrees with the reference to float rounding (tests: 1e-5 in fp32).
On a CPU with sequences of about 11 tokens the sequential loop does less arithmetic (L vs L log L) and
can be faster; choose per module with `Mamba.scan_impl` (a run-time setting, not part of the weights).

Shapes follow mamba_ssm.selective_scan_fn: u, delta, z (B, D, L); A (D, N); B, C (B, N, L); D (D,);
h0 / returned states (B, D, N).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

SCAN_IMPLS = ("parallel", "sequential")


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C


def _finish(y, u, D, z, out_dtype):
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(out_dtype)


def selective_scan_sequential(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                              z: Tensor | None = None, delta_bias: Tensor | None = None,
                              delta_softplus: bool = False, h0: Tensor | None = None,
                              return_states: bool = False) -> tuple[Tensor, Tensor]:
    """Reference scan. Returns (y (B, D, L), states): states is the last state (B, D, N), or every
    state (B, D, L, N) when ``return_states``."""
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    h = u.new_zeros(batch, dim, A.shape[1]) if h0 is None else h0.float()
    ys, hs = [], []
    for t in range(length):
        dA = torch.exp(delta[:, :, t, None] * A)  # (B, D, N)
        dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]  # (B, D, N)
        h = dA * h + dBu
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
        if return_states:
            hs.append(h)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    states = torch.stack(hs, dim=2) if return_states else h
    return _finish(y, u, D, z, out_dtype), states


def selective_scan_parallel(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                            z: Tensor | None = None, delta_bias: Tensor | None = None,
                            delta_softplus: bool = False, h0: Tensor | None = None,
                            return_states: bool = False) -> tuple[Tensor, Tensor]:
    """Vectorised scan as a parallel prefix (Hillis-Steele) over the affine maps h -> a_t h + b_t:
    ceil(log2 L) whole-tensor steps instead of L, O(L log L) work, every factor a_t = exp(delta_t A) <= 1
    (no overflow, no cancellation). Same contract as `selective_scan_sequential`."""
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    a = torch.exp(delta[:, :, None, :] * A[None, :, :, None])  # (B, D, N, L)
    b = (delta * u)[:, :, None, :] * B[:, None, :, :]  # (B, D, N, L)
    step = 1
    while step < length:  # after this, a[t] = prod_{r<=t} a_r and b[t] = state at t from a zero start
        b_next, a_next = b.clone(), a.clone()
        b_next[..., step:].addcmul_(a[..., step:], b[..., :-step])
        a_next[..., step:].mul_(a[..., :-step])
        a, b = a_next, b_next
        step *= 2
    states = b if h0 is None else b + a * h0.float()[..., None]  # (B, D, N, L)
    y = torch.einsum("bdnl,bnl->bdl", states, C)
    if return_states:
        out_states = states.transpose(2, 3)  # (B, D, L, N)
    else:
        out_states = states[..., -1] if length else (u.new_zeros(batch, dim, A.shape[1]) if h0 is None else h0.float())
    return _finish(y, u, D, z, out_dtype), out_states


def selective_scan(*args, impl: str = "parallel", **kwargs) -> tuple[Tensor, Tensor]:
    if impl == "parallel":
        return selective_scan_parallel(*args, **kwargs)
    if impl == "sequential":
        return selective_scan_sequential(*args, **kwargs)
    raise ValueError(f"scan impl must be one of {SCAN_IMPLS}, got {impl!r}")
