"""What a checkpoint may be, checked before anything is allocated: `CheckpointError`, bounds, budget.

A checkpoint is untrusted input (a ROS parameter names it; anyone on the DDS network can set one unless
SROS2 is on; a file from elsewhere can be handed to `mail-il eval`). Nothing in it is believed before it
is checked here, in this order:

1. names and paths: length, NUL, component length (`check_path`): no OSError from the file system;
2. JSON text (`parse_json`): size, nesting depth (counted before parsing: no RecursionError), strings,
   keys, duplicate keys, non-finite numbers;
3. every field of the policy config against the bounds below (`validate_policy_dict`): types and ranges,
   before any dataclass or module is built;
4. the budget (`estimate`, `check_budget`): parameters and bytes the model would need, computed from the
   config alone by arithmetic, refused above MAX_PARAMS / MAX_MODEL_BYTES.

Only then are tensors read (their safetensors header first, against the config's shapes) and a model
built (model.checkpoint). Every refusal is a `CheckpointError` whose text is one line naming the reason.
This module imports neither torch nor anything that does.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

# ---- files and text ------------------------------------------------------------------------------------
MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a real config.json is ~6 KB, metadata (training config, dataset) included
MAX_WEIGHTS_BYTES = 2 << 30  # 2 GiB: MAX_PARAMS in fp32 is 1 GB; the paper's models are ~100 MB
MAX_HEADER_BYTES = 1 << 20  # a safetensors header: ~120 bytes per tensor, MAX_TENSORS of them
MAX_TENSORS = 8192  # state-dict entries: the largest model inside the bounds below has ~2,400
MAX_JSON_DEPTH = 32  # config.json nests 6 deep (metadata.training.config.data.bags[i])
MAX_STRING_CHARS = 1 << 16  # any string in config.json (metadata holds paths and descriptions)
MAX_KEY_CHARS = 256  # any object key in config.json
MAX_NAME_CHARS = 64  # camera, action and state names: ROS joint / camera names are short identifiers
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux: a longer checkpoint name or path cannot be opened anyway
MAX_PATH_COMPONENT_BYTES = 255  # NAME_MAX on Linux: a longer folder name cannot exist
MAX_REASON_CHARS = 600  # a refusal's text: one line, shown in a ROS parameter reply and a CLI error

# ---- what the project builds and runs (each a bound per field; the budget bounds their product) --------
MAX_CAMERAS = 8  # one ResNet trunk per camera; FR3 setups have 2-3 (agentview, wrist, side)
MIN_IMAGE_SIZE = 32  # the ResNet trunk downsamples by 32 (ObsEncoderConfig's own lower bound)
MAX_IMAGE_SIZE = 1024  # CameraSpec's own bound; a 1024x1024 frame is ~270 MB of trunk activations at base 64
MIN_BASE_WIDTH, MAX_BASE_WIDTH = 16, 128  # first ResNet stage (64 = ResNet-18, the paper; 16 = "small")
MAX_KEYPOINTS = 512  # spatial-softmax keypoints per camera (paper 32; more than the trunk's channels is moot)
MAX_WIDTH = 4096  # camera_features: per-camera feature size (paper 128)
MAX_D_MODEL = 2048  # token width (paper 128, "small" 64)
MAX_LAYERS = 64  # per stack (paper: at most 16)
MAX_D_STATE = 256  # mamba-ssm's selective_scan kernels support a state size of at most 256
MIN_D_CONV, MAX_D_CONV = 2, 4  # causal-conv1d (and the fused block kernel) support conv widths 2..4
MAX_EXPAND = 4  # Mamba expansion (paper 2)
MAX_HEADS = 64  # Transformer heads (paper 4)
MAX_OBS_HORIZON = 64  # K (paper 5): the engine keeps K frames' tokens per row
MAX_ACTION_HORIZON = 64  # J (paper 5): the controller refuses chunks over its max_horizon (default 64)
MAX_ACTION_DIM = 64  # FR3: 7 joints + gripper
MAX_STATE_DIM = 64  # FR3: 7 joints + gripper
MAX_GOAL_DIM = 8192  # precomputed goal (language) embeddings: CLIP 512-1024, T5 / LLM up to 4096-8192
MAX_DIFFUSION_STEPS = 1000  # DDPM's usual T (the paper's policies use 16); the schedule is a buffer per step
MAX_TIME_DIM = 4096  # sinusoidal time embedding (paper 128)

# ---- the budget: computed from the config (estimate), refused above these -------------------------------
# The paper-size policy (two ResNet-18 trunks + the largest backbone, ED-Tr) has ~25 M parameters; the
# shipped reach_dma_small 1.55 M. 250 M is 10x the paper's largest; its fp32 weights are 1 GB.
MAX_PARAMS = 250_000_000
# fp32 weights and buffers + what the engine keeps and computes per step (one row): 2 GiB, under the
# robot PC's memory with the controller, ROS and the camera drivers beside it.
MAX_MODEL_BYTES = 2 << 30


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with the reason: one line (whitespace collapsed, bounded)."""

    def __init__(self, reason: Any = ""):
        text = " ".join(str(reason).split())
        if len(text) > MAX_REASON_CHARS:
            text = text[:MAX_REASON_CHARS - 3] + "..."
        super().__init__(text)
        self.reason = text


