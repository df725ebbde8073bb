"""Observation encoder: one ResNet-18 trunk per camera, GroupNorm, spatial softmax, Linear.

torchvision is not used: on this project's CPU machines its PyPI wheel pulls a ~5.5 GB CUDA build of torch in
place of the CPU one env/requirements.txt pins, so the ResNet-18 trunk is written here in plain torch.nn (same
stages and widths, BatchNorm replaced by GroupNorm with C/16 groups, no pretrained weights, no pooling / fc).

Per frame: RGB in [0, 1] (uint8 accepted and scaled) -> ImageNet mean/std -> trunk (B, 512, H/32, W/32)
-> spatial softmax (32 keypoints -> 64 coordinates) -> Linear to `camera_features`. `encode_frame` is
callable per camera frame so a run-time engine can cache one embedding per frame. Per time step the
cameras' features are concatenated and projected to the model width (one token); an optional joint
state token and an optional goal (precomputed language embedding) token come from their own Linear.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec import FeatureSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class ObsEncoderConfig:
    cameras: tuple[str, ...] = ("agentview", "wrist")  # one trunk per camera, in this order
    image_size: tuple[int, int] = (128, 128)  # (H, W) every camera frame must have
    d_model: int = 128  # width of the produced tokens
    keypoints: int = 32  # spatial-softmax keypoints per camera
    camera_features: int = 128  # per-camera feature size after the keypoint Linear
    state_dim: int = 0  # >0: joint-state token from a (normalised) state of this size
    goal_dim: int = 0  # >0: goal token from a precomputed embedding of this size
    base_width: int = 64  # width of the first ResNet stage (64 = ResNet-18; tests use less)

    def __post_init__(self):
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"ObsEncoderConfig.cameras must be non-empty and unique, got {self.cameras}")
        h, w = self.image_size
        if h < 32 or w < 32:
            raise ValueError(f"ObsEncoderConfig.image_size must be at least 32x32, got {self.image_size}")
        for name in ("d_model", "keypoints", "camera_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"ObsEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.state_dim < 0 or self.goal_dim < 0:
            raise ValueError(f"state_dim and goal_dim must be >= 0, got {self.state_dim}, {self.goal_dim}")
        if self.base_width < 16 or self.base_width % 16:
            raise ValueError(f"ObsEncoderConfig.base_width must be a multiple of 16, got {self.base_width}")

    @classmethod
    def from_spec(cls, spec: FeatureSpec, **kw) -> ObsEncoderConfig:
        sizes = {(c.height, c.width) for c in spec.cameras}
        if len(sizes) != 1:
            raise ValueError(f"all cameras must share one model input size, got {sorted(sizes)}")
        return cls(cameras=spec.camera_names, image_size=sizes.pop(),
                   state_dim=spec.state_dim if spec.use_joint_state else 0, goal_dim=spec.goal_embedding_dim, **kw)

    @property
    def tokens_per_step(self) -> int:
        return 1 + int(self.state_dim > 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cameras"], d["image_size"] = list(self.cameras), list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ObsEncoderConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ObsEncoderConfig fields: {sorted(unknown)}")
        d = dict(d)
        d["cameras"], d["image_size"] = tuple(d.get("cameras", ())), tuple(d.get("image_size", (128, 128)))
        return cls(**d)


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(c // 16, c)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = _gn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _gn(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _gn(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet18GN(nn.Module):
    """ResNet-18 without pooling head: (B, 3, H, W) -> (B, 8 * base, H/32, W/32)."""

    def __init__(self, base: int = 64):
        super().__init__()
        widths = [base * m for m in (1, 2, 4, 8)]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.norm1 = _gn(widths[0])
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.out_channels = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 3, 2, 1)
        return self.stages(x)


class SpatialSoftmax(nn.Module):
    """(B, C, h, w) -> (B, 2 * keypoints): expected (x, y) in [-1, 1] of each keypoint's softmax map."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.kp = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: Tensor) -> Tensor:
        _b, _, h, w = x.shape
        logits = self.kp(x).flatten(2)  # (B, K, h*w)
        prob = logits.softmax(-1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device, dtype=prob.dtype),
                                torch.linspace(-1, 1, w, device=x.device, dtype=prob.dtype), indexing="ij")
        ex = (prob * xs.reshape(1, 1, -1)).sum(-1)
        ey = (prob * ys.reshape(1, 1, -1)).sum(-1)
        return torch.stack([ex, ey], -1).flatten(1)  # (B, 2K)


class CameraEncoder(nn.Module):
    def __init__(self, cfg: ObsEncoderConfig):
        super().__init__()
        self.trunk = ResNet18GN(cfg.base_width)
        self.pool = SpatialSoftmax(self.trunk.out_channels, cfg.keypoints)
        self.proj = nn.Linear(2 * cfg.keypoints, cfg.camera_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.pool(self.trunk(x)))


class ObsEncoder(nn.Module):
    def __init__(self, cfg: ObsEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.cameras = nn.ModuleDict({name: CameraEncoder(cfg) for name in cfg.cameras})
        self.fuse = nn.Linear(len(cfg.cameras) * cfg.camera_features, cfg.d_model)
        self.state_proj = nn.Linear(cfg.state_dim, cfg.d_model) if cfg.state_dim else None
        self.goal_proj = nn.Linear(cfg.goal_dim, cfg.d_model) if cfg.goal_dim else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def encode_frame(self, camera: str, image: Tensor) -> Tensor:
        """image (B, 3, H, W), float in [0, 1] or uint8 -> (B, camera_features)."""
        if camera not in self.cameras:
            raise KeyError(f"unknown camera {camera!r}; this encoder has {list(self.cameras)}")
        if tuple(image.shape[-2:]) != tuple(self.cfg.image_size) or image.shape[-3] != 3:
            raise ValueError(f"camera {camera!r}: expected (B, 3, {self.cfg.image_size[0]}, "
                             f"{self.cfg.image_size[1]}), got {tuple(image.shape)}")
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        x = (x - self.mean) / self.std
        dtype = self.fuse.weight.dtype
        return self.cameras[camera](x.to(dtype))

    def encode_frames(self, images: dict[str, Tensor]) -> Tensor:
        """{camera: (B, T, 3, H, W)} -> per-camera features (B, T, n_cameras, camera_features)."""
        feats = []
        for name in self.cfg.cameras:
            if name not in images:
                raise KeyError(f"missing camera {name!r}; got {sorted(images)}")
            x = images[name]
            b, t = x.shape[:2]
            feats.append(self.encode_frame(name, x.flatten(0, 1)).view(b, t, -1))
        return torch.stack(feats, dim=2)

    def tokens(self, camera_features: Tensor, state: Tensor | None = None) -> Tensor:
        """camera_features (B, T, n_cameras, F), state (B, T, S) normalised -> (B, T * P, D), P tokens
        per step in the order [image, joint state]."""
        img = self.fuse(camera_features.flatten(2))  # (B, T, D)
        if self.state_proj is None:
            return img
        if state is None:
            raise ValueError("this encoder has a joint-state token; pass the state")
        return torch.stack([img, self.state_proj(state.to(img.dtype))], dim=2).flatten(1, 2)  # (B, T*2, D)

    def goal_token(self, goal: Tensor) -> Tensor:
        """goal (B, G) precomputed embedding -> (B, 1, D)."""
        if self.goal_proj is None:
            raise ValueError("this encoder takes no goal embedding")
        return self.goal_proj(goal.to(self.fuse.weight.dtype))[:, None]
