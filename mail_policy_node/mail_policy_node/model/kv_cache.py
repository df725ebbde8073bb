"""The keys and values of a Transformer's observation prefix, kept across calls: the KV cache.

A causal Transformer's token i depends on the tokens before it only through their keys and values at
every layer. Once the observation prefix [goal, obs ...] has run, its per-layer keys and values are all
a later token needs: a new observation step appends its own (attending to the cached ones), and the
action tokens of a denoising step attend to them without running the prefix again.

    cache = KVCache.allocate(n_layers, batch, n_heads, capacity, head_dim, device, dtype)  # empty
    mask = attention_mask(cache.length, span, M)   # once per stack call; span = cache.span()
    y = attend(q, k, v, *cache.held(layer, span), mask)  # per layer: M new tokens over the held and themselves
    write_(cache, keys, values)  ->  the cache with the new tokens appended (in place, see below)

Preallocated: ``capacity`` tokens per row, fixed when allocated (static shapes for CUDA graphs); every
row holds its own number of tokens (``length``), so rows of one batch may be at different points of
their episodes (per-row reset). Appending writes at positions length.. of the shared buffers and returns
a new tuple with the longer length: the rows' older tokens are never written again, so a cache of an
earlier length still reads the same tokens, but two different continuations of one cache would
overwrite each other's tokens (an episode has one).

Reading: on the CPU the attention reads the first max(length) positions (a host read costs nothing
there); on CUDA all ``capacity`` positions, masked (reading the length would synchronise, and a captured
graph needs static shapes), so there the cost of a step grows with the capacity, not with the episode
(a varlen kernel reading each row's length on the device would remove that; not used here).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class KVCacheFull(RuntimeError):
    """Appending would exceed the preallocated capacity of the cache."""


class KVCache(NamedTuple):
    """Per-layer keys and values of the tokens seen so far, and how many each row holds."""

    keys: tuple[Tensor, ...]  # per layer (B, H, C, D/H), C = capacity
    values: tuple[Tensor, ...]  # per layer (B, H, C, D/H)
    length: Tensor  # (B,) int64: tokens held per row

    @classmethod
    def allocate(cls, n_layers: int, batch: int, n_heads: int, capacity: int, head_dim: int, device=None,
                 dtype: torch.dtype = torch.float32) -> KVCache:
        if capacity < 1:
            raise ValueError(f"a KV cache needs a capacity >= 1 token, got {capacity}")
        buf = lambda: torch.zeros(batch, n_heads, capacity, head_dim, device=device, dtype=dtype)  # noqa: E731
        return cls(tuple(buf() for _ in range(n_layers)), tuple(buf() for _ in range(n_layers)),
                   torch.zeros(batch, dtype=torch.long, device=device))

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch(self) -> int:
        return self.length.shape[0]

    def nbytes(self) -> int:
        """Bytes of the preallocated buffers."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values, self.length))

    def span(self) -> int:
        """Positions an attention over the cache reads (see the module docstring)."""
        return self.capacity if self.length.is_cuda else int(self.length.max())

    def held(self, layer: int, span: int) -> tuple[Tensor, Tensor]:
        """Keys and values of ``layer`` at the first ``span`` positions (views)."""
        return self.keys[layer][:, :, :span], self.values[layer][:, :, :span]

    def check_room(self, tokens: int) -> None:
        """Raise `KVCacheFull` if a row cannot take ``tokens`` more (CPU only: on CUDA reading the length
        would synchronise; the engine checks its own step count before it appends)."""
        if not self.length.is_cuda and int(self.length.max()) + tokens > self.capacity:
            raise KVCacheFull(f"the KV cache holds {self.capacity} tokens per row; a row holding "
                              f"{int(self.length.max())} cannot take {tokens} more")


def attention_mask(length: Tensor, held: int, new: int) -> Tensor | None:
    """What new token i of row b may see among [``held`` cache positions, ``new`` tokens]: the positions
    its row holds (< length[b]) and new tokens 0..i. (B, 1, new, held + new) bool; None when nothing is
    held (then plain causal attention). The same for every layer: built once per stack call."""
    if held == 0:
        return None
    causal = torch.ones(new, new, dtype=torch.bool, device=length.device).tril()
    return torch.cat([held_mask(length, held, new), causal.expand(length.shape[0], 1, new, new)], -1)


def held_mask(length: Tensor, held: int, new: int) -> Tensor:
    """Which of ``held`` cache positions each of ``new`` tokens of row b may see: those the row holds
    (< length[b]). (B, 1, new, held) bool."""
    rows = torch.arange(held, device=length.device)[None] < length[:, None]  # (B, N)
    return rows[:, None, None].expand(length.shape[0], 1, new, held)


def attend(q: Tensor, k: Tensor, v: Tensor, held_k: Tensor, held_v: Tensor, mask: Tensor | None) -> Tensor:
    """Causal attention of M new tokens over a row's held tokens and themselves.

    q, k, v (B, H, M, d) of the new tokens; held_k, held_v (B, H, N, d) the cache's first N positions;
    mask from `attention_mask`. New token i sees every held token of its row and new tokens 0..i: what
    `F.scaled_dot_product_attention(is_causal=True)` computes for the same tokens in one sequence. One SDPA
    call over [held, new] (measured on the CPU, 1 thread: faster than attending to the two parts
    separately and merging, from N = 11 to N = 1000, the copy of the held part included). -> (B, H, M, d)."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, torch.cat([held_k, k], 2), torch.cat([held_v, v], 2), attn_mask=mask)


def write_(cache: KVCache, keys: list[Tensor], values: list[Tensor]) -> KVCache:
    """Append M tokens per row (per layer keys / values (B, H, M, d)) at each row's length, in place;
    -> the cache with length + M (the buffers are shared, see the module docstring)."""
    m = keys[0].shape[2]
    b, h, _, d = cache.keys[0].shape
    pos = cache.length[:, None] + torch.arange(m, device=cache.length.device)[None]  # (B, M)
    index = pos[:, None, :, None].expand(b, h, m, d)
    for buf, new in zip(cache.keys + cache.values, list(keys) + list(values)):
        buf.scatter_(2, index, new.to(buf.dtype))
    return cache._replace(length=cache.length + m)
