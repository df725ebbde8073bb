"""Optional CUDA kernels from mamba-ssm and causal-conv1d.

They are imported if present and used only for CUDA tensors; the pure-PyTorch path in `mamba.py` and
`scan.py` is the reference and runs everywhere. mamba-ssm needs a CUDA build of torch, so on the CPU
machines of this project all names below are None.
"""

from __future__ import annotations

import torch

try:  # fused conv + x_proj + scan + out_proj for a whole sequence, and the plain scan
    from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
except Exception:  # ImportError, or a CUDA extension that fails to load
    mamba_inner_fn = selective_scan_fn = None

try:  # one-token SSM update (Triton)
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
except Exception:
    selective_state_update = None

try:
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
except Exception:
    causal_conv1d_fn = causal_conv1d_update = None


def have_sequence_kernels() -> bool:
    return mamba_inner_fn is not None and selective_scan_fn is not None and causal_conv1d_fn is not None


def have_step_kernels() -> bool:
    return selective_state_update is not None and causal_conv1d_update is not None


def usable(x: torch.Tensor, want: bool) -> bool:
    """Kernels run only when asked for, on CUDA tensors."""
    return want and x.is_cuda
