"""Fused continue-from-state path on CUDA: two Triton launches per Mamba block.

The engine's cached path runs few tokens (1 to ~20) through every layer from a cached state, at batch 1
or 2, hundreds of times per control step (16 denoising steps x 16 layers for D-Ma DDPM-16). At those
sizes the time is launches and skinny matrix products, not arithmetic: the kernel path of
`Mamba._kernel_continue` costs about 26 launches per layer-step on the H200 (LayerNorm, in_proj, cat, conv,
x_proj, dt_proj, exp + neg for A, state clone, one state update per token, stack, out_proj, residual add;
cuBLAS adds a split-K reduction to each of the four fp32 products), about 55 us per layer inside a CUDA
graph. Here one pre-norm residual block

    h_out = h + out_proj(mixer(LayerNorm(h), state)) [+ add]      (ED-Ma: the encoder's output)

is two launches with one program per token (so the weights are read by many multiprocessors at once):
1. `block_in`: LayerNorm of the token's conv window (tokens t-K+1..t; columns of the conv state before
   the first new token), in_proj x half of those rows, the depthwise causal conv + SiLU, x_proj, dt_proj
   + bias + softplus -> xc_t, dt_t, B_t, C_t; a second program per token computes z_t (in_proj z half).
2. `block_out`: the selective SSM from the ssm state through tokens 0..t (token by token, fp32, the
   arithmetic of mamba-ssm's selective_state_update; recomputed per token, it is 16 x 256 values per
   token), y_t + D skip, SiLU(z) gate, out_proj (two programs per token, half the outputs each), residual
   (and aggregation) add.
Optionally the new conv and ssm states are written (observe); act never changes the state it is given.
On the H200 (D-Ma DDPM-16, K=5, stream) the act graph took 8.2 ms with these kernels, 9.0 ms with an
earlier pair that formed the conv window's rows as one (taps, channels, d_model) product (removed), and
12.2 ms for the kernel path of `Mamba._kernel_continue` (docs/results/engine_speed_h200.json). A first
version did the whole block in one program per batch row (tl.dot products): one multiprocessor streamed
all the weights, 125 us per block, slower than the launches it saved.

All arithmetic is fp32 whatever the weights' dtype. Products are broadcast products reduced with tl.sum.

`ddpm_head` is the matching one-launch head of the engine's DDPM loop: final LayerNorm of the last J
tokens, action_out, the ancestral update (x0 clamp, posterior mean, noise), and the next step's input
tokens (action_in + slot embedding, and the first suffix token).

Availability: Triton and a CUDA tensor. With TRITON_INTERPRET=1 set before Triton is imported, the same
kernels run in Triton's CPU interpreter (tests, where Triton is installed); nothing here is used on the
engine's CPU path.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from .mamba import MambaState

MAX_TOKENS = 32  # longest continuation handled by the fused kernel (the engine's are 1 to ~21 tokens)
NUM_WARPS = int(os.environ.get("MAIL_FUSED_WARPS", "8"))  # warps per program of the block kernels
BLOCK_C = int(os.environ.get("MAIL_FUSED_BC", "32"))  # inner channels per step of block_in's loops (H200: 32)


def available() -> bool:
    """Triton is installed (it comes with CUDA builds of torch; the kernels are imported on first use)."""
    return importlib.util.find_spec("triton") is not None


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def supports(block, length: int) -> bool:
    """Shapes the kernel handles: power-of-two d_model and d_inner, LayerNorm with affine weights."""
    cfg = block.mixer.cfg
    return (available() and 1 <= length <= MAX_TOKENS and cfg.d_model == _pow2(cfg.d_model) and cfg.d_model >= 16
            and cfg.d_inner == _pow2(cfg.d_inner) and cfg.d_inner >= 32 and cfg.d_conv <= 4
            and block.norm.weight is not None
            and block.norm.bias is not None)


def _kernel(name: str):
    """The jitted kernel, imported on first use (Triton's CPU interpreter instead when TRITON_INTERPRET=1
    is set by then)."""
    from . import _fused_kernels

    return {"block_in": _fused_kernels.block_in_kernel, "block_out": _fused_kernels.block_out_kernel,
            "head": _fused_kernels.head_kernel}[name]


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def block_continue(block, h: Tensor, state: MambaState | None, add: Tensor | None = None, write_state: bool = False,
                   state_rows: int | None = None) -> tuple[Tensor, MambaState | None]:
    """One pre-norm residual block (``block.norm``, ``block.mixer``) over h (B, L, D) continuing from
    ``state`` (None: zeros): -> (h + mixer(norm(h)) [+ add], new state or None). Batch row i reads state
    row i % state_rows (default B: its own). The given state is never written to."""
    mixer, cfg = block.mixer, block.mixer.cfg
    batch, length, dm = h.shape
    di, n, r, k = cfg.d_inner, cfg.d_state, cfg.rank, cfg.d_conv
    if length == 0:
        return h, state
    h = h.contiguous()
    out = torch.empty_like(h)
    f32 = dict(device=h.device, dtype=torch.float32)
    zero = state is None
    conv_s = h if zero else state.conv.float().contiguous()
    ssm_s = h if zero else state.ssm.float().contiguous()
    rows = batch if state_rows is None else int(state_rows)
    if not zero and conv_s.shape[0] != rows:
        raise ValueError(f"state has {conv_s.shape[0]} rows, expected {rows}")
    conv_new = torch.empty(batch, di, k, **f32) if write_state else h
    ssm_new = torch.empty(batch, di, n, **f32) if write_state else h
    scratch = torch.empty(batch * length, 3 * di + 2 * n, **f32)  # per token: xc, z, dt, B, C
    if add is not None:
        add = add.contiguous()
    w = lambda t: h if t is None else t  # noqa: E731  (a dummy pointer for absent optional tensors)
    warps = {} if interpreting() else dict(num_warps=NUM_WARPS)
    split = 2 if dm >= 64 else 1
    _kernel("block_in")[(batch * length, 2)](
        h, block.norm.weight, block.norm.bias, mixer.in_proj.weight, w(mixer.in_proj.bias), mixer.conv1d.weight,
        w(mixer.conv1d.bias), conv_s, mixer.x_proj.weight, mixer.dt_proj.weight, mixer.dt_proj.bias, scratch,
        conv_new, length, rows, float(block.norm.eps),
        DM=dm, DI=di, N=n, R=r, BR=max(2, _pow2(r)), BX=max(2, _pow2(r + 2 * n)), K=k, BK=max(2, _pow2(k)),
        BC=min(BLOCK_C, di), HAS_B_IN=mixer.in_proj.bias is not None, HAS_CONV_B=mixer.conv1d.bias is not None,
        ZERO_STATE=zero, WRITE_STATE=write_state, **warps)
    _kernel("block_out")[(batch * length, split)](
        h, w(add), out, ssm_s, mixer.A_log, mixer.D, mixer.out_proj.weight, w(mixer.out_proj.bias), scratch,
        ssm_new, length, rows,
        DM=dm, DI=di, N=n, BN=max(2, _pow2(n)), BL=_pow2(length), BO=min(32, dm // split), SPLIT=split,
        HAS_ADD=add is not None, HAS_B_OUT=mixer.out_proj.bias is not None, ZERO_STATE=zero,
        WRITE_STATE=write_state, **warps)
    return out, (MambaState(conv_new, ssm_new) if write_state else None)


def stack_continue(stack, x: Tensor, state, add: Tensor | None = None, write_state: bool = False,
                   state_rows: int | None = None):
    """All blocks of a MambaStack over x (B, L, D) from ``state`` (one MambaState per layer, or None:
    zeros), without the final norm: -> (h (B, L, D), new per-layer states or None)."""
    h, new = x, []
    for i, b in enumerate(stack.layers):
        h, s = block_continue(b, h, None if state is None else state[i], add, write_state, state_rows)
        new.append(s)
    return h, (tuple(new) if write_state else None)


def ddpm_head(hl: Tensor | None, norm_f, action_out, x: Tensor, noise: Tensor | None, coef: Tensor, t: int,
              low: Tensor, high: Tensor, action_in, slot: Tensor, row0: Tensor | None, seq: Tensor | None) -> None:
    """In place: with ``hl`` (B, M, D) the raw last-layer hidden states, one ancestral step of x (B, J, A)
    at step t (coef: (steps, 5) fp32 rows sqrt(1 - ab), sqrt(ab), post_c0, post_ct, sqrt(post_var); noise
    added when given); then, with ``seq`` (B, 1 + J, D), the next suffix [row0, action_in(x) + slot]."""
    batch, j, a = x.shape
    dm = slot.shape[-1]
    finish, prepare = hl is not None, seq is not None
    dummy = x
    _kernel("head")[(batch,)](
        hl if finish else dummy, norm_f.weight, norm_f.bias, action_out.weight, action_out.bias, x,
        noise if noise is not None else dummy, coef, low, high, action_in.weight, action_in.bias, slot,
        row0 if prepare else dummy, seq if prepare else dummy, int(t), hl.shape[1] if finish else 0, float(norm_f.eps),
        J=j, BJ=_pow2(j), A=a, BA=_pow2(a), DM=dm, FINISH=finish, ADD_NOISE=noise is not None, PREPARE=prepare,
        **({} if interpreting() else dict(num_warps=4)))
