"""Backbone configuration, token layouts and the factory. Which backbones exist (variants, classes,
sizes) is model/backbone_registry.py's: add one there.

A backbone maps observation tokens (and, for DDPM, embedded noisy actions and a time embedding) to J
output tokens. Token layouts (K obs steps, P tokens per step, J actions; "goal" is an optional first
observation token):

| variant, head | layout | sequence(s) | read |
| --- | --- | --- | --- |
| D-Ma/D-Tr DDPM | paper | [time, goal, obs, noisy] | last J |
| D-Ma/D-Tr BC | paper | [goal, obs, J queries] | last J |
| ED-Ma DDPM | paper | enc [time, goal, obs, J action tokens]; dec [state tokens (same count), noisy] | dec last J |
| ED-Ma BC | paper | enc [goal, obs, J action tokens]; dec [state tokens, J queries] | dec last J |
| ED-Tr DDPM | paper | enc [time, goal, obs]; dec [noisy] (causal self + cross attention) | dec |
| ED-Tr BC | paper | enc [goal, obs]; dec [J queries] | dec |
| DP-UNet DDPM | paper | 1-D UNet over [noisy] (channels D, length J), FiLM on [goal, obs] flattened + time | all J |
| D-Ma DDPM | streaming | [goal, obs ... | time, noisy] | last J |
| D-Ma BC | streaming | [goal, obs ... | J queries] | last J |
| ED-Ma DDPM | streaming | enc [goal, obs ... | time, J action tokens]; dec [s, s, ... | s, noisy] | dec last J |
| ED-Ma BC | streaming | enc [goal, obs ... | J action tokens]; dec [s, s, ... | J queries] | dec last J |

Paper layouts add a learnable position embedding of length K-1+J (zero init): tokens of obs step i get
position i, action slot j gets K-1+j; time and goal tokens get none. Streaming layouts have no
observation positions (a recurrent state over a whole episode has no window index); the J action slots
get a learnable slot embedding. "|" marks where the observation prefix ends: everything left of it is
advanced once per control step (`observe`), everything right of it runs from a copy of that state for
every denoising step (`act`). In ED-Ma streaming, "s" is one learnable decoder state token repeated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .backbone_registry import HEADS, BackboneFamily, backbone_family, backbone_variants, streaming_variants
from .mamba import MambaConfig

LAYOUTS = ("paper", "streaming")
INITS = ("paper", "mamba")


@dataclass(frozen=True)
class BackboneConfig:
    variant: str = "d_ma"  # a registered backbone (backbone_registry.backbone_variants())
    layout: str = "paper"  # "paper" (reproduction) or "streaming" (prefix state reuse; Mamba only)
    head: str = "ddpm"  # "bc" (learnable queries) or "ddpm" (time token + noisy actions)
    d_model: int = 128  # width of every token
    obs_steps: int = 5  # K: observation steps per window (paper layouts' positions; windows)
    obs_tokens_per_step: int = 1  # P: 1 = fused cameras, 2 = cameras + joint state
    goal_token: bool = False  # a goal (language) embedding token precedes the observations
    action_horizon: int = 5  # J: actions per chunk
    n_layers: int = 16  # decoder-only depth, or the decoder's depth for ED variants
    n_enc_layers: int = 0  # encoder depth for ED variants (0 for decoder-only)
    d_state: int = 16  # Mamba state size (decoder-only, or encoder)
    d_conv: int = 4  # Mamba conv length (decoder-only, or encoder)
    expand: int = 2  # Mamba expansion
    dec_d_state: int = 0  # ED-Ma decoder state size, 0 = d_state
    dec_d_conv: int = 0  # ED-Ma decoder conv length, 0 = d_conv
    n_heads: int = 4  # Transformer heads
    dropout: float = 0.1  # Transformer attention and residual dropout
    init: str = "paper"  # "paper": every Linear N(0, 0.02), zero bias; "mamba": Mamba's own dt init

    def __post_init__(self):
        for name, allowed in (("variant", backbone_variants()), ("layout", LAYOUTS), ("head", HEADS),
                              ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"BackboneConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.layout == "streaming" and not self.family.mamba:
            raise ValueError(f"layout 'streaming' exists for {' and '.join(streaming_variants())} only, "
                             f"got variant {self.variant!r}")
        if self.head not in self.family.paper_depths:  # a family has the heads it registers (DP-UNet: DDPM only)
            raise ValueError(f"variant {self.variant!r} has no head {self.head!r}; it has "
                             f"{tuple(self.family.paper_depths)}")
        for name in ("d_model", "obs_steps", "action_horizon", "n_layers", "d_state", "d_conv", "expand", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"BackboneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.obs_tokens_per_step not in (1, 2):
            raise ValueError(f"BackboneConfig.obs_tokens_per_step must be 1 or 2, got {self.obs_tokens_per_step}")
        encdec = self.family.encoder_decoder
        if encdec and self.n_enc_layers < 1:
            raise ValueError(f"variant {self.variant!r} needs n_enc_layers >= 1, got {self.n_enc_layers}")
        if not encdec and self.n_enc_layers != 0:
            raise ValueError(f"variant {self.variant!r} has no encoder, got n_enc_layers={self.n_enc_layers}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BackboneConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.dec_d_state < 0 or self.dec_d_conv < 0:
            raise ValueError(f"dec_d_state/dec_d_conv must be >= 0, got {self.dec_d_state}, {self.dec_d_conv}")

    @property
    def family(self) -> BackboneFamily:
        """The registry's entry for this variant: class, sizes, parameter arithmetic."""
        return backbone_family(self.variant)

    @property
    def is_mamba(self) -> bool:
        return self.family.mamba

    @property
    def n_obs_tokens(self) -> int:
        """Observation tokens in one window: goal + K * P."""
        return int(self.goal_token) + self.obs_steps * self.obs_tokens_per_step

    def mamba(self) -> MambaConfig:
        return MambaConfig(d_model=self.d_model, d_state=self.d_state, d_conv=self.d_conv, expand=self.expand)

    def dec_mamba(self) -> MambaConfig:
        return MambaConfig(d_model=self.d_model, d_state=self.dec_d_state or self.d_state,
                           d_conv=self.dec_d_conv or self.d_conv, expand=self.expand)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BackboneConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown BackboneConfig fields: {sorted(unknown)}")
        return cls(**d)


