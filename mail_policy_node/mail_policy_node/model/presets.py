"""The paper's backbone configurations by name, and their reference parameter counts.

Names: "<variant>_<head>" for the paper layouts ("d_ma_ddpm", "ed_tr_bc", ...) and
"<variant>_<head>_stream" for the streaming layouts of the Mamba families. Any field can be overridden.
The depths and counts are the registered families' (model/backbone_registry.py), read at each call, so
a family registered later has its presets too.
"""

from __future__ import annotations

from dataclasses import replace

from .backbone_registry import BackboneFamily, backbone_families
from .backbones import BackboneConfig


def _paper_presets() -> dict[str, tuple[BackboneFamily, str]]:
    """"<variant>_<head>" -> (family, head), in registration order."""
    return {f"{f.variant}_{head}": (f, head) for f in backbone_families() for head in f.paper_depths}


def preset_names() -> list[str]:
    paper = _paper_presets()
    return list(paper) + [f"{name}_stream" for name, (f, _) in paper.items() if f.mamba]


def reference_params() -> dict[str, float]:
    """Paper preset name -> the backbone parameter count stated for it (a streaming preset has its paper
    layout's count: the layouts differ by a few embeddings)."""
    return {name: f.reference_params[head] for name, (f, head) in _paper_presets().items()}


def __getattr__(name: str):
    # REFERENCE_PARAMS reads the registry when asked, like the functions above
    if name == "REFERENCE_PARAMS":
        return reference_params()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def backbone_preset(name: str, **overrides) -> BackboneConfig:
    stream = name.endswith("_stream")
    base = name[: -len("_stream")] if stream else name
    paper = _paper_presets()
    if base not in paper or (stream and not paper[base][0].mamba):
        raise ValueError(f"unknown backbone preset {name!r}; known: {preset_names()}")
    family, head = paper[base]
    cfg = BackboneConfig(variant=family.variant, head=head, layout="streaming" if stream else "paper",
                         **family.paper_depths[head])
    return replace(cfg, **overrides) if overrides else cfg
