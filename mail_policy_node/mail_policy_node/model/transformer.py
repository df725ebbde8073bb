"""D-Tr and ED-Tr Transformer baselines (paper layouts, and streaming layouts with a KV cache; see backbones.py).

Pre-norm blocks, LayerNorm without bias, causal self-attention with 4 heads, attention and residual
dropout, MLP x4 with GELU, final LayerNorm. The ED-Tr decoder block attends causally to itself and,
without a mask, to the encoder output; as in the authors' harness the two attention results are summed
before one shared output projection (this is what gives their 2.28 M parameters).

D-Tr streaming layout, as D-Ma's: [goal, obs ... | time, noisy] (DDPM) or [goal, obs ... | J queries]
(BC), causal, no observation positions (the action slots get their slot embedding). The paper layout puts
the time token first, so every observation token depends on the diffusion step and nothing can be kept;
here nothing left of "|" depends on the step, and the streaming primitives of mamba_backbones.py carry
the prefix as per-layer keys and values (model/kv_cache.py) instead of a recurrent state:

    state = backbone.init_state(batch, device)            # StreamState((KVCache,)), empty, preallocated
    state = backbone.observe(obs_tokens (B, L, D), state)  # append L tokens (attending to the held ones)
    out = backbone.act(state, actions, time)               # (B, J, D): only the suffix tokens run

``forward`` of the streaming layout (the whole sequence at once) is the recompute they equal. The cache
holds ``cache_tokens`` tokens per row (`set_runtime`; default one window: goal + K * P); `observe` writes
into the given state's buffers (kv_cache.py says why that is safe for one episode).

ED-Tr streaming layout: enc [goal, obs ... | time] (causal), dec [noisy] or [J queries] (causal self
attention, cross attention to every encoder output). Its state: the encoder's KV cache, and per decoder
layer the cross attention's keys and values of the prefix's encoder outputs; act() runs the time token
through the encoder and the J slots through the decoder.

The streaming layouts are not training layouts yet: there is no forward_episode (history "stream"
training) and no preset; `transformer_streaming_config` builds their config (see there).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import BackboneConfig, TokenLayout
from .kv_cache import KVCache, attend, attention_mask, held_mask, write_
from .mamba import init_linear_paper
from .mamba_backbones import StreamState


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float, cross: bool):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        if cross:
            self.cross_q = nn.Linear(d, d)
            self.cross_kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.resid_drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, N, d/H)

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = (self._heads(t) for t in self.qkv(x).split(d, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, N, d/H)
        if memory is not None:
            mk, mv = (self._heads(t) for t in self.cross_kv(memory).split(d, dim=-1))
            y = y + F.scaled_dot_product_attention(self._heads(self.cross_q(x)), mk, mv, dropout_p=p)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))

    def continued(self, x: Tensor, held_k: Tensor | None, held_v: Tensor | None, mask: Tensor | None,
                  cross: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention of new tokens x (B, M, D) continuing a sequence whose keys / values are held
        (kv_cache.attend; mask None: nothing held). ``cross`` (ED-Tr decoder): the memory's keys and values
        (B, H, N, d) and which of them each row holds (B, 1, M, N) bool. -> (output (B, M, D), the new
        tokens' keys, values)."""
        b, n, d = x.shape
        q, k, v = (self._heads(t) for t in self.qkv(x).split(d, dim=-1))
        y = attend(q, k, v, held_k, held_v, mask)
        if cross is not None:
            mk, mv, held = cross
            y = y + F.scaled_dot_product_attention(self._heads(self.cross_q(x)), mk, mv, attn_mask=held)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, n, d))), k, v

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """The cross attention's keys and values of encoder outputs (B, N, D) -> (B, H, N, d) each."""
        return tuple(self._heads(t) for t in self.cross_kv(memory).split(memory.shape[-1], dim=-1))


class TransformerBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float, cross: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(d, bias=False)
        self.attn = Attention(d, n_heads, dropout, cross)
        self.ln2 = nn.LayerNorm(d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), memory)
        return x + self.mlp(self.ln2(x))

    def continued(self, x: Tensor, held_k: Tensor | None, held_v: Tensor | None, mask: Tensor | None,
                  cross: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """forward() of new tokens continuing a held sequence (Attention.continued) -> (x, keys, values)."""
        a, k, v = self.attn.continued(self.ln1(x), held_k, held_v, mask, cross)
        x = x + a
        return x + self.mlp(self.ln2(x)), k, v


class TransformerStack(nn.Module):
    def __init__(self, cfg: BackboneConfig, n_layers: int, cross: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(cfg.d_model, cfg.n_heads, cfg.dropout, cross)
                                    for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        for b in self.blocks:
            x = b(x, memory)
        return self.ln_f(x)

    def continued(self, x: Tensor, cache: KVCache) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The stack on new tokens x (B, M, D) after the tokens ``cache`` holds (not changed) ->
        (final-normed output (B, M, D), per-layer keys, per-layer values of the new tokens)."""
        span = cache.span()
        mask = attention_mask(cache.length, span, x.shape[1])
        keys, values = [], []
        for i, b in enumerate(self.blocks):
            x, k, v = b.continued(x, *cache.held(i, span), mask)
            keys.append(k)
            values.append(v)
        return self.ln_f(x), keys, values


class _TransformerBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = TokenLayout(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.head == "bc":
            self.queries = nn.Parameter(nn.init.normal_(torch.empty(1, cfg.action_horizon, cfg.d_model), std=0.02))
        # run-time, not part of the weights: tokens per row of the KV caches init_state() allocates
        self.cache_tokens = cfg.n_obs_tokens

    @property
    def streaming(self) -> bool:
        return self.cfg.layout == "streaming"

    def _need_streaming(self) -> None:
        if not self.streaming:
            raise ValueError(f"observe/act need layout 'streaming', this backbone has {self.cfg.layout!r}")

    def _slots(self, actions: Tensor | None, batch: int) -> Tensor:
        """The J action slots: noisy actions (DDPM) or the learnable queries (BC), with their embedding."""
        if self.cfg.head == "bc":
            return self.layout.actions(self.queries.expand(batch, -1, -1))
        if actions is None:
            raise ValueError("a DDPM backbone needs the embedded noisy actions")
        return self.layout.actions(actions)

    def _check_time(self, time: Tensor | None) -> None:
        if self.cfg.head == "ddpm" and time is None:
            raise ValueError("a DDPM backbone needs the time embedding")

    def _empty_cache(self, stack: TransformerStack, batch: int, capacity: int, device) -> KVCache:
        attn = stack.blocks[0].attn
        return KVCache.allocate(len(stack.blocks), batch, attn.n_heads, capacity, self.cfg.d_model // attn.n_heads,
                                device, attn.qkv.weight.dtype)

    def set_runtime(self, scan_impl: str | None = None, use_kernels: bool | None = None,
                    continue_impl: str | None = None, fused: str | None = None,
                    cache_tokens: int | None = None) -> None:
        """cache_tokens: the KV caches' capacity per row (init_state). The other knobs are the Mamba
        stacks' (mamba_backbones.py); a Transformer has none of them and ignores them."""
        if cache_tokens is not None:
            if cache_tokens < 1:
                raise ValueError(f"cache_tokens must be >= 1, got {cache_tokens}")
            self.cache_tokens = int(cache_tokens)

    def _tokens(self, obs, actions, time) -> tuple[Tensor, Tensor]:
        """-> (prefix [time, goal, obs] (B, N, D), action slots (B, J, D))."""
        if self.cfg.head == "ddpm":
            if actions is None or time is None:
                raise ValueError("a DDPM backbone needs the embedded noisy actions and the time embedding")
            slots = actions
        else:
            slots = self.queries.expand(obs.shape[0], -1, -1)
        prefix = self.layout.obs(obs)
        if self.cfg.head == "ddpm":
            prefix = torch.cat([time[:, None], prefix], 1)
        return prefix, self.layout.actions(slots)


class DTransformer(_TransformerBackbone):
    def __init__(self, cfg: BackboneConfig):
        super().__init__(cfg)
        self.stack = TransformerStack(cfg, cfg.n_layers)
        init_linear_paper(self)  # the authors' harness initialises every Linear N(0, 0.02), both inits

    def forward(self, obs: Tensor, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        if self.streaming:
            seq = torch.cat([self.layout.obs(obs), self._suffix(actions, time, obs.shape[0])], 1)
            return self.stack(self.drop(seq))[:, -self.cfg.action_horizon:]
        prefix, slots = self._tokens(obs, actions, time)
        return self.stack(self.drop(torch.cat([prefix, slots], 1)))[:, -self.cfg.action_horizon:]

    # ---- streaming layout: the observation prefix as a KV cache ----
    def _suffix(self, actions: Tensor | None, time: Tensor | None, batch: int) -> Tensor:
        """[time, noisy actions] (DDPM) or the J queries (BC), with the slot embedding. (B, M, D)"""
        self._check_time(time)
        slots = self._slots(actions, batch)
        return torch.cat([time[:, None].to(slots.dtype), slots], 1) if self.cfg.head == "ddpm" else slots

    def init_state(self, batch: int, device=None) -> StreamState:
        """An empty KV cache of ``cache_tokens`` tokens per row, in the weights' dtype."""
        self._need_streaming()
        return StreamState((self._empty_cache(self.stack, batch, self.cache_tokens, device),))

    def observe(self, obs: Tensor, state: StreamState | None) -> StreamState:
        """Append observation tokens (B, L, D): each attends to the held ones and to those before it.
        state None: an empty cache of exactly L tokens. Writes into ``state``'s buffers (kv_cache.py)."""
        self._need_streaming()
        cache = (self._empty_cache(self.stack, obs.shape[0], obs.shape[1], obs.device) if state is None
                 else state.stacks[0])
        cache.check_room(obs.shape[1])
        _, keys, values = self.stack.continued(self.drop(self.layout.obs(obs)), cache)
        return StreamState((write_(cache, keys, values),))

    def act(self, state: StreamState, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        """(B, J, D): only the suffix tokens run, attending to the cached prefix; ``state`` is not changed."""
        self._need_streaming()
        cache = state.stacks[0]
        out, _, _ = self.stack.continued(self.drop(self._suffix(actions, time, cache.batch)), cache)
        return out[:, -self.cfg.action_horizon:]


class EDTransformer(_TransformerBackbone):
    def __init__(self, cfg: BackboneConfig):
        super().__init__(cfg)
        self.encoder = TransformerStack(cfg, cfg.n_enc_layers)
        self.decoder = TransformerStack(cfg, cfg.n_layers, cross=True)
        init_linear_paper(self)

    def forward(self, obs: Tensor, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        if self.streaming:
            self._check_time(time)
            enc = torch.cat([obs, time[:, None].to(obs.dtype)], 1) if self.cfg.head == "ddpm" else obs
            return self.decoder(self.drop(self._slots(actions, obs.shape[0])), self.encoder(self.drop(enc)))
        prefix, slots = self._tokens(obs, actions, time)
        memory = self.encoder(self.drop(prefix))
        return self.decoder(self.drop(slots), memory)

    # ---- streaming layout: enc [goal, obs ... | time], dec [slots] with cross attention to all of enc ----
    # State: the encoder's KV cache (to append steps) and, per decoder layer, the cross attention's keys
    # and values of the encoder outputs of the prefix (a KVCache over the decoder's layers). act() runs the
    # time token through the encoder (DDPM) and the J slots through the decoder.
    def init_state(self, batch: int, device=None) -> StreamState:
        self._need_streaming()
        return StreamState((self._empty_cache(self.encoder, batch, self.cache_tokens, device),
                            self._empty_cache(self.decoder, batch, self.cache_tokens, device)))

    def observe(self, obs: Tensor, state: StreamState | None) -> StreamState:
        """Append observation tokens (B, L, D) to the encoder's cache and their encoder outputs' keys and
        values to the decoder's. state None: empty caches of exactly L tokens."""
        self._need_streaming()
        b, n = obs.shape[:2]
        if state is None:
            enc, mem = (self._empty_cache(s, b, n, obs.device) for s in (self.encoder, self.decoder))
        else:
            enc, mem = state.stacks
        enc.check_room(n)
        out, keys, values = self.encoder.continued(self.drop(self.layout.obs(obs)), enc)  # out: final-normed
        mk, mv = zip(*(blk.attn.memory_kv(out) for blk in self.decoder.blocks))
        return StreamState((write_(enc, keys, values), write_(mem, list(mk), list(mv))))

    def act(self, state: StreamState, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        """(B, J, D): the time token (DDPM) continues the encoder, the slots run the decoder over the held
        memory and the time token's; ``state`` is not changed."""
        self._need_streaming()
        self._check_time(time)
        enc, mem = state.stacks
        b = enc.batch
        x = self.drop(self._slots(actions, b))
        m, span = x.shape[1], mem.span()
        held = held_mask(mem.length, span, m)
        t_out = None
        if self.cfg.head == "ddpm":
            t_out, _, _ = self.encoder.continued(self.drop(time[:, None].to(x.dtype)), enc)  # (B, 1, D)
            held = torch.cat([held, held.new_ones(b, 1, m, 1)], -1)
        for i, blk in enumerate(self.decoder.blocks):
            mk, mv = mem.held(i, span)
            if t_out is not None:
                tk, tv = blk.attn.memory_kv(t_out)
                mk, mv = torch.cat([mk, tk], 2), torch.cat([mv, tv], 2)
            x, _, _ = blk.continued(x, None, None, None, cross=(mk, mv, held))
        return self.decoder.ln_f(x)


def transformer_streaming_config(cfg: BackboneConfig) -> BackboneConfig:
    """``cfg`` (a D-Tr or ED-Tr config) with layout "streaming".

    BackboneConfig (backbones.py) admits layout "streaming" for the Mamba families only, and there is no
    "d_tr_*_stream" preset; until both admit the Transformers, this is how their streaming config is
    built: every other field is validated as usual, only the layout check is passed by. A checkpoint saved
    from such a policy is refused at load by that same check (CheckpointError), so it cannot reach a robot
    by accident.
    """
    if cfg.variant not in ("d_tr", "ed_tr"):
        raise ValueError(f"the KV-cached streaming layout exists for d_tr and ed_tr, got {cfg.variant!r}")
    out = replace(cfg, layout="paper")
    object.__setattr__(out, "layout", "streaming")  # frozen dataclass: the one field set past its check
    return out
