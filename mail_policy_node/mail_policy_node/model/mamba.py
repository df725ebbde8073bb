"""Mamba v1 mixer in plain PyTorch, with mamba-ssm's parameter names and shapes.

Parameters (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj) match `mamba_ssm.Mamba`, so a state
dict loads either way. Paths, each with one return type:
- `forward(x, state=None) -> y`: L tokens from a zero state, or continuing from ``state``.
- `forward_with_state(x, state=None) -> (y, state)`: the same, and the state after the last token.
- `step(x, state) -> (y, state)`: one token.
- `forward_states(x, state=None) -> (y, states)`: like forward_with_state, but the state after every token
  (for training the streaming layouts' action branches off an observation trunk; PyTorch only).
All paths are functional: a given state is never written to. States are fp32 whatever the weights' dtype.
On CUDA, when mamba-ssm / causal-conv1d import and `use_kernels` is set, the same weights run through
their kernels (fused forward; continue/step: causal_conv1d_fn, then selective_scan_fn or
selective_state_update, see `_kernel_continue`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels
from .scan import SCAN_IMPLS, selective_scan


@dataclass(frozen=True)
class MambaConfig:
    d_model: int = 128  # width of the residual stream
    d_state: int = 16  # N: SSM state size per inner channel
    d_conv: int = 4  # length of the depthwise causal convolution
    expand: int = 2  # d_inner = expand * d_model
    dt_rank: int = 0  # rank of the dt projection; 0 = ceil(d_model / 16), mamba-ssm's "auto"
    dt_min: float = 0.001  # Mamba's dt initialisation range (used by init "mamba")
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4  # lower clamp of the initial dt
    conv_bias: bool = True  # bias of the depthwise convolution (mamba-ssm default)
    bias: bool = False  # bias of in_proj and out_proj (mamba-ssm default)

    def __post_init__(self):
        for name in ("d_model", "d_state", "d_conv", "expand"):
            if getattr(self, name) < 1:
                raise ValueError(f"MambaConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_conv < 2:
            raise ValueError(f"MambaConfig.d_conv must be >= 2, got {self.d_conv}")
        if self.dt_rank < 0:
            raise ValueError(f"MambaConfig.dt_rank must be >= 0 (0 = auto), got {self.dt_rank}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"MambaConfig needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)


class MambaState(NamedTuple):
    conv: Tensor  # (B, d_inner, d_conv) fp32: the last d_conv conv inputs, newest last
    ssm: Tensor  # (B, d_inner, d_state) fp32


def init_linear_paper(module: nn.Module) -> None:
    """The MaIL authors' re-initialisation: every Linear N(0, 0.02), zero bias (overrides dt's bias)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Mamba(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        di, n, r = cfg.d_inner, cfg.d_state, cfg.rank
        self.in_proj = nn.Linear(cfg.d_model, 2 * di, bias=cfg.bias)
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1, bias=cfg.conv_bias)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, cfg.d_model, bias=cfg.bias)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        # run-time choice, not part of the weights: "parallel" | "sequential" | "auto" (parallel on CUDA;
        # sequential on CPU, where it measured faster for ~11-token sequences, backward 2-4x; see scan.py)
        self.scan_impl = "auto"
        self.use_kernels = True  # use mamba-ssm kernels for CUDA tensors when they import
        # continue-from-state / step() with kernels: "auto" | "scan" | "state_update" (see _kernel_continue)
        self.continue_impl = "auto"
        # run that kernel path with PyTorch stand-ins for the kernels, on any device (tests on CPU)
        self.kernel_emulation = False
        self._init_dt()

    def _init_dt(self) -> None:
        """Mamba's own init: dt_proj weight U(-r^-0.5, r^-0.5), bias = softplus^-1(dt), dt log-uniform."""
        cfg = self.cfg
        std = cfg.rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(cfg.d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=cfg.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    # ---- state ----
    def allocate_inference_cache(self, batch: int, device=None) -> MambaState:
        cfg = self.cfg
        device = device if device is not None else self.A_log.device
        return MambaState(torch.zeros(batch, cfg.d_inner, cfg.d_conv, device=device),
                          torch.zeros(batch, cfg.d_inner, cfg.d_state, device=device))

    def _scan_for(self, x: Tensor) -> str:
        if self.scan_impl == "auto":
            return "parallel" if x.is_cuda else "sequential"
        return self.scan_impl

    def _A(self) -> Tensor:
        return -torch.exp(self.A_log.float())  # (d_inner, N)

    def _ssm_inputs(self, xc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """xc (B, L, d_inner) -> dt (B, L, d_inner) without bias, B and C (B, L, N)."""
        n, r = self.cfg.d_state, self.cfg.rank
        dt, b, c = torch.split(self.x_proj(xc), [r, n, n], dim=-1)
        return F.linear(dt, self.dt_proj.weight), b, c

    # ---- full sequence / continuation ----
    def forward(self, x: Tensor, state: MambaState | None = None) -> Tensor:
        """x (B, L, D) -> y (B, L, D): from a zero state, or continuing from ``state`` (left as it is).

        Always a tensor; ``forward_with_state`` also returns the new state. Two methods rather than one
        with a flag (whose return type would then depend on the flag) because they differ in more than
        the return: from a zero state on CUDA, y alone runs mamba-ssm's fused mamba_inner_fn (the training
        and reference path), which cannot return a state; y and the state run causal_conv1d_fn +
        selective_scan_fn(return_last_state=True) instead."""
        if state is None and self._sequence_kernels(x):
            return self._kernel_fused(x)
        return self.forward_with_state(x, state)[0]

    def forward_with_state(self, x: Tensor, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        """x (B, L, D) -> (y (B, L, D), the state after the last token): the recurrent primitive of
        streaming inference (prefill from zeros with ``state`` None, or continue a sequence by L tokens).
        ``state`` is never written to; the new state is fp32. The same y as ``forward`` (same path, except
        from zeros on CUDA, where a kernel that also returns the last state runs)."""
        if state is not None:
            ops = self._continue_ops(x)
            if ops is not None:
                return self._kernel_continue(x, state, ops)
        elif self._sequence_kernels(x):
            return self._kernel_prefill(x)
        if (state is not None and x.shape[1] > 0 and not torch.is_grad_enabled()
                and self._scan_for(x) == "sequential"):
            return self._torch_continue(x, state)
        y, conv, ssm = self._torch_forward(x, state, all_states=False)
        return y, MambaState(conv, ssm)

    def forward_states(self, x: Tensor, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        """Like forward_with_state, but returns the state after every token, not only the last:
        conv (B, d_inner, L, d_conv), ssm (B, d_inner, L, N). PyTorch path only (the kernels keep no
        intermediate states)."""
        y, conv, ssm = self._torch_forward(x, state, all_states=True)
        return y, MambaState(conv, ssm)

    def _torch_forward(self, x: Tensor, state: MambaState | None, all_states: bool):
        cfg = self.cfg
        batch, _length, _ = x.shape
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, d_inner) each
        xi, z = xi.transpose(1, 2), z.transpose(1, 2)  # (B, d_inner, L)
        prev = state.conv if state is not None else x.new_zeros(batch, cfg.d_inner, cfg.d_conv, dtype=torch.float32)
        window = torch.cat([prev.to(xi.dtype), xi], dim=-1)  # (B, d_inner, d_conv + L)
        # depthwise causal conv as windows x taps (cheaper than a grouped conv1d on CPU, backward included)
        taps = window[..., 1:].unfold(-1, cfg.d_conv, 1)  # (B, d_inner, L, d_conv)
        xc = (taps * self.conv1d.weight[:, 0, None, :]).sum(-1)
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias[:, None]
        xc = F.silu(xc)  # (B, d_inner, L)
        dt, b, c = self._ssm_inputs(xc.transpose(1, 2))
        y, h = selective_scan(xc, dt.transpose(1, 2), self._A(), b.transpose(1, 2), c.transpose(1, 2), self.D, z,
                              delta_bias=self.dt_proj.bias, delta_softplus=True,
                              h0=state.ssm if state is not None else None, return_states=all_states,
                              impl=self._scan_for(x))
        out = self.out_proj(y.transpose(1, 2))  # (B, L, D)
        if all_states:
            conv = window.float().unfold(-1, cfg.d_conv, 1)[:, :, 1:]  # (B, d_inner, L, d_conv)
        else:
            conv = window.float()[..., -cfg.d_conv:]  # (B, d_inner, d_conv)
        return out, conv, h

    def _torch_continue(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """Inference (no grad) continuation from ``state`` over L new tokens in plain PyTorch, in few ops:
        the engine's cached path on the CPU (hundreds of calls of ~6 tokens per control step, where the
        time is per-op dispatch, not arithmetic). The arithmetic of the sequential scan
        (h = exp(delta A) h + delta B u, y = <h, C> + D u, gate), with every per-token factor computed
        for all L tokens at once, so that the token loop is one fused multiply-add per token."""
        cfg = self.cfg
        _batch, length, _ = x.shape
        n, r, k = cfg.d_state, cfg.rank, cfg.d_conv
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, d_inner) each
        window = torch.cat([state.conv[..., 1:].to(xi.dtype), xi.transpose(1, 2)], dim=-1)  # (B, d_inner, k-1+L)
        taps = window.unfold(-1, k, 1)  # (B, d_inner, L, k)
        xc = (taps * self.conv1d.weight[:, 0, None, :]).sum(-1)
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias[:, None]
        u = F.silu(xc).transpose(1, 2).float()  # (B, L, d_inner)
        x_dbl = F.linear(u.to(x.dtype), self.x_proj.weight)  # (B, L, r + 2N)
        delta = F.softplus(F.linear(x_dbl[..., :r], self.dt_proj.weight).float() + self.dt_proj.bias.float())
        bm, cm = x_dbl[..., r:r + n].float(), x_dbl[..., r + n:].float()  # (B, L, N)
        d_a = torch.exp(delta.transpose(0, 1)[..., None] * self._A())  # (L, B, d_inner, N)
        d_bu = (delta * u).transpose(0, 1)[..., None] * bm.transpose(0, 1)[:, :, None, :]  # (L, B, d_inner, N)
        hs = torch.empty_like(d_a)
        h = state.ssm.float()
        for t in range(length):
            h = torch.addcmul(d_bu[t], d_a[t], h, out=hs[t])
        y = (hs * cm.transpose(0, 1)[:, :, None, :]).sum(-1).transpose(0, 1)  # (B, L, d_inner)
        y = torch.addcmul(y, u, self.D.float())
        y = (y * F.silu(z.float())).to(x.dtype)
        return self.out_proj(y), MambaState(window[..., -k:].float(), h)

    # ---- one token ----
    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """x (B, D) -> y (B, D), new state."""
        ops = self._continue_ops(x)
        if ops is not None:
            y, new = self._kernel_continue(x[:, None], state, ops)
            return y[:, 0], new
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, d_inner)
        conv = torch.cat([state.conv[..., 1:], xi.float()[..., None]], dim=-1)  # (B, d_inner, d_conv)
        w = self.conv1d.weight[:, 0].float()  # (d_inner, d_conv)
        xc = (conv * w).sum(-1)
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias.float()
        xc = F.silu(xc).to(x.dtype)  # (B, d_inner)
        dt, b, c = self._ssm_inputs(xc)
        dt = F.softplus(dt.float() + self.dt_proj.bias.float())  # (B, d_inner)
        dA = torch.exp(dt[..., None] * self._A())  # (B, d_inner, N)
        ssm = state.ssm * dA + (dt * xc.float())[..., None] * b.float()[:, None, :]
        y = torch.einsum("bdn,bn->bd", ssm, c.float()) + self.D.float() * xc.float()
        y = (y * F.silu(z.float())).to(x.dtype)
        return self.out_proj(y), MambaState(conv, ssm)

    # ---- CUDA kernels (optional) ----
    def _sequence_kernels(self, x: Tensor) -> bool:
        """Whether a sequence from a zero state runs mamba-ssm's kernels (CUDA, imported, ``use_kernels``)."""
        return kernels.usable(x, self.use_kernels) and kernels.have_sequence_kernels()

    def _xz(self, x: Tensor) -> Tensor:
        return self.in_proj(x).transpose(1, 2).contiguous()  # (B, 2 d_inner, L)

    def _kernel_fused(self, x: Tensor) -> Tensor:
        return kernels.mamba_inner_fn(
            self._xz(x), self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
            self.out_proj.weight, self.out_proj.bias, self._A(), None, None, self.D.float(),
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True)

    def _kernel_prefill(self, x: Tensor) -> tuple[Tensor, MambaState]:
        cfg = self.cfg
        xi, z = self._xz(x).chunk(2, dim=1)  # (B, d_inner, L)
        conv_state = F.pad(xi, (cfg.d_conv - xi.shape[-1], 0)).float()  # pads or crops to d_conv
        xc = kernels.causal_conv1d_fn(xi, self.conv1d.weight[:, 0], self.conv1d.bias, activation="silu")
        dt, b, c = self._ssm_inputs(xc.transpose(1, 2))
        y, last = kernels.selective_scan_fn(
            xc, dt.transpose(1, 2).contiguous(), self._A(), b.transpose(1, 2).contiguous(),
            c.transpose(1, 2).contiguous(), self.D.float(), z.contiguous(), delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True, return_last_state=True)
        return self.out_proj(y.transpose(1, 2)), MambaState(conv_state, last.float())

    CONTINUE_IMPLS = ("auto", "scan", "state_update")
    # "auto" loops selective_state_update up to this many tokens, and uses the scan beyond: per layer,
    # state_update launches about 11 + L kernels, scan about 25 whatever L (see _kernel_continue)
    STATE_UPDATE_MAX_LEN = 8

    def _needs_backward(self, x: Tensor) -> bool:
        """Whether autograd records this call (training: the streaming layouts' branches continue from
        the trunk's states)."""
        return torch.is_grad_enabled() and (x.requires_grad or self.in_proj.weight.requires_grad)

    def _continue_ops(self, x: Tensor) -> kernels.KernelOps | None:
        """Which kernels the continue-from-state path runs: the CUDA ones, their PyTorch stand-ins
        (``kernel_emulation``, any device: for tests), or None (the plain PyTorch path)."""
        if self.kernel_emulation:
            return kernels.TORCH_OPS
        if kernels.usable(x, self.use_kernels) and kernels.have_continue_kernels():
            return kernels.cuda_ops()
        return None

    def _kernel_continue(self, x: Tensor, state: MambaState, ops: kernels.KernelOps) -> tuple[Tensor, MambaState]:
        """Continue from ``state`` over L tokens, the per-sequence work done once for all of them:
        in_proj, the depthwise conv over [conv state, x] (causal_conv1d_fn, SiLU fused), x_proj, dt_proj
        and A once; then the SSM either
        - "scan": no token loop: one selective_scan_fn from a zero state, plus the initial state's part in
          closed form (the SSM is linear in its state and A is constant over time):
              h_t = exp(A * sum_{s<=t} delta_s) * h0 + h_t^zero,   y_t += <exp(A * sum delta) * h0, C_t>,
          added before the SiLU(z) gate, which is therefore applied here and not in the kernel;
        - "state_update": one selective_state_update per token on a copy of the ssm state (no other
          per-token work). Inference only: the kernel has no backward, so under autograd (training the
          streaming layouts, whose action branches continue from the trunk's states) the scan runs instead.
        "auto": state_update for up to STATE_UPDATE_MAX_LEN tokens, scan beyond. The given state is never
        written to. Kernel launches per call (fp32 weights, no biases on in/out_proj): shared part 11 (in_proj,
        cat, conv, copy + x_proj, dt_proj, exp + neg for A, copy + out_proj), then state_update: clone, L
        updates, stack; scan: 2 copies (B, C), the scan, 12 elementwise for the initial state's part."""
        cfg = self.cfg
        batch, length, _ = x.shape
        k, di, n, r = cfg.d_conv, cfg.d_inner, cfg.d_state, cfg.rank
        if length == 0:
            return self.out_proj(x.new_zeros(batch, 0, di)), state
        xi, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) views
        # conv over the last d_conv - 1 inputs of the state followed by the L new ones; the first d_conv - 1
        # outputs of the window are not needed. New conv state: the last d_conv inputs.
        window = torch.cat([state.conv[..., 1:].to(xi.dtype), xi], dim=-1)  # (B, d_inner, d_conv - 1 + L)
        xc = ops.causal_conv1d_fn(window, self.conv1d.weight[:, 0], self.conv1d.bias, activation="silu")
        xc = xc[..., k - 1:]  # (B, d_inner, L), stride(-1) == 1
        conv = window[..., -k:].float()
        # x_proj / dt_proj in the layouts of mamba_ssm's mamba_inner_fn
        x_dbl = F.linear(xc.transpose(1, 2).reshape(batch * length, di), self.x_proj.weight)  # (B L, r + 2N)
        dt = (self.dt_proj.weight @ x_dbl[:, :r].t()).view(di, batch, length).permute(1, 0, 2)  # (B, d_inner, L)
        A = -torch.exp(self.A_log.float())  # (d_inner, N), once per call
        D, dt_bias = self.D.float(), self.dt_proj.bias.float()
        impl = self.continue_impl
        if impl == "auto":
            impl = "state_update" if length <= self.STATE_UPDATE_MAX_LEN else "scan"
        if impl == "state_update" and self._needs_backward(x):
            impl = "scan"  # selective_state_update has no backward (its output would carry no gradient)
        if impl == "state_update":
            bc = x_dbl.view(batch, length, r + 2 * n)
            ssm = state.ssm.float().clone(memory_format=torch.contiguous_format)  # updated in place
            ys = [ops.selective_state_update(ssm, xc[:, :, t], dt[:, :, t], A, bc[:, t, r:r + n],
                                             bc[:, t, r + n:], D, z=z[:, :, t], dt_bias=dt_bias, dt_softplus=True)
                  for t in range(length)]
            y = torch.stack(ys, dim=1)  # (B, L, d_inner)
            return self.out_proj(y), MambaState(conv, ssm)
        if impl != "scan":
            raise ValueError(f"continue_impl must be one of {self.CONTINUE_IMPLS}, got {impl!r}")
        b = x_dbl[:, r:r + n].view(batch, length, n).transpose(1, 2).contiguous()  # (B, N, L)
        c = x_dbl[:, r + n:].view(batch, length, n).transpose(1, 2).contiguous()
        y0, last0 = ops.selective_scan_fn(xc, dt, A, b, c, D, None, delta_bias=dt_bias, delta_softplus=True,
                                          return_last_state=True)  # from a zero state, D-skip included, no gate
        delta = F.softplus(dt.float() + dt_bias[:, None])  # (B, d_inner, L), as the kernel computes it
        carried = torch.exp(delta.cumsum(-1)[:, :, None, :] * A[:, :, None]) * state.ssm.float()[..., None]
        y = y0.float() + (carried * c.float()[:, None]).sum(2)  # (B, d_inner, L)
        y = (y * F.silu(z.float())).to(x.dtype)
        ssm = carried[..., -1] + last0.float()  # (B, d_inner, N)
        return self.out_proj(y.transpose(1, 2)), MambaState(conv, ssm)


__all__ = ["MambaConfig", "MambaState", "Mamba", "init_linear_paper", "SCAN_IMPLS"]
