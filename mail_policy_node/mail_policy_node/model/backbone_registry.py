"""Every backbone family the project knows, in one place: adding a backbone is one `register_backbone` here.

A family is a variant name (what configs and checkpoints store: "d_ma"), the name users write in a
training config ("D-Ma"), its nn.Module class, whether it is built of Mamba layers, and its sizes: the
paper's depths per head with the parameter counts stated for them, and the smaller training sizes.
Everything else reads from here: `BackboneConfig` (which variants exist, which may stream, which have an
encoder), `build_backbone`, the presets (model/presets.py), the training config's `policy.backbone` names
and `policy.size` depths, the benches (`mail-il bench model|engine`) and the checkpoint budget
(checkpoint_limits.estimate, which counts parameters by arithmetic before anything is built).

Adding a backbone:

1. write its module: ``__init__(cfg: BackboneConfig)`` and ``forward(obs (B, N, D), actions (B, J, D) |
   None, time (B, D) | None) -> (B, J, D)``, where ``actions`` are the embedded noisy actions (DDPM) or
   None (BC: the backbone's own learnable queries) and ``time`` the diffusion time embedding (DDPM);
   the token layouts are in backbones.py. A Mamba family also provides the streaming primitives
   (``init_state``, ``observe``, ``act``, ``forward_episode``: see mamba_backbones.py; the engine's fused
   CUDA paths are DMamba's and EDMamba's own, other families run on its generic path);
2. add one `register_backbone(...)` at the end of this file, with a `parameter_count` that matches the
   built module exactly (tests/security/test_hostile_checkpoints.py checks every preset).

tests/model/test_backbone_registry.py registers a small backbone that way and follows it through the
presets, the training config, the benches and a checkpoint. Never rename a registered variant:
checkpoints store it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..checkpoint_limits import mamba_stack_params, transformer_stack_params, unet1d_params

if TYPE_CHECKING:
    from torch import nn

    from .backbones import BackboneConfig

HEADS = ("bc", "ddpm")  # the heads a family gives paper depths for (BackboneConfig.head)


@dataclass(frozen=True)
class BackboneFamily:
    variant: str  # BackboneConfig.variant, stored in checkpoints: "d_ma"
    name: str  # what a training config's policy.backbone says: "D-Ma" (matched ignoring case)
    module: type | str  # the nn.Module class, or "package.module:Class", imported when first built
    mamba: bool  # Mamba layers: the streaming layouts exist (a recurrent state carried across steps)
    encoder_decoder: bool  # an encoder stack (n_enc_layers >= 1) feeds the decoder stack
    paper_depths: Mapping[str, dict]  # head -> BackboneConfig fields of the paper's size (the presets)
    reference_params: Mapping[str, float]  # head -> backbone parameters stated for that size
    parameter_count: Callable[[BackboneConfig], int]  # parameters by arithmetic: the checkpoint budget
    size_depths: Mapping[str, dict] = field(default_factory=dict)  # training size ("small", "tiny") ->
    #                                 depth fields; a size not listed keeps the paper depths

    def __post_init__(self):
        if not self.variant.isidentifier() or self.variant.endswith("_stream") or self.variant != self.variant.lower():
            raise ValueError(f"backbone variant {self.variant!r} must be a lower-case identifier not ending in "
                             "'_stream' (preset names are <variant>_<head>[_stream])")
        if not self.name.strip():
            raise ValueError(f"backbone {self.variant!r} needs a user-facing name")
        heads = set(self.paper_depths)
        if not heads or not heads <= set(HEADS) or heads != set(self.reference_params):
            raise ValueError(f"backbone {self.variant!r}: paper_depths and reference_params need the same heads, "
                             f"some of {HEADS}; got {sorted(self.paper_depths)} and {sorted(self.reference_params)}")
        # read-only views: a family is shared by every config built from it
        for name in ("paper_depths", "reference_params", "size_depths"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def load_class(self) -> type[nn.Module]:
        if not isinstance(self.module, str):
            return self.module
        module_name, _, attr = self.module.partition(":")
        return getattr(importlib.import_module(module_name), attr)


_FAMILIES: dict[str, BackboneFamily] = {}  # variant -> family, in registration order


def register_backbone(**fields) -> BackboneFamily:
    """Register a backbone family (the fields of `BackboneFamily`); its variant and name must be new."""
    family = BackboneFamily(**fields)
    taken = {f.name.lower(): f.variant for f in _FAMILIES.values()}
    if family.variant in _FAMILIES:
        raise ValueError(f"backbone variant {family.variant!r} is registered already")
    if family.name.lower() in taken:
        raise ValueError(f"backbone name {family.name!r} is taken by variant {taken[family.name.lower()]!r}")
    _FAMILIES[family.variant] = family
    return family


def unregister_backbone(variant: str) -> BackboneFamily:
    """Remove a family (tests that register one put the registry back this way)."""
    return _FAMILIES.pop(backbone_family(variant).variant)


def backbone_families() -> tuple[BackboneFamily, ...]:
    return tuple(_FAMILIES.values())


def backbone_variants() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def streaming_variants() -> tuple[str, ...]:
    """The variants with streaming layouts (the Mamba families)."""
    return tuple(f.variant for f in _FAMILIES.values() if f.mamba)


def backbone_family(variant: str) -> BackboneFamily:
    try:
        return _FAMILIES[variant]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone variant {variant!r}; registered: {backbone_variants()}") from None


def backbone_by_name(name: str) -> BackboneFamily:
    """The family a training config names ("D-Ma", "ed-tr": case does not matter)."""
    for f in _FAMILIES.values():
        if f.name.lower() == str(name).lower():
            return f
    raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(f.name for f in _FAMILIES.values())}")


# ---- parameter arithmetic of the shipped families (checkpoint_limits.estimate; no module is built) ------
def _slot_params(b: BackboneConfig) -> int:
    """TokenLayout's positions (paper layout) or action slots (streaming), and a BC head's J queries."""
    d, j = b.d_model, b.action_horizon
    p = (b.obs_steps - 1 + j) * d if b.layout == "paper" else j * d
    return p + (j * d if b.head == "bc" else 0)


def _d_mamba_params(b: BackboneConfig) -> int:
    return _slot_params(b) + mamba_stack_params(b.d_model, b.d_state, b.d_conv, b.expand, b.n_layers)


def _ed_mamba_params(b: BackboneConfig) -> int:
    d = b.d_model
    n_state = 1 if b.layout == "streaming" else b.n_obs_tokens + int(b.head == "ddpm")
    return (_slot_params(b) + mamba_stack_params(d, b.d_state, b.d_conv, b.expand, b.n_enc_layers)
            + mamba_stack_params(d, b.dec_d_state or b.d_state, b.dec_d_conv or b.d_conv, b.expand, b.n_layers)
            + n_state * d + b.action_horizon * d)  # decoder state tokens, encoder action tokens


def _d_transformer_params(b: BackboneConfig) -> int:
    return _slot_params(b) + transformer_stack_params(b.d_model, b.n_layers, cross=False)


def _ed_transformer_params(b: BackboneConfig) -> int:
    return (_slot_params(b) + transformer_stack_params(b.d_model, b.n_enc_layers, cross=False)
            + transformer_stack_params(b.d_model, b.n_layers, cross=True))


def _dp_unet_params(b: BackboneConfig) -> int:
    """model/unet.py: n_layers levels of widths expand * d_model * 2**i, conditioned on the N observation
    tokens and the time embedding flattened ((N + 1) * d_model features)."""
    d = b.d_model
    return unet1d_params(d, (b.n_obs_tokens + 1) * d, b.expand * d, b.n_layers)


# ---- the shipped families ---------------------------------------------------------------------------------
# Paper depths and sizes from MaIL (Jia et al., CoRL 2024) and its code. ED-Ma BC is listed there as "about
# 1.87 M" with the others, but its stated depths (8 + 10 layers, d_state 8, d_conv 2) give 1.98 M by
# arithmetic; we follow the stated depths and keep the arithmetic count as its reference
# (tests/model/test_param_counts.py).
register_backbone(
    variant="d_ma", name="D-Ma", module="mail_policy_node.model.mamba_backbones:DMamba",
    mamba=True, encoder_decoder=False, parameter_count=_d_mamba_params,
    paper_depths={"ddpm": dict(n_layers=16), "bc": dict(n_layers=16)},
    reference_params={"ddpm": 1.87e6, "bc": 1.87e6},
    size_depths={"small": dict(n_layers=4), "tiny": dict(n_layers=1)})
register_backbone(
    variant="ed_ma", name="ED-Ma", module="mail_policy_node.model.mamba_backbones:EDMamba",
    mamba=True, encoder_decoder=True, parameter_count=_ed_mamba_params,
    paper_depths={"ddpm": dict(n_enc_layers=10, n_layers=6, dec_d_conv=2),
                  "bc": dict(n_enc_layers=8, n_layers=10, d_state=8, d_conv=2)},
    reference_params={"ddpm": 1.87e6, "bc": 1.98e6},
    size_depths={"small": dict(n_enc_layers=2, n_layers=2), "tiny": dict(n_enc_layers=1, n_layers=1)})
register_backbone(
    variant="d_tr", name="D-Tr", module="mail_policy_node.model.transformer:DTransformer",
    mamba=False, encoder_decoder=False, parameter_count=_d_transformer_params,
    paper_depths={"ddpm": dict(n_layers=8), "bc": dict(n_layers=8)},
    reference_params={"ddpm": 1.58e6, "bc": 1.58e6},
    size_depths={"small": dict(n_layers=2), "tiny": dict(n_layers=1)})
register_backbone(
    variant="ed_tr", name="ED-Tr", module="mail_policy_node.model.transformer:EDTransformer",
    mamba=False, encoder_decoder=True, parameter_count=_ed_transformer_params,
    paper_depths={"ddpm": dict(n_enc_layers=4, n_layers=6), "bc": dict(n_enc_layers=4, n_layers=6)},
    reference_params={"ddpm": 2.28e6, "bc": 2.28e6},
    size_depths={"small": dict(n_enc_layers=1, n_layers=2), "tiny": dict(n_enc_layers=1, n_layers=1)})

# Diffusion Policy, CNN-based (Chi et al., RSS 2023), the baseline users would otherwise pick: their conditional
# 1-D UNet, DDPM only, on our encoder, head and sampler (model/unet.py: n_layers = levels, first width
# expand * d_model). Paper depths: 3 levels of 256/512/1024 at d_model 128 (kernel 5, GroupNorm 8), the down
# dims of ConditionalUnet1D's default and of their state-based configs: 72,250,240 parameters with K 5, P 1 and
# no goal (more with a longer condition). Their image configs use 512/1024/2048 (expand=4): 266,397,312 here,
# over the checkpoint budget (checkpoint_limits.MAX_PARAMS, 250 M) with the encoder added. Chi et al. state no
# parameter count for the backbone that we could establish: the reference is our arithmetic count
# (checkpoint_limits.unet1d_params; tests/model/test_unet.py checks it against the built module).
# Training sizes: "small" 2 levels of 128/256 at d_model 64 (4,822,208), "tiny" 2 levels of 32/64 at d_model 32
# (380,192), both with K 5, P 1.
register_backbone(
    variant="dp_unet", name="DP-UNet", module="mail_policy_node.model.unet:DPUNet",
    mamba=False, encoder_decoder=False, parameter_count=_dp_unet_params,
    paper_depths={"ddpm": dict(n_layers=3, expand=2)},
    reference_params={"ddpm": 72_250_240},
    size_depths={"small": dict(n_layers=2, expand=2), "tiny": dict(n_layers=2, expand=1)})
