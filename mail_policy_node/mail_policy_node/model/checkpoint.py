"""Policy checkpoints: a folder with ``config.json`` + ``model.safetensors``.

config.json = {"format": "mail-policy", "format_version": 1, "policy": PolicyConfig.to_dict(),
"metadata": {...}, "weights_sha256": sha256 of model.safetensors}. The policy's identity is the sha256
over both files (`checkpoint_hash`); its first 16 hex digits are the policy_id.

Loading validates everything before building a model, and raises `CheckpointError` naming the problem:
unusable paths, missing files, size bounds, a pickle / torch.save file (never unpickled: no torch.load, no
pickle), JSON over its bounds (size, depth, strings), every config field against the bounds of
checkpoint_limits, the parameter / memory budget computed from the config alone, unknown format version,
config schema errors, then the safetensors header (read alone: offsets, dtypes, and every tensor's name
and shape against the config's, from a build on the meta device) before the weights are read, the
weights hash, missing normalisation. Nothing is allocated for a model the config does not bound.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..checkpoint_limits import (MAX_CONFIG_BYTES, MAX_HEADER_BYTES, MAX_MODEL_BYTES, MAX_PARAMS, MAX_TENSORS,
                                 MAX_WEIGHTS_BYTES, CheckpointError, check_budget, check_path, parse_json, short,
                                 validate_policy_dict)
from .policy import MailPolicy, PolicyConfig

FORMAT = "mail-policy"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4,
                "U32": 4, "I64": 8, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_RANK = 8


def checkpoint_hash(folder: str | os.PathLike) -> str:
    """sha256 over config.json and model.safetensors (names and lengths included)."""
    return _content_hash((Path(folder) / CONFIG_NAME).read_bytes(), (Path(folder) / WEIGHTS_NAME).read_bytes())


def _content_hash(config: bytes, weights: bytes) -> str:
    h = hashlib.sha256()
    for name, data in ((CONFIG_NAME, config), (WEIGHTS_NAME, weights)):
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


def _os_reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _read_bounded(path: Path, limit: int, check=None) -> bytes:
    """The whole file, at most ``limit`` bytes (read from one open file: no size race), or CheckpointError.
    ``check(f, size)`` runs on the open file before its bytes are read (the weights' header)."""
    try:
        if not path.is_file():
            raise CheckpointError(f"missing {path.name} in {path.parent}")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise CheckpointError(f"{path.name} is {size} bytes, over the bound of {limit}")
            if check is not None:
                check(f, size)
                f.seek(0)
            data = f.read(size + 1)
    except OSError as e:
        raise CheckpointError(f"{path.name} in {path.parent} cannot be read: {_os_reason(e)}") from None
    if len(data) != size:
        raise CheckpointError(f"{path.name} changed while it was read ({size} -> {len(data)} bytes)")
    return data


def _looks_pickled(data: bytes) -> bool:
    """torch.save writes a zip archive ("PK\\x03\\x04"); raw pickles start with PROTO (0x80, 2..5). A
    safetensors file can also start with 0x80 (its header length), but its header then opens with "{"."""
    if data[:4] == b"PK\x03\x04":
        return True
    return data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and data[8:9] != b"{"


def read_safetensors_header(f, size: int, name: str = WEIGHTS_NAME, max_tensors: int = MAX_TENSORS,
                            max_header: int = MAX_HEADER_BYTES,
                            dtypes: tuple[str, ...] = _FLOAT_DTYPES) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Read and validate only the header of the safetensors file open as ``f`` (``size`` bytes), without
    trusting it: bounded length and tensor count, ``dtypes`` only (float), every tensor's byte span equal
    to its shape times its dtype's size, spans ending at the end of the file. Returns {tensor: (dtype, shape)}."""
    f.seek(0)
    prefix = f.read(16)
    if _looks_pickled(prefix):
        raise CheckpointError(f"{name} is a pickle / torch.save file, not safetensors; refusing to load it")
    if len(prefix) < 8:
        raise CheckpointError(f"{name} is truncated ({size} bytes)")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > size - 8 or n > max_header:
        raise CheckpointError(f"{name} is truncated or corrupt: header of {n} bytes in a {size}-byte file"
                              + (f" (bound {max_header})" if n > max_header else ""))
    f.seek(8)
    try:
        header = parse_json(f.read(n), "header", max_bytes=max_header)
    except CheckpointError as e:
        raise CheckpointError(f"{name} has a corrupt header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} has a corrupt header (not a JSON object)")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > max_tensors:
        raise CheckpointError(f"{name} lists {len(entries)} tensors, over the bound of {max_tensors}")
    out, end = {}, 0
    for tname, info in entries.items():
        try:
            dtype, shape, (start, stop) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{name}: corrupt entry for tensor {short(tname)}") from None
        if not isinstance(dtype, str) or dtype not in dtypes or dtype not in _DTYPE_BYTES:
            raise CheckpointError(f"{name}: tensor {short(tname)} has dtype {str(dtype)[:20]}, expected "
                                  + ("a float type" if dtypes == _FLOAT_DTYPES else f"one of {dtypes}"))
        if (not isinstance(shape, list) or len(shape) > _MAX_RANK
                or not all(type(x) is int and 0 <= x <= size for x in shape)):
            raise CheckpointError(f"{name}: tensor {short(tname)} has a corrupt shape {short(shape, 60)}")
        if not (type(start) is int and type(stop) is int and 0 <= start <= stop):
            raise CheckpointError(f"{name}: tensor {short(tname)} has corrupt data offsets")
        if stop - start != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise CheckpointError(f"{name}: tensor {short(tname)} spans {stop - start} bytes, its shape {shape} "
                                  f"and dtype {dtype} need {math.prod(shape) * _DTYPE_BYTES[dtype]}")
        out[tname] = (dtype, tuple(shape))
        end = max(end, stop)
    if 8 + n + end != size:
        raise CheckpointError(f"{name} is truncated or corrupt: tensors end at byte {8 + n + end}, file has {size}")
    return out


def _check_fits(stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    """Tensor names and shapes of a weights file against those the config's model has."""
    missing, unknown = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{WEIGHTS_NAME} does not fit the config's architecture: missing tensors {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unknown tensors {[u[:60] for u in unknown[:8]]}"
                              f"{' ...' if len(unknown) > 8 else ''}")
    wrong = [f"{k}: {stored[k]} != {v}" for k, v in expected.items() if stored[k] != v]
    if wrong:
        raise CheckpointError(f"{WEIGHTS_NAME} does not fit the config's architecture (stored != expected shape): "
                              + "; ".join(wrong[:8]))


def _read_weights(path: Path, limit: int, expected: dict[str, tuple[int, ...]]) -> bytes:
    """The weights file's bytes, read only after its header fits ``expected`` (names and shapes)."""
    def header_fits(f, size):
        _check_fits({k: shape for k, (_, shape) in read_safetensors_header(f, size).items()}, expected)

    return _read_bounded(path, limit, header_fits)


def read_config(folder: str | os.PathLike, max_params: int = MAX_PARAMS,
                max_bytes: int = MAX_MODEL_BYTES) -> tuple[PolicyConfig, dict, dict]:
    """config.json of a checkpoint folder, checked: (PolicyConfig, metadata, the whole config). The JSON,
    every field's bounds and the model's budget (parameters and bytes, computed from the config alone)
    are checked before any model is built; anything wrong is a CheckpointError."""
    return _parse_config(_read_bounded(Path(check_path(folder)) / CONFIG_NAME, MAX_CONFIG_BYTES), max_params,
                         max_bytes)


def _parse_config(raw: bytes, max_params: int, max_bytes: int) -> tuple[PolicyConfig, dict, dict]:
    config = parse_json(raw, CONFIG_NAME)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise CheckpointError(f"{CONFIG_NAME} is not a {FORMAT!r} config (format = {short(found, 40)})")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"unknown format_version {short(config.get('format_version'), 40)}; "
                              f"this code reads {FORMAT_VERSION}")
    unknown = set(config) - {"format", "format_version", "policy", "metadata", "weights_sha256"}
    if unknown:
        raise CheckpointError(f"{CONFIG_NAME} has unknown top-level keys {[k[:40] for k in sorted(unknown)[:8]]}")
    if "policy" not in config:
        raise CheckpointError(f"{CONFIG_NAME} is missing 'policy'")
    validate_policy_dict(config["policy"])
    try:
        cfg = PolicyConfig.from_dict(config["policy"])
    except KeyError as e:
        raise CheckpointError(f"{CONFIG_NAME} is missing {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{CONFIG_NAME} schema error: {e}") from None
    metadata = config.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{CONFIG_NAME}: metadata must be an object")
    check_budget(cfg, max_params, max_bytes)
    return cfg, metadata, config


