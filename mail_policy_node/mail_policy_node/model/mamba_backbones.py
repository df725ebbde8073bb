"""D-Ma and ED-Ma backbones, in the paper's layouts and in streaming layouts (see backbones.py).

Common call: ``forward(obs (B, N, D), actions (B, J, D) | None, time (B, D) | None) -> (B, J, D)``;
``actions`` are embedded noisy actions (DDPM) or None (BC: learnable queries), ``time`` the diffusion
time embedding (DDPM). Streaming layouts add the primitives the engine calls:

    state = backbone.init_state(batch, device)            # StreamState, zeros
    state = backbone.observe(obs_tokens (B, L, D), state)  # advance the observation prefix by L tokens
                                                           # (state None: from zeros)
    out = backbone.act(state, actions, time)               # (B, J, D); never modifies ``state``

and ``forward_episode`` to train on whole episodes: one observation trunk, and after every control
step's observation tokens a branch with the action tokens, run from the trunk state at that point
without entering the trunk -- exactly what observe()/act() compute at run time.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .backbones import BackboneConfig, TokenLayout
from .mamba import MambaState, init_linear_paper
from .stack import MambaStack, StackState


class StreamState(NamedTuple):
    """Recurrent state of a streaming backbone: one StackState per stack, fp32.
    D-Ma: (decoder,). ED-Ma: (encoder, decoder). Treat as immutable; every call returns a new one."""
    stacks: tuple[StackState, ...]


def _tok(n: int, d: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(1, n, d) * 0.02)


class _MambaBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        if not cfg.is_mamba:
            raise ValueError(f"{type(self).__name__} needs a Mamba variant, got {cfg.variant!r}")
        self.cfg = cfg
        self.layout = TokenLayout(cfg)
        if cfg.head == "bc":
            self.queries = _tok(cfg.action_horizon, cfg.d_model)  # J learnable query / action tokens

    def _finish_init(self) -> None:
        if self.cfg.init == "paper":
            init_linear_paper(self)

    @property
    def streaming(self) -> bool:
        return self.cfg.layout == "streaming"

    def _slots(self, actions: Tensor | None, batch: int) -> Tensor:
        """The J action slots: noisy actions (DDPM) or learnable queries (BC), with positions. (B, J, D)"""
        if self.cfg.head == "ddpm":
            if actions is None:
                raise ValueError("a DDPM backbone needs the embedded noisy actions")
            return self.layout.actions(actions)
        return self.layout.actions(self.queries.expand(batch, -1, -1))

    def _check_time(self, time: Tensor | None) -> None:
        if self.cfg.head == "ddpm" and time is None:
            raise ValueError("a DDPM backbone needs the time embedding")

    def _need_streaming(self) -> None:
        if not self.streaming:
            raise ValueError(f"observe/act need layout 'streaming', this backbone has {self.cfg.layout!r}")

    def stacks(self) -> tuple[MambaStack, ...]:
        raise NotImplementedError

    def init_state(self, batch: int, device=None) -> StreamState:
        self._need_streaming()
        return StreamState(tuple(s.allocate_inference_cache(batch, device) for s in self.stacks()))

    def set_runtime(self, scan_impl: str | None = None, use_kernels: bool | None = None,
                    continue_impl: str | None = None, fused: str | None = None) -> None:
        for s in self.stacks():
            s.set_runtime(scan_impl, use_kernels, continue_impl, fused)


class DMamba(_MambaBackbone):
    def __init__(self, cfg: BackboneConfig):
        super().__init__(cfg)
        self.stack = MambaStack(cfg.mamba(), cfg.n_layers)
        self._finish_init()

    def stacks(self):
        return (self.stack,)

    def _suffix(self, actions, time, batch) -> Tensor:
        slots = self._slots(actions, batch)
        return torch.cat([time[:, None], slots], 1) if self.cfg.head == "ddpm" else slots  # (B, M, D)

    def forward(self, obs: Tensor, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        self._check_time(time)
        batch, j = obs.shape[0], self.cfg.action_horizon
        obs = self.layout.obs(obs)
        if self.streaming:
            seq = torch.cat([obs, self._suffix(actions, time, batch)], 1)
        else:
            head = [time[:, None]] if self.cfg.head == "ddpm" else []
            seq = torch.cat(head + [obs, self._slots(actions, batch)], 1)  # (B, L, D)
        return self.stack(seq)[:, -j:]

    def observe(self, obs: Tensor, state: StreamState | None) -> StreamState:
        """state None: start from zeros (on CUDA, through the sequence kernels)."""
        self._need_streaming()
        _, s = self.stack.forward_with_state(obs, None if state is None else state.stacks[0])
        return StreamState((s,))

    def act(self, state: StreamState, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        self._need_streaming()
        self._check_time(time)
        batch = state.stacks[0][0].ssm.shape[0]
        return self.stack(self._suffix(actions, time, batch), state.stacks[0])[:, -self.cfg.action_horizon:]

    def forward_episode(self, obs: Tensor, at: Tensor, actions: Tensor | None = None,
                        time: Tensor | None = None) -> Tensor:
        """obs (B, N, D): an episode's observation tokens; at (S,): for each of S control steps, the index
        of its last observation token; actions (B, S, J, D), time (B, S, D) for DDPM. -> (B, S, J, D)."""
        self._need_streaming()
        self._check_time(time)
        batch, n_br = obs.shape[0], at.shape[0]
        flat = lambda t: None if t is None else t.reshape(batch * n_br, *t.shape[2:])  # noqa: E731
        suffix = self._suffix(flat(actions), flat(time), batch * n_br)
        _, out = self.stack.forward_branches(obs, suffix.reshape(batch, n_br, *suffix.shape[1:]), at)
        return out[:, :, -self.cfg.action_horizon:]


class EDMamba(_MambaBackbone):
    def __init__(self, cfg: BackboneConfig):
        super().__init__(cfg)
        self.encoder = MambaStack(cfg.mamba(), cfg.n_enc_layers)
        self.decoder = MambaStack(cfg.dec_mamba(), cfg.n_layers)
        n_state = 1 if self.streaming else cfg.n_obs_tokens + int(cfg.head == "ddpm")
        self.state_tokens = _tok(n_state, cfg.d_model)  # decoder tokens under obs (and time) positions
        self.action_tokens = _tok(cfg.action_horizon, cfg.d_model)  # encoder tokens under action slots
        self._finish_init()

    def stacks(self):
        return (self.encoder, self.decoder)

    def _enc_actions(self, batch: int) -> Tensor:
        return self.layout.actions(self.action_tokens.expand(batch, -1, -1))

    def _suffixes(self, actions, time, batch) -> tuple[Tensor, Tensor]:
        """Streaming: encoder [time, action tokens] / decoder [s, slots] (DDPM); no time for BC."""
        enc, dec = self._enc_actions(batch), self._slots(actions, batch)
        if self.cfg.head == "ddpm":
            enc = torch.cat([time[:, None], enc], 1)
            dec = torch.cat([self.state_tokens.expand(batch, 1, -1), dec], 1)
        return enc, dec

    def forward(self, obs: Tensor, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        self._check_time(time)
        batch, n_obs, j = obs.shape[0], obs.shape[1], self.cfg.action_horizon
        obs = self.layout.obs(obs)
        if self.streaming:
            enc_suf, dec_suf = self._suffixes(actions, time, batch)
            enc_seq = torch.cat([obs, enc_suf], 1)
            dec_seq = torch.cat([self.state_tokens.expand(batch, n_obs, -1), dec_suf], 1)
        else:
            head = [time[:, None]] if self.cfg.head == "ddpm" else []
            enc_seq = torch.cat(head + [obs, self._enc_actions(batch)], 1)  # (B, L, D)
            dec_seq = torch.cat([self.state_tokens.expand(batch, -1, -1), self._slots(actions, batch)], 1)
        enc_out = self.encoder(enc_seq)
        return self.decoder(dec_seq, add=enc_out)[:, -j:]

    def observe(self, obs: Tensor, state: StreamState | None) -> StreamState:
        """state None: start from zeros (on CUDA, through the sequence kernels)."""
        self._need_streaming()
        enc_state, dec_state = (None, None) if state is None else state.stacks
        enc_out, enc_state = self.encoder.forward_with_state(obs, enc_state)
        dec_in = self.state_tokens.expand(obs.shape[0], obs.shape[1], -1)
        _, dec_state = self.decoder.forward_with_state(dec_in, dec_state, add=enc_out)
        return StreamState((enc_state, dec_state))

    def act(self, state: StreamState, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        self._need_streaming()
        self._check_time(time)
        return self.act_decoder(state, actions, self.act_encoder(state, time))

    def act_encoder(self, state: StreamState, time: Tensor | None = None) -> Tensor:
        """The encoder's half of act(): its suffix [time, action tokens] does not depend on the noisy
        actions, so a sampler can run it once for all of its diffusion steps. time (R * B, D) for R steps
        at once (row r * B + b continues from state row b), or None (BC) -> encoder output (R * B, M, D)."""
        self._need_streaming()
        enc_state = state.stacks[0]
        batch = enc_state[0].ssm.shape[0]
        rows = batch if time is None else time.shape[0]
        if rows % batch:
            raise ValueError(f"act_encoder: {rows} time rows for a state of batch {batch}")
        if rows != batch:
            rep = rows // batch
            enc_state = tuple(MambaState(s.conv.repeat(rep, 1, 1), s.ssm.repeat(rep, 1, 1)) for s in enc_state)
        enc = self._enc_actions(rows)
        if self.cfg.head == "ddpm":
            enc = torch.cat([time[:, None].to(enc.dtype), enc], 1)
        return self.encoder(enc, enc_state)

    def act_decoder(self, state: StreamState, actions: Tensor | None, enc_out: Tensor) -> Tensor:
        """The decoder's half of act(), given act_encoder's output for these rows (B, M, D) -> (B, J, D)."""
        self._need_streaming()
        dec_state = state.stacks[1]
        batch = dec_state[0].ssm.shape[0]
        dec = self._slots(actions, batch)
        if self.cfg.head == "ddpm":
            dec = torch.cat([self.state_tokens.expand(batch, 1, -1), dec], 1)
        return self.decoder(dec, dec_state, add=enc_out)[:, -self.cfg.action_horizon:]

    def forward_episode(self, obs: Tensor, at: Tensor, actions: Tensor | None = None,
                        time: Tensor | None = None) -> Tensor:
        """Same contract as DMamba.forward_episode."""
        self._need_streaming()
        self._check_time(time)
        batch, n_obs, n_br = obs.shape[0], obs.shape[1], at.shape[0]
        flat = lambda t: None if t is None else t.reshape(batch * n_br, *t.shape[2:])  # noqa: E731
        enc_suf, dec_suf = self._suffixes(flat(actions), flat(time), batch * n_br)
        unflat = lambda t: t.reshape(batch, n_br, *t.shape[1:])  # noqa: E731
        enc_trunk, enc_br = self.encoder.forward_branches(obs, unflat(enc_suf), at)
        dec_trunk_in = self.state_tokens.expand(batch, n_obs, -1)
        _, out = self.decoder.forward_branches(dec_trunk_in, unflat(dec_suf), at, trunk_add=enc_trunk,
                                               branch_add=enc_br)
        return out[:, :, -self.cfg.action_horizon:]
