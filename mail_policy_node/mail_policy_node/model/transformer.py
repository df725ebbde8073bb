"""D-Tr and ED-Tr Transformer baselines (paper layouts only; see backbones.py).

Pre-norm blocks, LayerNorm without bias, causal self-attention with 4 heads, attention and residual
dropout, MLP x4 with GELU, final LayerNorm. The ED-Tr decoder block attends causally to itself and,
without a mask, to the encoder output; as in the authors' harness the two attention results are summed
before one shared output projection (this is what gives their 2.28 M parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import BackboneConfig, TokenLayout
from .mamba import init_linear_paper


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


class _TransformerBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = TokenLayout(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.head == "bc":
            self.queries = nn.Parameter(nn.init.normal_(self.layout.pos_emb.new_empty(
                1, cfg.action_horizon, cfg.d_model), std=0.02))

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
        prefix, slots = self._tokens(obs, actions, time)
        return self.stack(self.drop(torch.cat([prefix, slots], 1)))[:, -self.cfg.action_horizon:]


class EDTransformer(_TransformerBackbone):
    def __init__(self, cfg: BackboneConfig):
        super().__init__(cfg)
        self.encoder = TransformerStack(cfg, cfg.n_enc_layers)
        self.decoder = TransformerStack(cfg, cfg.n_layers, cross=True)
        init_linear_paper(self)

    def forward(self, obs: Tensor, actions: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        prefix, slots = self._tokens(obs, actions, time)
        memory = self.encoder(self.drop(prefix))
        return self.decoder(self.drop(slots), memory)
