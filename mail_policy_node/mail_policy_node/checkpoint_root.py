"""Which checkpoint paths a running robot may load: only folders inside one configured root.

A checkpoint named by a ROS parameter is untrusted input (anyone on the DDS network can set
parameters unless SROS2 is on). The root confines what can be read: no `..`, no absolute paths
elsewhere, no symlink that escapes the root, only a folder holding `config.json` and
`model.safetensors` of bounded size. Loading itself never unpickles anything (model.checkpoint).
"""

from __future__ import annotations

import os
from pathlib import Path

REQUIRED_FILES = ("config.json", "model.safetensors")
MAX_CONFIG_BYTES = 1 << 20  # 1 MiB of JSON is far more than any real config
MAX_WEIGHTS_BYTES = 2 << 30  # 2 GiB: paper-size MaIL policies are ~50 MB


class CheckpointRefused(ValueError):
    """The named checkpoint may not be loaded; str() says why."""


def resolve_checkpoint(root: str | os.PathLike, name: str) -> Path:
    """The checkpoint folder for `name` (relative to root, or absolute inside it), or CheckpointRefused."""
    if not name:
        raise CheckpointRefused("empty checkpoint name")
    if not root:
        raise CheckpointRefused("no checkpoint_root configured: refusing to load any checkpoint")
    root_real = Path(root).resolve()
    if not root_real.is_dir():
        raise CheckpointRefused(f"checkpoint_root {root} is not a folder")
    candidate = Path(name) if os.path.isabs(name) else root_real / name
    real = candidate.resolve()
    if real != root_real and root_real not in real.parents:
        raise CheckpointRefused(f"{name!r} resolves to {real}, outside the checkpoint root {root_real}")
    if real == root_real:
        raise CheckpointRefused("the checkpoint root itself is not a checkpoint")
    if not real.is_dir():
        hint = " (a checkpoint is a folder with config.json and model.safetensors)" if real.is_file() else ""
        raise CheckpointRefused(f"checkpoint {name!r} not found under {root_real}{hint}")
    for f in REQUIRED_FILES:
        p = real / f
        if not p.is_file():
            raise CheckpointRefused(f"checkpoint {name!r} has no {f}")
        if root_real not in p.resolve().parents:
            raise CheckpointRefused(f"{p} links outside the checkpoint root")
    if (real / "config.json").stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointRefused(f"config.json of {name!r} exceeds {MAX_CONFIG_BYTES} bytes")
    if (real / "model.safetensors").stat().st_size > MAX_WEIGHTS_BYTES:
        raise CheckpointRefused(f"model.safetensors of {name!r} exceeds {MAX_WEIGHTS_BYTES} bytes")
    return real
