"""Selective scan (Mamba v1's SSM recurrence) in plain PyTorch, always computed in fp32.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        (per channel d, state n)
    y_t = <h_t, C_t> + D * u_t,   then  y_t *= silu(z_t)

Two implementations of the same function:
- `selective_scan_sequential`: a Python loop over tokens. Slow, obviously right: the reference.
- `selective_scan_chunked`: the parallel form. Inside a chunk of T tokens the decay between tokens s < t
  is exp(sum_{r=s+1..t} delta_r A), built as a masked (T, T) "segment sum" (a cumulative sum of the
  masked log-decays, never a difference of two cumulative sums, so no cancellation and no overflow:
  every exponent is <= 0). The state is carried between chunks. The chunk length is picked so the
  (B, D, N, T, T) intermediate stays under a memory budget.

Shapes follow mamba_ssm.selective_scan_fn: u, delta, z (B, D, L); A (D, N); B, C (B, N, L); D (D,);
h0 / returned states (B, D, N).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SCAN_IMPLS = ("chunked", "sequential")
_CHUNK_BUDGET = 1 << 23  # elements of the (B, D, N, T, T) decay tensor per chunk (32 MiB in fp32)


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


def _segsum(a: Tensor) -> Tensor:
    """a (..., T) -> (..., T, T) with [t, s] = sum_{r=s+1..t} a_r for s <= t, -inf above the diagonal."""
    T = a.shape[-1]
    x = a[..., None, :].expand(*a.shape, T).transpose(-1, -2)  # x[..., t, s] = a_t
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    x = x.masked_fill(~strict, 0.0)
    seg = torch.cumsum(x, dim=-2)  # [t, s] = sum_{r=s+1..t} a_r (below diagonal), 0 on it
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))
    return seg.masked_fill(~keep, float("-inf"))


def pick_chunk(batch: int, dim: int, n: int, length: int) -> int:
    """Largest chunk length whose (B, D, N, T, T) decay tensor fits the budget (at least 1)."""
    per = max(1, batch * dim * n)
    return max(1, min(length, int(math.isqrt(max(1, _CHUNK_BUDGET // per)))))


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                           z: Tensor | None = None, delta_bias: Tensor | None = None,
                           delta_softplus: bool = False, h0: Tensor | None = None,
                           return_states: bool = False, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """Vectorised scan; same contract as `selective_scan_sequential`."""
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    n = A.shape[1]
    h = u.new_zeros(batch, dim, n) if h0 is None else h0.float()
    chunk = chunk or pick_chunk(batch, dim, n, length)
    ys, hs = [], []
    for start in range(0, length, chunk):
        sl = slice(start, min(start + chunk, length))
        dt, uu, Bc, Cc = delta[:, :, sl], u[:, :, sl], B[:, :, sl], C[:, :, sl]  # (B, D, T), (B, N, T)
        log_a = dt[:, :, None, :] * A[None, :, :, None]  # (B, D, N, T), <= 0
        decay = torch.exp(_segsum(log_a))  # (B, D, N, T, T): [t, s] = prod_{r=s+1..t} a_r
        x = dt[:, :, None, :] * Bc[:, None, :, :] * uu[:, :, None, :]  # (B, D, N, T)
        from_h0 = torch.exp(torch.cumsum(log_a, dim=-1))  # (B, D, N, T): prod_{r<=t} a_r
        states = torch.einsum("bdnts,bdns->bdnt", decay, x) + from_h0 * h[..., None]  # (B, D, N, T)
        ys.append(torch.einsum("bdnt,bnt->bdt", states, Cc))
        h = states[..., -1]
        if return_states:
            hs.append(states)
    y = torch.cat(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    out_states = torch.cat(hs, dim=-1).transpose(2, 3) if return_states else h  # (B, D, L, N) or (B, D, N)
    return _finish(y, u, D, z, out_dtype), out_states


def selective_scan(*args, impl: str = "chunked", **kwargs) -> tuple[Tensor, Tensor]:
    if impl == "chunked":
        return selective_scan_chunked(*args, **kwargs)
    if impl == "sequential":
        return selective_scan_sequential(*args, **kwargs)
    raise ValueError(f"scan impl must be one of {SCAN_IMPLS}, got {impl!r}")
