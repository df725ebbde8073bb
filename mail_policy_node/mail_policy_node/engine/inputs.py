"""Observations as the engine takes them, and their validation.

An `Observation` is one control step's inputs for every batch row (robot or evaluation episode):
camera frames as HxWx3 uint8 RGB, an optional joint state in robot units, an optional goal embedding and
the acquisition time stamp of the newest frame. `check_observation` turns it into batched arrays in the
policy's camera order, or raises `EngineError` with a reason code. Frames of another size are resized by
the stack's one rule (`data.images.resize_to_model`: INTER_AREA straight to the model size, no crop);
anything else unexpected (dtype, channels, rank, batch size) is refused, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping, Sequence

import numpy as np

from ..data.images import resize_to_model
from ..spec import FeatureSpec
from .errors import EngineError


@dataclass
class Observation:
    """Inputs of one control step. With batch B > 1, every field carries a leading batch axis (or, for
    images, a list of B frames, which may differ in size)."""

    stamp: float | Sequence[float] | np.ndarray  # [s] acquisition time of the newest frame, (B,) for B > 1
    images: Mapping[str, np.ndarray | Sequence[np.ndarray]]  # camera -> (H, W, 3) or (B, H, W, 3) uint8 RGB
    state: np.ndarray | Sequence[float] | None = None  # (S,) or (B, S) joint state in robot units
    goal: np.ndarray | Sequence[float] | None = None  # (G,) or (B, G) precomputed goal embedding


@dataclass
class CheckedObservation:
    stamps: np.ndarray  # (B,) float64
    images: dict[str, np.ndarray]  # camera (spec order) -> (B, H, W, 3) uint8 at the model size
    state: np.ndarray | None  # (B, S) float32
    goal: np.ndarray | None  # (B, G) float32


def _as_numpy(x):
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        return x.detach().cpu().numpy()
    return x


def _frames(camera: str, value, batch: int, height: int, width: int) -> np.ndarray:
    value = _as_numpy(value)
    if isinstance(value, (list, tuple)):
        frames = [_as_numpy(v) for v in value]
    elif isinstance(value, np.ndarray) and value.ndim == 4:
        frames = list(value)
    elif isinstance(value, np.ndarray) and value.ndim == 3:
        frames = [value]
    else:
        raise EngineError("bad_image", f"camera {camera!r}: expected an (H, W, 3) uint8 RGB array (or B of them), "
                                       f"got {type(value).__name__} {getattr(value, 'shape', '')}")
    if len(frames) != batch:
        raise EngineError("bad_image", f"camera {camera!r}: {len(frames)} frames for a batch of {batch}")
    out = np.empty((batch, height, width, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] != 3:
            raise EngineError("bad_image", f"camera {camera!r}: frame {i} must be (H, W, 3) RGB, got "
                                           f"{getattr(f, 'shape', type(f).__name__)} (decode other encodings first)")
        if f.dtype != np.uint8:
            raise EngineError("bad_image", f"camera {camera!r}: frame {i} must be uint8, got {f.dtype}")
        if f.shape[0] < 1 or f.shape[1] < 1:
            raise EngineError("bad_image", f"camera {camera!r}: frame {i} is empty {f.shape}")
        out[i] = resize_to_model(f, height, width)
    return out


def _vector(name: str, value, batch: int, size: int) -> np.ndarray:
    arr = np.asarray(_as_numpy(value), dtype=np.float64)
    if arr.ndim == 1 and batch == 1:
        arr = arr[None]
    if arr.shape != (batch, size):
        raise EngineError(f"bad_{name}", f"{name} must have shape ({size},) or ({batch}, {size}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise EngineError("nan_input", f"{name} holds NaN or inf")
    return arr.astype(np.float32)


def check_observation(obs: Observation, spec: FeatureSpec, batch: int) -> CheckedObservation:
    """Validate and batch one observation for a policy with ``spec``; raises `EngineError`."""
    given = set(obs.images)
    missing = [c for c in spec.camera_names if c not in given]
    if missing:
        raise EngineError("missing_camera", f"no frame for camera(s) {missing}; expected {list(spec.camera_names)}")
    unknown = sorted(given - set(spec.camera_names))
    if unknown:
        raise EngineError("unknown_camera", f"camera(s) {unknown} not in the policy's {list(spec.camera_names)}")
    images = {c.name: _frames(c.name, obs.images[c.name], batch, c.height, c.width) for c in spec.cameras}

    state = None
    if spec.use_joint_state:
        if obs.state is None:
            raise EngineError("missing_state", f"the policy uses the joint state ({spec.state_dim} values)")
        state = _vector("state", obs.state, batch, spec.state_dim)
    goal = None
    if obs.goal is not None:
        if not spec.goal_embedding_dim:
            raise EngineError("bad_goal", "the policy takes no goal embedding")
        goal = _vector("goal", obs.goal, batch, spec.goal_embedding_dim)

    stamps = np.asarray(_as_numpy(obs.stamp), dtype=np.float64).reshape(-1)
    if stamps.shape == (1,) and batch > 1:
        stamps = np.repeat(stamps, batch)
    if stamps.shape != (batch,):
        raise EngineError("bad_stamp", f"stamp must be a number or ({batch},), got shape {stamps.shape}")
    if not np.isfinite(stamps).all():
        raise EngineError("nan_input", "time stamp is NaN or inf")
    return CheckedObservation(stamps, images, state, goal)
