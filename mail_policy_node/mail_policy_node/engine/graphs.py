"""Per-step work as a CUDA graph, or run eagerly: one code path for both.

A step function reads and writes only *static* tensors (allocated once by the engine and updated in
place), so the same function can be replayed as a captured CUDA graph or simply called. On the CPU, or
with graphs off, `StepGraph` just calls it; on CUDA it warms the function up on a side stream (Triton
autotuning, cuDNN algorithm choice, allocator growth all happen there), then captures it once.
Recurrent states are nested tuples of tensors (`StreamState`); `tree_leaves` / `copy_tree_` move them
in and out of their static buffers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def tree_leaves(tree) -> list[Tensor]:
    """Tensors of a nested tuple / NamedTuple, depth first."""
    if isinstance(tree, Tensor):
        return [tree]
    out: list[Tensor] = []
    for item in tree:
        out.extend(tree_leaves(item))
    return out


def copy_tree_(dst, src) -> None:
    """Copy every tensor of ``src`` into the same-shaped tensor of ``dst`` (in place)."""
    d, s = tree_leaves(dst), tree_leaves(src)
    if len(d) != len(s):
        raise ValueError(f"state trees differ: {len(d)} != {len(s)} tensors")
    for a, b in zip(d, s):
        a.copy_(b)


def set_rows_(dst, src, rows: Tensor) -> None:
    """dst[rows] = src[rows] for every tensor of the trees (batch axis first)."""
    for a, b in zip(tree_leaves(dst), tree_leaves(src)):
        a[rows] = b[rows]


class StepGraph:
    """``fn()`` captured as a CUDA graph when ``capture`` is set, else called directly."""

    def __init__(self, fn: Callable[[], None], capture: bool, pool=None, warmup: int = 3):
        self.fn = fn
        self.graph: torch.cuda.CUDAGraph | None = None
        if not capture:
            return
        # warm up and capture on one side stream (per-stream cuDNN workspaces are then allocated before
        # capture); "thread_local": other threads of the process (a ROS executor) may use CUDA meanwhile
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):
                fn()
        side.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=pool, stream=side, capture_error_mode="thread_local"), torch.no_grad():
                fn()
        except Exception as e:
            raise RuntimeError(f"CUDA graph capture of {getattr(fn, '__name__', fn)} failed: {e}. Something in it "
                               "synchronises with the host or copies from host memory; run with cuda_graphs off "
                               "to use the same step eagerly") from e
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = graph

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def pool(self):
        return self.graph.pool() if self.graph is not None else None

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            with torch.no_grad():
                self.fn()
