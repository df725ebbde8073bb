"""Fused continue-from-state path on CUDA: three Triton launches per Mamba block.

The engine's cached path runs few tokens (1 to ~20) through every layer from a cached state, at batch 1
or 2, hundreds of times per control step (16 denoising steps x 16 layers for D-Ma DDPM-16). At those
sizes the time is launches and latency, not arithmetic: the kernel path of `Mamba._kernel_continue` costs
about 26 launches per layer-step on the H200 (LayerNorm, in_proj, cat, conv, x_proj, dt_proj, exp + neg
for A, state clone, one state update per token, stack, out_proj, residual add; cuBLAS adds a split-K
reduction to each of the four fp32 products), about 55 us per layer inside a CUDA graph. Here one
pre-norm residual block

    h_out = h + out_proj(mixer(LayerNorm(h), state)) [+ add]      (ED-Ma: the encoder's output)

is three launches, each with many short programs (so that the weights are read by many multiprocessors
at once and no program loops long):
1. `block_in`, one program per (token, 32-channel block): LayerNorm of the token's conv window (tokens
   t-K+1..t; columns of the conv state before the first new token), in_proj x rows of the block, the
   depthwise causal conv + SiLU -> xc, and the block's partial x_proj sums; programs of the z half compute
   the block's z (in_proj z of the token's row).
2. `block_dt`, one program per (token, 64 channels): x_proj = the partial sums added in block order
   (deterministic, no atomics), dt_proj + bias + softplus -> dt; B and C.
3. `block_out`, one program per (token, 32 outputs): the selective SSM from the ssm state through tokens
   0..t (token by token, fp32, the arithmetic of mamba-ssm's selective_state_update; recomputed per
   token, it is 16 x 256 values per token), y_t + D skip, SiLU(z) gate, out_proj, residual (and
   aggregation) add.
On sm_90+ the three are chained by programmatic dependent launch (PDL, see _fused_kernels.py): each
loads its weights before waiting for the previous kernel. Optionally the new conv and ssm states are
written (observe); act never changes the state it is given.

On the H200 (D-Ma DDPM-16, K=5, stream; act graph replay; 2026-11-28, in git history:
`git show b957271:docs/results/engine_speed_h200_v3.json`): 4.27 ms
with these kernels (4.83 ms without PDL); 6.2 ms with a two-launch split that computed dt inside
block_out (its scan then converted register layouts at every token); 8.2 ms with the earlier pair of one
program per token (block_in looped over all channels: 24 of 31 us per layer-step); 12.2 ms for the kernel
path of `Mamba._kernel_continue`. A first version did the whole block in one program per batch row
(tl.dot products): 125 us per block.

All arithmetic is fp32 whatever the weights' dtype. Products are broadcast products reduced with tl.sum.

`ddpm_head` is the matching one-launch head of the engine's DDPM loop: final LayerNorm of the last J
tokens, action_out, the ancestral update (x0 clamp, posterior mean, noise), and the next step's input
tokens (action_in + slot embedding, and the first suffix token).

Availability: Triton and a CUDA tensor. With TRITON_INTERPRET=1 set before Triton is imported, the same
kernels run in Triton's CPU interpreter (tests, where Triton is installed); nothing here is used on the
engine's CPU path.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor

from .mamba import MambaState

MAX_TOKENS = 32  # longest continuation handled by the fused kernel (the engine's are 1 to ~21 tokens)
# launch settings (H200: the defaults were the fastest of the variants timed on 2026-11-28, in git history as
# docs/results/engine_speed_h200_v3.json of commit b957271)
NUM_WARPS = int(os.environ.get("MAIL_FUSED_WARPS", "8"))  # warps per program of block_out
IN_WARPS = int(os.environ.get("MAIL_FUSED_IN_WARPS", "4"))  # warps per program of block_in
BLOCK_C = int(os.environ.get("MAIL_FUSED_BC", "32"))  # inner channels per block_in program
OUT_BLOCK = int(os.environ.get("MAIL_FUSED_BO", "32"))  # out_proj outputs per block_out program
DT_BLOCK = int(os.environ.get("MAIL_FUSED_BD", "64"))  # inner channels per block_dt program
DT_WARPS = int(os.environ.get("MAIL_FUSED_DT_WARPS", "4"))  # warps per program of block_dt
PDL = os.environ.get("MAIL_FUSED_PDL", "1") == "1"  # programmatic dependent launch where the GPU has it
# The scan and out_proj in two launches: block_scan once per (row, SCAN_BLOCK channels) over all tokens,
# then block_proj per (token, OUT_BLOCK outputs). MAIL_FUSED_SPLIT=0 gives the single block_out launch, which
# recomputes the scan of tokens 0..t in every (token, output block) program: on the H200 (round v5,
# docs/results/engine_kernels_h200.json) D-Ma DDPM-16 K=5 stream took 5.47 ms per step with it and 3.40 ms
# with the split form at 8 channels and 1 warp per scan program (16/2: 3.69 ms, 32/4: 3.67 ms).
SPLIT_OUT = os.environ.get("MAIL_FUSED_SPLIT", "1") == "1"
SCAN_BLOCK = int(os.environ.get("MAIL_FUSED_BS", "8"))  # inner channels per block_scan program
SCAN_WARPS = int(os.environ.get("MAIL_FUSED_SCAN_WARPS", "1"))  # warps per program of block_scan


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

    return {"block_in": _fused_kernels.block_in_kernel, "block_dt": _fused_kernels.block_dt_kernel,
            "block_out": _fused_kernels.block_out_kernel, "block_scan": _fused_kernels.block_scan_kernel,
            "block_proj": _fused_kernels.block_proj_kernel, "head": _fused_kernels.head_kernel}[name]


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _pdl_device(index: int) -> bool:
    from . import _fused_kernels

    return torch.cuda.get_device_capability(index)[0] >= 9 and _fused_kernels.gdc_wait is not None


def pdl_usable(device: torch.device) -> bool:
    """Programmatic dependent launch: asked for (PDL), a CUDA device of compute capability 9.0+, a Triton
    that has it; never in the interpreter."""
    return PDL and device.type == "cuda" and not interpreting() and _pdl_device(device.index or 0)


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
    bc = min(BLOCK_C, di)
    ncb, p = di // bc, r + 2 * n
    scratch = torch.empty(batch * length, 3 * di + 2 * n + ncb * p, **f32)  # per token: xc, z, dt, B, C, partials
    if add is not None:
        add = add.contiguous()
    w = lambda t: h if t is None else t  # noqa: E731  (a dummy pointer for absent optional tensors)
    pdl = pdl_usable(h.device)
    launch = lambda warps: {} if interpreting() else dict(num_warps=warps, launch_pdl=pdl)  # noqa: E731
    tokens, bn, bo, bd = batch * length, max(2, _pow2(n)), min(OUT_BLOCK, dm), min(DT_BLOCK, di)
    _kernel("block_in")[(tokens, 2 * ncb)](
        h, block.norm.weight, block.norm.bias, mixer.in_proj.weight, w(mixer.in_proj.bias), mixer.conv1d.weight,
        w(mixer.conv1d.bias), conv_s, mixer.x_proj.weight, scratch, conv_new, length, rows, float(block.norm.eps),
        DM=dm, DI=di, N=n, P=p, BX=_pow2(p), K=k, BK=max(2, _pow2(k)), BC=bc, NCB=ncb,
        HAS_B_IN=mixer.in_proj.bias is not None, HAS_CONV_B=mixer.conv1d.bias is not None,
        ZERO_STATE=zero, WRITE_STATE=write_state, PDL=pdl, **launch(IN_WARPS))
    _kernel("block_dt")[(tokens, di // bd)](
        scratch, mixer.dt_proj.weight, mixer.dt_proj.bias,
        DI=di, N=n, BN=_pow2(2 * n), R=r, BR=max(2, _pow2(r)), P=p, NCB=ncb, BD=bd, PDL=pdl, **launch(DT_WARPS))
    if SPLIT_OUT:
        bs = min(SCAN_BLOCK, di)
        _kernel("block_scan")[(batch, di // bs)](
            ssm_s, mixer.A_log, mixer.D, scratch, ssm_new, length, rows,
            DI=di, N=n, BN=bn, P=p, NCB=ncb, BL=_pow2(length), BS=bs, ZERO_STATE=zero, WRITE_STATE=write_state,
            PDL=pdl, **launch(SCAN_WARPS))
        _kernel("block_proj")[(tokens, dm // bo)](
            h, w(add), out, mixer.out_proj.weight, w(mixer.out_proj.bias), scratch,
            DM=dm, DI=di, N=n, P=p, NCB=ncb, BO=bo, HAS_ADD=add is not None,
            HAS_B_OUT=mixer.out_proj.bias is not None, PDL=pdl, **launch(NUM_WARPS))
    else:
        _kernel("block_out")[(tokens, dm // bo)](
            h, w(add), out, ssm_s, mixer.A_log, mixer.D, mixer.out_proj.weight, w(mixer.out_proj.bias), scratch,
            ssm_new, length, rows,
            DM=dm, DI=di, N=n, BN=bn, P=p, NCB=ncb, BL=_pow2(length), BO=bo,
            HAS_ADD=add is not None, HAS_B_OUT=mixer.out_proj.bias is not None, ZERO_STATE=zero,
            WRITE_STATE=write_state, PDL=pdl, **launch(NUM_WARPS))
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
