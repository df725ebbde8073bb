"""MaIL model library (ROS-free): Mamba v1 in plain PyTorch, D-Ma / ED-Ma / D-Tr / ED-Tr backbones in
the paper's and streaming token layouts, observation encoder, BC and DDPM heads, policy, checkpoints.

Nothing here imports rclpy. The mamba-ssm CUDA kernels are optional (see kernels.py).
"""

from .backbones import BackboneConfig, build_backbone, count_parameters
from .checkpoint import CheckpointError, checkpoint_hash, load_checkpoint, policy_id, save_checkpoint
from .diffusion import DDPM, EMA, DiffusionConfig
from .encoder import ObsEncoder, ObsEncoderConfig
from .mamba import Mamba, MambaConfig, MambaState
from .mamba_backbones import DMamba, EDMamba, StreamState
from .policy import MailPolicy, PolicyConfig
from .presets import backbone_preset, preset_names
from .stack import MambaStack, StackState

__all__ = [
    "BackboneConfig", "build_backbone", "count_parameters", "CheckpointError", "checkpoint_hash",
    "load_checkpoint", "policy_id", "save_checkpoint", "DDPM", "EMA", "DiffusionConfig", "ObsEncoder",
    "ObsEncoderConfig", "Mamba", "MambaConfig", "MambaState", "DMamba", "EDMamba", "StreamState", "MailPolicy",
    "PolicyConfig", "backbone_preset", "preset_names", "MambaStack", "StackState",
]
