"""A stack of pre-norm residual Mamba blocks with a final LayerNorm, as in the MaIL backbones.

    h = x;  for each layer: h = h + mixer(LayerNorm(h)) [+ add];  out = LayerNorm_f(h)

`add` is ED-Ma's "Mamba aggregation": the encoder's final normalised output, added position by position
after every decoder layer. Module names (layers.i.norm, layers.i.mixer, norm_f) follow mamba-ssm's
MixerModel. A stack's state is one `MambaState` per layer; all paths are functional. As for `Mamba`,
`forward` returns the output only and `forward_with_state` the output and the new state.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import fused as fused_kernels
from .mamba import Mamba, MambaConfig, MambaState
from .scan import SCAN_IMPLS

StackState = tuple[MambaState, ...]  # one per layer


class Block(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.mixer = Mamba(cfg)


class MambaStack(nn.Module):
    def __init__(self, cfg: MambaConfig, n_layers: int):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"a Mamba stack needs n_layers >= 1, got {n_layers}")
        self.cfg = cfg
        self.layers = nn.ModuleList(Block(cfg) for _ in range(n_layers))
        self.norm_f = nn.LayerNorm(cfg.d_model, eps=1e-5)
        # run-time choice, not part of the weights: continuing from a state (or returning one) through the
        # fused Triton block kernel (model/fused.py): "auto" on CUDA when Triton imports and the mixers use
        # kernels; "off"; "on" on any device (tests, with Triton's interpreter)
        self.fused = "auto"

    FUSED_MODES = ("auto", "off", "on")

    def _use_fused(self, x: Tensor, state: StackState | None, want_state: bool) -> bool:
        if state is None and not want_state:
            return False  # a full forward from zeros: the sequence kernels (the reference path)
        if self.fused == "off" or (self.fused == "auto" and not (x.is_cuda and self.layers[0].mixer.use_kernels)):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.norm_f.weight.requires_grad):
            return False  # no backward through the kernel
        return all(fused_kernels.supports(b, x.shape[1]) for b in self.layers)

    def allocate_inference_cache(self, batch: int, device=None) -> StackState:
        return tuple(b.mixer.allocate_inference_cache(batch, device) for b in self.layers)

    def set_runtime(self, scan_impl: str | None = None, use_kernels: bool | None = None,
                    continue_impl: str | None = None, fused: str | None = None) -> None:
        """scan_impl: "auto" | "parallel" | "sequential"; use_kernels: mamba-ssm kernels on CUDA;
        continue_impl: "auto" | "scan" | "state_update", the kernel path that continues from a state;
        fused: "auto" | "off" | "on", the one-launch-per-block Triton path (see ``fused`` above)."""
        if fused is not None:
            if fused not in self.FUSED_MODES:
                raise ValueError(f"fused must be one of {self.FUSED_MODES}, got {fused!r}")
            self.fused = fused
        if scan_impl is not None and scan_impl not in SCAN_IMPLS + ("auto",):
            raise ValueError(f"scan_impl must be one of {SCAN_IMPLS + ('auto',)}, got {scan_impl!r}")
        if continue_impl is not None and continue_impl not in Mamba.CONTINUE_IMPLS:
            raise ValueError(f"continue_impl must be one of {Mamba.CONTINUE_IMPLS}, got {continue_impl!r}")
        for b in self.layers:
            if continue_impl is not None:
                b.mixer.continue_impl = continue_impl
            if scan_impl is not None:
                b.mixer.scan_impl = scan_impl
            if use_kernels is not None:
                b.mixer.use_kernels = use_kernels

    def forward(self, x: Tensor, state: StackState | None = None, *, add: Tensor | None = None) -> Tensor:
        """x (B, L, D) [+ add (B, L, D)] -> (B, L, D). With ``state`` the L tokens continue that sequence;
        without, they start from zeros. Always a tensor: ``forward_with_state`` also returns the new state
        (two methods, not a flag, for the reasons given at ``Mamba.forward``; here, in addition, the fused
        path need not write a state that nobody reads)."""
        return self._run(x, state, add, want_state=False)[0]

    def forward_with_state(self, x: Tensor, state: StackState | None = None, *,
                           add: Tensor | None = None) -> tuple[Tensor, StackState]:
        """Like forward, and the state after the last token (one fp32 MambaState per layer): the streaming
        backbones' observe(). ``state`` is never written to."""
        return self._run(x, state, add, want_state=True)

    def _run(self, x: Tensor, state: StackState | None, add: Tensor | None,
             want_state: bool) -> tuple[Tensor, StackState | None]:
        """forward / forward_with_state; the new state is None when not ``want_state``."""
        if self._use_fused(x, state, want_state):
            h, new = fused_kernels.stack_continue(self, x, state, add, write_state=want_state)
            return self.norm_f(h), new
        new = []
        h = x
        for i, b in enumerate(self.layers):
            if want_state or state is not None:
                y, s = b.mixer.forward_with_state(b.norm(h), None if state is None else state[i])
                new.append(s)
            else:
                y = b.mixer(b.norm(h))
            h = h + y
            if add is not None:
                h = h + add
        return self.norm_f(h), tuple(new) if want_state else None

    def step(self, x: Tensor, state: StackState, add: Tensor | None = None) -> tuple[Tensor, StackState]:
        """x (B, D) [+ add (B, D)] -> (B, D), new state."""
        new = []
        h = x
        for b, s in zip(self.layers, state):
            y, s = b.mixer.step(b.norm(h), s)
            new.append(s)
            h = h + y
            if add is not None:
                h = h + add
        return self.norm_f(h), tuple(new)

    def forward_branches(self, trunk: Tensor, branch: Tensor, at: Tensor, state: StackState | None = None,
                         trunk_add: Tensor | None = None, branch_add: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run a trunk sequence, and in the same pass one short branch per entry of ``at``, each branch
        continuing from the trunk's state after token ``at[k]`` without entering the trunk.

        trunk (B, T, D); branch (B, S, M, D): S branches of M tokens; at (S,) long, trunk token index
        after which branch s starts (-1 = from ``state`` itself). Returns (trunk out (B, T, D), branch
        out (B, S, M, D)). This is what the streaming layouts train on: the same computation as
        observe() up to token at[s], then act() on a copy of that state."""
        bsz, n_br, m, d = branch.shape
        h, g = trunk, branch.reshape(bsz * n_br, m, d)
        for i, b in enumerate(self.layers):
            s0 = None if state is None else state[i]
            y, states = b.mixer.forward_states(b.norm(h), s0)  # conv (B, Di, T, d_conv), ssm (B, Di, T, N)
            start = s0 if s0 is not None else b.mixer.allocate_inference_cache(bsz, h.device)
            conv = torch.cat([start.conv[:, :, None], states.conv], dim=2)  # index 0 = before token 0
            ssm = torch.cat([start.ssm[:, :, None], states.ssm], dim=2)
            pick = at + 1
            bconv = conv[:, :, pick].permute(0, 2, 1, 3).reshape(bsz * n_br, *conv.shape[1:2], conv.shape[-1])
            bssm = ssm[:, :, pick].permute(0, 2, 1, 3).reshape(bsz * n_br, *ssm.shape[1:2], ssm.shape[-1])
            gy = b.mixer(b.norm(g), MambaState(bconv, bssm))
            h, g = h + y, g + gy
            if trunk_add is not None:
                h = h + trunk_add
            if branch_add is not None:
                g = g + branch_add.reshape(bsz * n_br, m, d)
        return self.norm_f(h), self.norm_f(g).reshape(bsz, n_br, m, d)