def short(value: Any, limit: int = 80) -> str:
    """repr() of a value for a message, cut to ``limit`` characters (a hostile name can be 5000)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters written out"
    return f"{text[:limit]}... ({size})"


def check_path(path: str | os.PathLike, what: str = "checkpoint path") -> str:
    """The path as a str, or CheckpointError when no file system could open it: too long, a component
    longer than NAME_MAX, a NUL byte, not encodable. (Those raise OSError / ValueError from os.stat.)"""
    try:
        text = os.fspath(path)
    except TypeError:
        raise CheckpointError(f"{what} must be a string, got {type(path).__name__}") from None
    if not isinstance(text, str):
        raise CheckpointError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_PATH_CHARS:
        raise CheckpointError(f"{what} is {len(text)} characters long, over the bound of {MAX_PATH_CHARS}")
    if "\0" in text:
        raise CheckpointError(f"{what} {short(text)} holds a NUL character")
    try:
        parts = [p.encode() for p in text.split("/")]
    except UnicodeEncodeError:
        raise CheckpointError(f"{what} {short(text)} is not valid UTF-8 text") from None
    longest = max(len(p) for p in parts)
    if longest > MAX_PATH_COMPONENT_BYTES:
        raise CheckpointError(f"{what} {short(text)} has a folder name of {longest} bytes, over the file "
                              f"system's bound of {MAX_PATH_COMPONENT_BYTES}")
    return text


# ---- JSON ----------------------------------------------------------------------------------------------
# a JSON string, or an unterminated one up to the end: a match from every quote (never a failed attempt
# re-tried at later quotes, which made a text of escaped quotes quadratic), so the scan is linear
_JSON_STRING = re.compile(rb'(?s)"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _nesting_depth(raw: bytes, limit: int) -> int:
    """Deepest [ / { nesting of a JSON text (strings skipped), counted without parsing; stops past limit."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for b in brackets:
        if b in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise CheckpointError(f"duplicate key {short(k)}")
        out[k] = v
    return out


def _no_constant(name):
    raise CheckpointError(f"non-finite number {name} (NaN / Infinity are not JSON)")


def parse_json(raw: bytes, what: str, max_bytes: int = MAX_CONFIG_BYTES, max_depth: int = MAX_JSON_DEPTH,
               max_string: int = MAX_STRING_CHARS):
    """Parse a bounded JSON text; CheckpointError (never RecursionError, MemoryError or a bare ValueError)
    for anything over the bounds or malformed."""
    if len(raw) > max_bytes:
        raise CheckpointError(f"{what} is {len(raw)} bytes, over the bound of {max_bytes}")
    depth = _nesting_depth(raw, max_depth)
    if depth > max_depth:
        raise CheckpointError(f"{what} nests deeper than {max_depth} levels (MAX_JSON_DEPTH)")
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{what} is not valid JSON: {e}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # e.g. an integer of more than 4300 digits
        raise CheckpointError(f"{what} is not usable JSON: {type(e).__name__}: {e}") from None
    stack = [value]
    while stack:  # strings, keys and numbers, without recursion
        v = stack.pop()
        if isinstance(v, dict):
            for k, item in v.items():
                if len(k) > MAX_KEY_CHARS:
                    raise CheckpointError(f"{what} has a key of {len(k)} characters, over the bound of {MAX_KEY_CHARS}")
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            if len(v) > max_string:
                raise CheckpointError(f"{what} has a string of {len(v)} characters, over the bound of {max_string}")
        elif isinstance(v, float) and not math.isfinite(v):
            raise CheckpointError(f"{what} holds a non-finite number ({v})")
    return value


# ---- field bounds --------------------------------------------------------------------------------------
def _int(lo, hi, bound=""):
    return ("int", lo, hi, bound)


def _float(lo, hi, lo_open=False, hi_open=False):
    return ("float", lo, hi, lo_open, hi_open)


_BOOL = ("bool",)
_WORD = ("str", 32)  # an enumerated choice (variant, head, ...): the dataclass checks the value


def _names(lo, hi, bound):
    return ("names", lo, hi, bound)


_SPEC = {
    "cameras": ("cameras",),
    "use_joint_state": _BOOL,
    "action_space": _WORD,
    "action_names": _names(1, MAX_ACTION_DIM, "MAX_ACTION_DIM"),
    "obs_horizon": _int(1, MAX_OBS_HORIZON, "MAX_OBS_HORIZON"),
    "action_horizon": _int(1, MAX_ACTION_HORIZON, "MAX_ACTION_HORIZON"),
    "dt": _float(0.001, 10.0),
    "goal_embedding_dim": _int(0, MAX_GOAL_DIM, "MAX_GOAL_DIM"),
    "state_names": _names(0, MAX_STATE_DIM, "MAX_STATE_DIM"),
    "relative_actions": _BOOL,
}
_CAMERA = {
    "name": ("name",),
    "height": _int(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, "MAX_IMAGE_SIZE"),
    "width": _int(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, "MAX_IMAGE_SIZE"),
}
_ENCODER = {
    "cameras": _names(1, MAX_CAMERAS, "MAX_CAMERAS"),
    "image_size": ("size",),
    "d_model": _int(1, MAX_D_MODEL, "MAX_D_MODEL"),
    "keypoints": _int(1, MAX_KEYPOINTS, "MAX_KEYPOINTS"),
    "camera_features": _int(1, MAX_WIDTH, "MAX_WIDTH"),
    "state_dim": _int(0, MAX_STATE_DIM, "MAX_STATE_DIM"),
    "goal_dim": _int(0, MAX_GOAL_DIM, "MAX_GOAL_DIM"),
    "base_width": _int(MIN_BASE_WIDTH, MAX_BASE_WIDTH, "MAX_BASE_WIDTH"),
}
_BACKBONE = {
    "variant": _WORD, "layout": _WORD, "head": _WORD, "init": _WORD,
    "d_model": _int(1, MAX_D_MODEL, "MAX_D_MODEL"),
    "obs_steps": _int(1, MAX_OBS_HORIZON, "MAX_OBS_HORIZON"),
    "obs_tokens_per_step": _int(1, 2),
    "goal_token": _BOOL,
    "action_horizon": _int(1, MAX_ACTION_HORIZON, "MAX_ACTION_HORIZON"),
    "n_layers": _int(1, MAX_LAYERS, "MAX_LAYERS"),
    "n_enc_layers": _int(0, MAX_LAYERS, "MAX_LAYERS"),
    "d_state": _int(1, MAX_D_STATE, "MAX_D_STATE"),
    "d_conv": _int(MIN_D_CONV, MAX_D_CONV, "MAX_D_CONV"),
    "expand": _int(1, MAX_EXPAND, "MAX_EXPAND"),
    "dec_d_state": _int(0, MAX_D_STATE, "MAX_D_STATE"),  # 0 = d_state
    "dec_d_conv": _int(0, MAX_D_CONV, "MAX_D_CONV"),  # 0 = d_conv; 1 refused below
    "n_heads": _int(1, MAX_HEADS, "MAX_HEADS"),
    "dropout": _float(0.0, 1.0, hi_open=True),
}
_DIFFUSION = {
    "steps": _int(1, MAX_DIFFUSION_STEPS, "MAX_DIFFUSION_STEPS"),
    "cosine_s": _float(0.0, 1.0, lo_open=True),
    "max_beta": _float(0.0, 1.0, lo_open=True, hi_open=True),
    "sampler": _WORD,
    "ddim_steps": _int(1, MAX_DIFFUSION_STEPS, "MAX_DIFFUSION_STEPS"),
    "time_dim": _int(2, MAX_TIME_DIM, "MAX_TIME_DIM"),
}
_POLICY = {"spec": ("section", _SPEC), "encoder": ("section", _ENCODER), "backbone": ("section", _BACKBONE),
           "diffusion": ("section", _DIFFUSION), "history": _WORD}


def _type_name(v) -> str:
    return "null" if v is None else {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                                     list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def _check_int(path, v, lo, hi, bound=""):
    if type(v) is not int:
        raise CheckpointError(f"config.json: {path} must be an integer, got {_type_name(v)}")
    if not lo <= v <= hi:
        why = f" ({bound})" if bound and v > hi else ""
        raise CheckpointError(f"config.json: {path} = {short(v, 24)} is outside [{lo}, {hi}]{why}")


def _check_field(path: str, v, rule) -> None:
    kind = rule[0]
    if kind == "int":
        _check_int(path, v, *rule[1:])
    elif kind == "float":
        _, lo, hi, lo_open, hi_open = rule
        if type(v) not in (int, float) or not math.isfinite(v):
            raise CheckpointError(f"config.json: {path} must be a finite number, got {_type_name(v)}")
        if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
            raise CheckpointError(f"config.json: {path} = {v!r} is outside {'(' if lo_open else '['}{lo}, "
                                  f"{hi}{')' if hi_open else ']'}")
    elif kind == "bool":
        if type(v) is not bool:
            raise CheckpointError(f"config.json: {path} must be true or false, got {_type_name(v)}")
    elif kind == "str":
        if not isinstance(v, str) or len(v) > rule[1]:
            raise CheckpointError(f"config.json: {path} must be a short string, got {short(v, 40)}")
    elif kind == "name":
        if not isinstance(v, str) or not 1 <= len(v) <= MAX_NAME_CHARS:
            what = f"{len(v)} characters" if isinstance(v, str) else _type_name(v)
            raise CheckpointError(f"config.json: {path} must be a name of 1..{MAX_NAME_CHARS} characters, got {what}")
    elif kind == "names":
        _, lo, hi, bound = rule
        if not isinstance(v, list):
            raise CheckpointError(f"config.json: {path} must be a list, got {_type_name(v)}")
        if not lo <= len(v) <= hi:
            raise CheckpointError(f"config.json: {path} has {len(v)} entries, outside [{lo}, {hi}] ({bound})")
        for i, item in enumerate(v):
            _check_field(f"{path}[{i}]", item, ("name",))
    elif kind == "size":
        if not isinstance(v, list) or len(v) != 2:
            raise CheckpointError(f"config.json: {path} must be [height, width], got {short(v, 40)}")
        for i, item in enumerate(v):
            _check_int(f"{path}[{i}]", item, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, "MAX_IMAGE_SIZE")
    elif kind == "cameras":
        if not isinstance(v, list):
            raise CheckpointError(f"config.json: {path} must be a list, got {_type_name(v)}")
        if not 1 <= len(v) <= MAX_CAMERAS:
            raise CheckpointError(f"config.json: {path} has {len(v)} cameras, outside [1, {MAX_CAMERAS}] (MAX_CAMERAS)")
        for i, cam in enumerate(v):
            _check_section(f"{path}[{i}]", cam, _CAMERA)
    elif kind == "section":
        _check_section(path, v, rule[1])


def _check_section(path: str, d, rules: dict) -> None:
    if not isinstance(d, dict):
        raise CheckpointError(f"config.json: {path} must be an object, got {_type_name(d)}")
    for key, v in d.items():
        if key in rules:  # unknown keys: the dataclass's from_dict names them
            _check_field(f"{path}.{key}", v, rules[key])


def validate_policy_dict(d) -> None:
    """Types and ranges of every field of config.json's "policy" before anything is built from it.
    Raises CheckpointError naming the field, its value and its bound. Missing fields take the
    dataclasses' defaults (inside the bounds); cross-field consistency is PolicyConfig's check."""
    _check_section("policy", d, _POLICY)
    if d.get("backbone", {}).get("dec_d_conv") == 1:
        raise CheckpointError(f"config.json: policy.backbone.dec_d_conv = 1 is outside {{0}} + "
                              f"[{MIN_D_CONV}, {MAX_D_CONV}]")


# ---- the budget ----------------------------------------------------------------------------------------
def linear_params(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def mamba_stack_params(d: int, n: int, k: int, e: int, layers: int) -> int:
    """model.stack.MambaStack: per layer LayerNorm + Mamba (in_proj, conv1d, x_proj, dt_proj, A_log, D,
    out_proj; mamba-ssm's shapes), then the final LayerNorm."""
    di, r = e * d, math.ceil(d / 16)
    mixer = (linear_params(d, 2 * di, False) + di * k + di + di * (r + 2 * n) + linear_params(r, di) + di * n + di
             + linear_params(di, d, False))
    return layers * (2 * d + mixer) + 2 * d


def transformer_stack_params(d: int, layers: int, cross: bool) -> int:
    """model.transformer.TransformerStack: LayerNorms without bias, qkv + proj (+ cross q, kv), MLP x4."""
    cross_attn = linear_params(d, d) + linear_params(d, 2 * d) if cross else 0
    attn = linear_params(d, 3 * d) + linear_params(d, d) + cross_attn
    return layers * (d + attn + d + linear_params(d, 4 * d) + linear_params(4 * d, d)) + d


def unet1d_params(d: int, cond: int, base: int, levels: int, kernel: int = 5) -> int:
    """model.unet.DPUNet: ``levels`` levels of widths base * 2**i on d channels, a condition of ``cond``
    features, temporal kernel ``kernel`` (unet.KERNEL_SIZE). Per FiLM block: two Conv1d + GroupNorm (weight
    and bias), the FiLM Linear (scale and bias per channel), a 1x1 residual conv where the widths differ."""
    def conv(i: int, o: int, k: int) -> int:  # Conv1d and ConvTranspose1d alike: i * o * k weights + o biases
        return i * o * k + o

    def block(i: int, o: int) -> int:
        return (conv(i, o, kernel) + conv(o, o, kernel) + 4 * o + linear_params(cond, 2 * o)
                + (conv(i, o, 1) if i != o else 0))

    widths = [base * 2 ** i for i in range(levels)]
    p, c = 0, d
    for i, w in enumerate(widths):  # down: two blocks, a stride-2 conv (kernel 3) but at the last level
        p += block(c, w) + block(w, w) + (conv(w, w, 3) if i < levels - 1 else 0)
        c = w
    p += 2 * block(c, c)  # mid
    for i in range(levels - 1, 0, -1):  # up: the skip concatenated, two blocks, a transposed conv (kernel 4)
        w = widths[i - 1]
        p += block(2 * widths[i], w) + block(w, w) + conv(w, w, 4)
    return p + conv(widths[0], widths[0], kernel) + 2 * widths[0] + conv(widths[0], d, 1)  # out


def _resnet18(base: int) -> int:
    """model.encoder.ResNet18GN: conv 7x7, four stages of two BasicBlocks, GroupNorm (weight + bias)."""
    widths = [base * m for m in (1, 2, 4, 8)]
    p, cin = 3 * widths[0] * 49 + 2 * widths[0], widths[0]
    for i, w in enumerate(widths):
        for c_in, stride in ((cin, 1 if i == 0 else 2), (w, 1)):
            p += c_in * w * 9 + 2 * w + w * w * 9 + 2 * w
            if stride != 1 or c_in != w:
                p += c_in * w + 2 * w
        cin = w
    return p


def _encoder(e) -> int:
    per_camera = (_resnet18(e.base_width) + linear_params(8 * e.base_width, e.keypoints)
                  + linear_params(2 * e.keypoints, e.camera_features))
    p = len(e.cameras) * per_camera + linear_params(len(e.cameras) * e.camera_features, e.d_model)
    if e.state_dim:
        p += linear_params(e.state_dim, e.d_model)
    if e.goal_dim:
        p += linear_params(e.goal_dim, e.d_model)
    return p


def parameter_count(cfg) -> int:
    """Parameters of MailPolicy(cfg), by arithmetic on a PolicyConfig (equal to the built model's count).
    The backbone's are its family's arithmetic (model/backbone_registry.py: a built config's variant is a
    registered one)."""
    b, a, d = cfg.backbone, cfg.spec.action_dim, cfg.backbone.d_model
    p = _encoder(cfg.encoder) + b.family.parameter_count(b) + linear_params(d, a)
    if b.head == "ddpm":
        t = cfg.diffusion.time_dim
        p += linear_params(a, d) + linear_params(t, 2 * t) + linear_params(2 * t, d)
    return p


def buffer_count(cfg) -> int:
    """Elements of the persistent buffers (the normalisation statistics): in the state dict, not parameters."""
    return 4 * cfg.spec.action_dim + 2 * cfg.spec.state_dim


def activation_count(cfg) -> int:
    """Rough fp32 elements the engine keeps (window ring, recurrent states, sampler noise) plus the largest
    it computes at once for one row: a camera trunk's widest feature maps, or one backbone layer's."""
    s, b, e = cfg.spec, cfg.backbone, cfg.encoder
    h, w = e.image_size
    d = b.d_model
    trunk = 3 * h * w + 4 * e.base_width * math.ceil(h / 2) * math.ceil(w / 2)  # frame, conv1 out, norm, pool
    length = b.n_obs_tokens + b.action_horizon + 2  # [time, goal, obs, slots] (+ a decoder state token)
    if b.is_mamba:
        di, n = b.expand * d, max(b.d_state, b.dec_d_state)
        layer = length * (2 * di + 3 * di * n + 2 * d)  # in_proj, the scan's per-token factors and states
        kept = (b.n_layers + b.n_enc_layers) * di * (max(b.d_conv, b.dec_d_conv) + n)  # a stream's state
    else:
        layer = length * 8 * d + b.n_heads * length * length  # MLP x4 in and out, attention scores
        kept = 0
    kept += s.obs_horizon * e.tokens_per_step * d + (cfg.diffusion.steps + 1) * s.action_horizon * s.action_dim
    return kept + max(trunk, layer)


def estimate(cfg) -> tuple[int, int]:
    """(parameters, bytes) the policy would need, from a PolicyConfig alone: nothing is built. Bytes =
    fp32 parameters and buffers + the engine's per-step activations and kept state (rough, one row)."""
    params = parameter_count(cfg)
    return params, 4 * (params + buffer_count(cfg) + activation_count(cfg))


def check_budget(cfg, max_params: int = MAX_PARAMS, max_bytes: int = MAX_MODEL_BYTES) -> tuple[int, int]:
    """estimate(cfg), or CheckpointError when it is over the budget."""
    params, nbytes = estimate(cfg)
    if params > max_params:
        raise CheckpointError(f"the config describes a model of {params:,} parameters, over the budget of "
                              f"{max_params:,} (MAX_PARAMS); refused before building it")
    if nbytes > max_bytes:
        raise CheckpointError(f"the config describes a model needing ~{nbytes / 2**20:,.0f} MiB (weights and "
                              f"activations), over the budget of {max_bytes / 2**20:,.0f} MiB (MAX_MODEL_BYTES); "
                              f"refused before building it")
    return params, nbytes