def expected_tensors(cfg: PolicyConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of MailPolicy(cfg)'s state dict, from a build on the meta device: no memory for
    the tensors (call it on a config within the budget: the modules themselves are still built)."""
    with torch.device("meta"):
        policy = MailPolicy(cfg)
    return {k: tuple(v.shape) for k, v in policy.state_dict().items()}


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu",
                    max_weights_bytes: int = MAX_WEIGHTS_BYTES, max_params: int = MAX_PARAMS,
                    max_bytes: int = MAX_MODEL_BYTES) -> MailPolicy:
    """Validate and load a checkpoint folder into an eval-mode MailPolicy. ``max_params`` / ``max_bytes``:
    the budget a config must stay within (defaults: checkpoint_limits; raise them to load bigger models)."""
    folder = Path(check_path(folder))
    try:
        if folder.is_file():
            if folder.suffix in _PICKLE_SUFFIXES:
                raise CheckpointError(f"{folder.name} looks like a pickle / torch.save file; checkpoints are folders "
                                      f"with {CONFIG_NAME} and {WEIGHTS_NAME}, and pickles are never loaded")
            raise CheckpointError(f"{folder} is a file; a checkpoint is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
        if not folder.is_dir():
            raise CheckpointError(f"checkpoint folder {folder} does not exist")
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    except OSError as e:
        raise CheckpointError(f"checkpoint folder {folder} cannot be read: {_os_reason(e)}") from None
    if pickles:
        raise CheckpointError(f"checkpoint folder holds pickle files {pickles[:8]}; "
                              "refusing (pickles are never loaded)")

    raw = _read_bounded(folder / CONFIG_NAME, MAX_CONFIG_BYTES)
    cfg, metadata, config = _parse_config(raw, max_params, max_bytes)
    expected = expected_tensors(cfg)
    data = _read_weights(folder / WEIGHTS_NAME, max_weights_bytes, expected)
    if hashlib.sha256(data).hexdigest() != config.get("weights_sha256"):
        raise CheckpointError(f"{WEIGHTS_NAME} does not match the weights_sha256 in {CONFIG_NAME} (corrupt or swapped)")
    pid = _content_hash(raw, data)[:16]  # of the bytes loaded, not of the files as they are later
    try:
        tensors = st_load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{WEIGHTS_NAME} cannot be read: {e}") from None
    del data
    _check_fits({k: tuple(v.shape) for k, v in tensors.items()}, expected)
    try:
        policy = MailPolicy(cfg, metadata)
        state = policy.state_dict()
        policy.load_state_dict({k: v.to(state[k].dtype) for k, v in tensors.items()}, strict=True)
    except (RuntimeError, MemoryError, ValueError, KeyError) as e:  # out of memory on a small machine, ...
        raise CheckpointError(f"the model cannot be built and filled: {type(e).__name__}: {e}") from None
    del tensors
    problems = policy.normalization_problems()
    if problems:
        raise CheckpointError("checkpoint has no usable normalisation: " + "; ".join(problems))
    policy.metadata["policy_id"] = pid
    return policy.to(device).eval()