class TokenLayout(nn.Module):
    """Position / slot embeddings shared by all variants."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.layout == "paper":
            self.pos_emb = nn.Parameter(torch.zeros(1, cfg.obs_steps - 1 + cfg.action_horizon, cfg.d_model))
        else:
            self.act_slot = nn.Parameter(torch.zeros(1, cfg.action_horizon, cfg.d_model))

    def obs(self, obs: Tensor) -> Tensor:
        """obs (B, N, D) -> (B, N, D) with positions added (paper layouts; N = goal + K * P)."""
        cfg = self.cfg
        if cfg.layout != "paper":
            return obs
        if obs.shape[1] != cfg.n_obs_tokens:
            raise ValueError(f"expected {cfg.n_obs_tokens} observation tokens (goal + K*P), got {obs.shape[1]}")
        pos = self.pos_emb[:, :cfg.obs_steps].repeat_interleave(cfg.obs_tokens_per_step, dim=1)  # (1, K*P, D)
        if cfg.goal_token:
            pos = torch.cat([pos.new_zeros(1, 1, cfg.d_model), pos], dim=1)
        return obs + pos

    def actions(self, x: Tensor) -> Tensor:
        """x (B, J, D) action slots (noisy actions or learnable tokens) -> with their positions."""
        if self.cfg.layout == "paper":
            return x + self.pos_emb[:, self.cfg.obs_steps - 1:]
        return x + self.act_slot


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """The registered family's module for `cfg` (model/backbone_registry.py)."""
    return cfg.family.load_class()(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
