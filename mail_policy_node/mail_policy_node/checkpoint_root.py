"""Which checkpoint paths a running robot may load: only folders inside one configured root.

A checkpoint named by a ROS parameter is untrusted input (anyone on the DDS network can set
parameters unless SROS2 is on). The root confines what can be read: no `..`, no absolute paths
elsewhere, no symlink that escapes the root, only a folder holding `config.json` and
`model.safetensors` of bounded size. A name no file system could open (too long, a NUL byte) is refused
with a reason, not an OSError. Loading itself never unpickles anything (model.checkpoint), and bounds
the config before building anything (checkpoint_limits).
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint_limits import MAX_CONFIG_BYTES, MAX_WEIGHTS_BYTES, CheckpointError, check_path, short

REQUIRED_FILES = ("config.json", "model.safetensors")
__all__ = ["CheckpointError", "CheckpointRefused", "MAX_CONFIG_BYTES", "MAX_WEIGHTS_BYTES", "REQUIRED_FILES",
           "resolve_checkpoint"]


class CheckpointRefused(CheckpointError, ValueError):
    """The named checkpoint may not be loaded; str() says why (one line)."""


def resolve_checkpoint(root: str | os.PathLike, name: str) -> Path:
    """The checkpoint folder for `name` (relative to root, or absolute inside it), or CheckpointRefused."""
    if not isinstance(name, str):
        raise CheckpointRefused(f"checkpoint name must be a string, got {type(name).__name__}")
    if not name:
        raise CheckpointRefused("empty checkpoint name")
    if not root:
        raise CheckpointRefused("no checkpoint_root configured: refusing to load any checkpoint")
    try:
        check_path(name, "checkpoint name")
        check_path(root, "checkpoint_root")
    except CheckpointError as e:
        raise CheckpointRefused(str(e)) from None
    try:
        return _resolve(root, name)
    except OSError as e:  # a path too long once joined to the root, a permission, a race with the file system
        raise CheckpointRefused(f"checkpoint {short(name)} cannot be read: {e.strerror or type(e).__name__}") from None
    except RuntimeError as e:  # Path.resolve on a loop of symbolic links
        raise CheckpointRefused(f"checkpoint {short(name)} cannot be resolved: {e}") from None


def _resolve(root: str | os.PathLike, name: str) -> Path:
    root_real = Path(root).resolve()
    if not root_real.is_dir():
        raise CheckpointRefused(f"checkpoint_root {root} is not a folder")
    candidate = Path(name) if os.path.isabs(name) else root_real / name
    real = candidate.resolve()
    if real != root_real and root_real not in real.parents:
        raise CheckpointRefused(f"{short(name)} resolves to {real}, outside the checkpoint root {root_real}")
    if real == root_real:
        raise CheckpointRefused("the checkpoint root itself is not a checkpoint")
    if not real.is_dir():
        hint = " (a checkpoint is a folder with config.json and model.safetensors)" if real.is_file() else ""
        raise CheckpointRefused(f"checkpoint {short(name)} not found under {root_real}{hint}")
    for f in REQUIRED_FILES:
        p = real / f
        if not p.is_file():
            raise CheckpointRefused(f"checkpoint {short(name)} has no {f}")
        if root_real not in p.resolve().parents:
            raise CheckpointRefused(f"{p} links outside the checkpoint root")
    if (real / "config.json").stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointRefused(f"config.json of {short(name)} exceeds {MAX_CONFIG_BYTES} bytes")
    if (real / "model.safetensors").stat().st_size > MAX_WEIGHTS_BYTES:
        raise CheckpointRefused(f"model.safetensors of {short(name)} exceeds {MAX_WEIGHTS_BYTES} bytes")
    return real
