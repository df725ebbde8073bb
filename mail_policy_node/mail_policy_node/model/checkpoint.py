"""Policy checkpoints: a folder with ``config.json`` + ``model.safetensors``.

config.json = {"format": "mail-policy", "format_version": 1, "policy": PolicyConfig.to_dict(),
"metadata": {...}, "weights_sha256": sha256 of model.safetensors}. The policy's identity is the sha256
over both files (`checkpoint_hash`); its first 16 hex digits are the policy_id.

Loading validates everything before building a model, and raises `CheckpointError` naming the problem:
missing files, size bounds, a pickle / torch.save file (never unpickled: no torch.load, no pickle),
truncated or corrupt safetensors (header, offsets, weights hash), unknown format version, config schema
errors, unknown / missing tensors, wrong shapes or dtypes, missing normalisation.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .policy import MailPolicy, PolicyConfig

FORMAT = "mail-policy"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20  # 1 MiB
MAX_WEIGHTS_BYTES = 2 << 30  # 2 GiB; the paper's models are about 100 MB
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with the reason."""


def checkpoint_hash(folder: str | os.PathLike) -> str:
    """sha256 over config.json and model.safetensors (names and lengths included)."""
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        data = (Path(folder) / name).read_bytes()
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def policy_id(folder: str | os.PathLike) -> str:
    return checkpoint_hash(folder)[:16]


def save_checkpoint(policy: MailPolicy, folder: str | os.PathLike, metadata: dict | None = None,
                    weights_dtype: torch.dtype | None = None) -> str:
    """Write the checkpoint folder; returns the policy_id. Refuses a policy without normalisation.
    ``weights_dtype`` (e.g. torch.float16, to ship a small checkpoint) stores the learned parameters
    in that type (buffers such as the normalisation statistics stay as they are: in fp16 they cost a
    reach policy 56 % -> 32 % success); loading casts them back to the model's own."""
    problems = policy.normalization_problems()
    if problems:
        raise CheckpointError("cannot save a policy without normalisation: " + "; ".join(problems))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    if weights_dtype is not None:  # learned weights only: buffers (normalisation statistics) stay exact
        params = {name for name, _ in policy.named_parameters()}
        tensors = {k: v.to(weights_dtype) if k in params and v.is_floating_point() else v for k, v in tensors.items()}
    weights = st_save(tensors)
    meta = {k: v for k, v in {**policy.metadata, **(metadata or {})}.items() if k != "policy_id"}
    config = dict(format=FORMAT, format_version=FORMAT_VERSION, policy=policy.cfg.to_dict(), metadata=meta,
                  weights_sha256=hashlib.sha256(weights).hexdigest())
    text = json.dumps(config, indent=2, sort_keys=True)
    json.loads(text)  # metadata must be JSON-able
    (folder / WEIGHTS_NAME).write_bytes(weights)
    (folder / CONFIG_NAME).write_text(text)
    return policy_id(folder)


def _read_bounded(path: Path, limit: int) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"missing {path.name} in {path.parent}")
    size = path.stat().st_size
    if size > limit:
        raise CheckpointError(f"{path.name} is {size} bytes, over the bound of {limit}")
    return path.read_bytes()


def _looks_pickled(data: bytes) -> bool:
    """torch.save writes a zip archive ("PK\\x03\\x04"); raw pickles start with PROTO (0x80, 2..5). A
    safetensors file can also start with 0x80 (its header length), but its header then opens with "{"."""
    if data[:4] == b"PK\x03\x04":
        return True
    return data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and data[8:9] != b"{"


def _check_safetensors(data: bytes) -> dict:
    """Validate header and offsets without trusting them; returns the header."""
    if _looks_pickled(data):
        raise CheckpointError(f"{WEIGHTS_NAME} is a pickle / torch.save file, not safetensors; refusing to load it")
    if len(data) < 8:
        raise CheckpointError(f"{WEIGHTS_NAME} is truncated ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100 << 20:
        raise CheckpointError(f"{WEIGHTS_NAME} is truncated or corrupt: header of {n} bytes in a {len(data)}-byte file")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{WEIGHTS_NAME} has a corrupt header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{WEIGHTS_NAME} has a corrupt header (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            dtype = info["dtype"]
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{WEIGHTS_NAME}: corrupt entry for tensor {name!r}") from None
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{WEIGHTS_NAME}: tensor {name!r} has dtype {dtype}, expected a float type")
        end = max(end, stop)
    if 8 + n + end != len(data):
        raise CheckpointError(f"{WEIGHTS_NAME} is truncated or corrupt: tensors end at byte {8 + n + end}, "
                              f"file has {len(data)}")
    return header


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu",
                    max_weights_bytes: int = MAX_WEIGHTS_BYTES) -> MailPolicy:
    """Validate and load a checkpoint folder into an eval-mode MailPolicy."""
    folder = Path(folder)
    if folder.is_file():
        if folder.suffix in _PICKLE_SUFFIXES:
            raise CheckpointError(f"{folder.name} looks like a pickle / torch.save file; checkpoints are folders "
                                  f"with {CONFIG_NAME} and {WEIGHTS_NAME}, and pickles are never loaded")
        raise CheckpointError(f"{folder} is a file; a checkpoint is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"checkpoint folder holds pickle files {pickles}; refusing (pickles are never loaded)")

    raw = _read_bounded(folder / CONFIG_NAME, MAX_CONFIG_BYTES)
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{CONFIG_NAME} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{CONFIG_NAME} is not a {FORMAT!r} config (format = "
                              f"{config.get('format') if isinstance(config, dict) else None!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"unknown format_version {config.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    unknown = set(config) - {"format", "format_version", "policy", "metadata", "weights_sha256"}
    if unknown:
        raise CheckpointError(f"{CONFIG_NAME} has unknown top-level keys {sorted(unknown)}")
    try:
        cfg = PolicyConfig.from_dict(config["policy"])
    except KeyError as e:
        raise CheckpointError(f"{CONFIG_NAME} is missing {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{CONFIG_NAME} schema error: {e}") from None
    metadata = config.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{CONFIG_NAME}: metadata must be an object")

    data = _read_bounded(folder / WEIGHTS_NAME, max_weights_bytes)
    _check_safetensors(data)
    if hashlib.sha256(data).hexdigest() != config.get("weights_sha256"):
        raise CheckpointError(f"{WEIGHTS_NAME} does not match the weights_sha256 in {CONFIG_NAME} (corrupt or swapped)")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{WEIGHTS_NAME} cannot be read: {e}") from None

    policy = MailPolicy(cfg, metadata)
    expected = policy.state_dict()
    missing, unknown = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{WEIGHTS_NAME} does not fit the config's architecture: missing tensors {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unknown tensors {unknown[:8]}"
                              f"{' ...' if len(unknown) > 8 else ''}")
    wrong = [f"{k}: {tuple(tensors[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if tuple(tensors[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{WEIGHTS_NAME} does not fit the config's architecture (stored != expected shape): "
                              + "; ".join(wrong[:8]))
    policy.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    problems = policy.normalization_problems()
    if problems:
        raise CheckpointError("checkpoint has no usable normalisation: " + "; ".join(problems))
    policy.metadata["policy_id"] = policy_id(folder)
    return policy.to(device).eval()
