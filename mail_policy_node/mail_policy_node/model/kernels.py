"""Optional CUDA kernels from mamba-ssm and causal-conv1d.

They are imported if present and used only for CUDA tensors; the pure-PyTorch path in `mamba.py` and
`scan.py` is the reference and runs everywhere. mamba-ssm needs a CUDA build of torch, so on the CPU
machines of this project all names below are None.
"""

from __future__ import annotations

import torch

try:  # fused conv + x_proj + scan + out_proj for a whole sequence, and the plain scan
    from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
except Exception:  # noqa: BLE001 - ImportError, or a CUDA extension that fails to load
    mamba_inner_fn = selective_scan_fn = None

try:  # one-token SSM update (Triton)
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
except Exception:  # noqa: BLE001 - ImportError, or a CUDA extension that fails to load
    selective_state_update = None

try:
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
except Exception:  # noqa: BLE001 - ImportError, or a CUDA extension that fails to load
    causal_conv1d_fn = causal_conv1d_update = None


def have_sequence_kernels() -> bool:
    return mamba_inner_fn is not None and selective_scan_fn is not None and causal_conv1d_fn is not None


def have_step_kernels() -> bool:
    return selective_state_update is not None and causal_conv1d_update is not None


def usable(x: torch.Tensor, want: bool) -> bool:
    """Kernels run only when asked for, on CUDA tensors."""
    return want and x.is_cuda


# ---- PyTorch stand-ins with the kernels' signatures and semantics (for CPU tests of the kernel paths) ----
# Same argument conventions as the kernels called in mamba.py, as read from mamba-ssm 2.3.2.post1 and
# causal-conv1d 1.7.0. They let the kernel-structured code run, and be checked, on a CPU.

def _torch_causal_conv1d_fn(x, weight, bias=None, activation=None):
    """x (B, D, L), weight (D, W), bias (D,) -> (B, D, L): depthwise causal conv, zero left padding."""
    width = weight.shape[1]
    out = torch.nn.functional.conv1d(x, weight[:, None, :].to(x.dtype),
                                     None if bias is None else bias.to(x.dtype),
                                     padding=width - 1, groups=x.shape[1])[..., :x.shape[-1]]
    return torch.nn.functional.silu(out) if activation in ("silu", "swish") else out


def _torch_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """u, delta, z (B, D, L); A (D, N) fp32; B, C (B, N, L); D, delta_bias (D,) fp32; zero initial state.
    -> out (B, D, L) in u's dtype [, last_state (B, D, N) fp32]."""
    from .scan import selective_scan_sequential

    out, last = selective_scan_sequential(u, delta, A, B, C, D, z, delta_bias=delta_bias,
                                          delta_softplus=delta_softplus)
    return (out, last) if return_last_state else out


@torch.no_grad()
def _torch_selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """state (B, D, N) updated in place; x, dt, z (B, D); A (D, N); B, C (B, N); D, dt_bias (D,).
    -> out (B, D) in x's dtype. Like the Triton kernel, no backward: its output carries no gradient."""
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = torch.nn.functional.softplus(dt)
    dA = torch.exp(dt[..., None] * A.float())
    state.copy_(state * dA + (dt * x.float())[..., None] * B.float()[:, None, :])
    out = torch.einsum("bdn,bn->bd", state.float(), C.float())
    if D is not None:
        out = out + x.float() * D.float()
    if z is not None:
        out = out * torch.nn.functional.silu(z.float())
    return out.to(x.dtype)


class KernelOps:
    """The three kernels the continue path calls, from one source: the real ones or the PyTorch stand-ins."""

    def __init__(self, conv, scan, state_update):
        self.causal_conv1d_fn, self.selective_scan_fn, self.selective_state_update = conv, scan, state_update


TORCH_OPS = KernelOps(_torch_causal_conv1d_fn, _torch_selective_scan_fn, _torch_selective_state_update)


def cuda_ops() -> KernelOps:
    return KernelOps(causal_conv1d_fn, selective_scan_fn, selective_state_update)


def have_continue_kernels() -> bool:
    return causal_conv1d_fn is not None and selective_scan_fn is not None and selective_state_update is not None
