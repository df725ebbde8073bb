"""Image augmentation for training: random shifts.

A small policy trained on a few hundred demonstrations learns the pixel positions of the frames it saw;
shifting every training frame by a few pixels (edges repeated, as a replicate pad + crop would) makes
it read relative positions instead, which carries over to new initial conditions. All frames of one
sample (its K observations, or a whole episode in stream mode) get the same shift, so the motion between
them is untouched; each camera is shifted independently. Nothing is augmented at run time.

The shifts are drawn from a generator seeded by (seed, step), so batches stay a pure function of the
step and a resumed run matches one that never stopped.
"""

from __future__ import annotations

import torch


def shift_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 31 + 17)


def random_shift(frames: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """``frames`` (B, T, C, H, W), any dtype and device -> the same frames, each sample shifted by
    (dy, dx) drawn uniformly from [-max_shift, max_shift], borders repeated."""
    if max_shift <= 0:
        return frames
    b, _, _, h, w = frames.shape
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2, b), generator=generator).to(frames.device)
    rows = (torch.arange(h, device=frames.device)[None] + dy[:, None]).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=frames.device)[None] + dx[:, None]).clamp_(0, w - 1)  # (B, W)
    batch = torch.arange(b, device=frames.device)[:, None, None]
    # advanced indices on dims 0, 3, 4 -> (B, H, W, T, C); back to (B, T, C, H, W)
    return frames[batch, :, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 4, 1, 2).contiguous()


def shift_images(images: dict[str, torch.Tensor], max_shift: int, generator: torch.Generator) -> dict:
    """`random_shift` for every camera of a batch (independent shifts per camera)."""
    return {cam: random_shift(frames, max_shift, generator) for cam, frames in images.items()}
