"""Random-shift augmentation: what it does to frames, and that it keeps batches a function of the step."""

import numpy as np
import torch

from mail_policy_node.training.augment import random_shift, shift_generator, shift_images


def _reference(frames: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """Replicate-pad by ``pad`` then crop at offset (pad + dy, pad + dx): the usual way to write it."""
    padded = np.pad(frames, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = frames.shape[-2:]
    return padded[:, :, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def test_shift_equals_replicate_pad_and_crop_with_one_shift_per_sample():
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (6, 3, 3, 12, 10), dtype=np.uint8))
    g = torch.Generator().manual_seed(5)
    out = random_shift(frames, 3, g)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    dy, dx = torch.randint(-3, 4, (2, 6), generator=torch.Generator().manual_seed(5))
    for b in range(6):
        # every time step of a sample moved by the same (dy, dx)
        np.testing.assert_array_equal(out[b].numpy(), _reference(frames[b].numpy(), int(dy[b]), int(dx[b]), 3))
    assert (dy != 0).any() or (dx != 0).any()
    assert not torch.equal(out, frames)


def test_zero_shift_is_the_identity_and_float_frames_work():
    frames = torch.rand(2, 1, 3, 8, 8)
    assert random_shift(frames, 0, torch.Generator()) is frames
    out = random_shift(frames, 2, torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and out.shape == frames.shape
    # a shift only moves and repeats pixels: every output value is an input value of the same sample
    for b in range(2):
        assert set(out[b].flatten().tolist()) <= set(frames[b].flatten().tolist())


def test_shifts_are_a_function_of_seed_and_step_and_differ_per_camera():
    frames = torch.arange(4 * 1 * 1 * 16 * 16, dtype=torch.float32).reshape(4, 1, 1, 16, 16)
    a = shift_images({"a": frames, "b": frames}, 4, shift_generator(0, 10))
    again = shift_images({"a": frames, "b": frames}, 4, shift_generator(0, 10))
    other_step = shift_images({"a": frames, "b": frames}, 4, shift_generator(0, 11))
    assert torch.equal(a["a"], again["a"]) and torch.equal(a["b"], again["b"])
    assert not torch.equal(a["a"], other_step["a"])
    assert not torch.equal(a["a"], a["b"])


def test_the_trainer_feeds_shifted_frames_to_the_model_in_training_only(bag_dir, tmp_path):
    from mail_policy_node.training.config import TrainConfig
    from mail_policy_node.training.trainer import Trainer

    from .conftest import tiny_config

    cfg = TrainConfig.from_dict(tiny_config([bag_dir], tmp_path / "run", tmp_path / "cache", train__augment_shift=3))
    trainer = Trainer(cfg, progress=False)
    seen = []
    forward = trainer.policy.forward
    trainer.policy.forward = lambda batch: seen.append(batch["images"]) or forward(batch)  # a spy: records inputs
    prepared = trainer._numpy_batch(trainer._rows(0), "train")
    rng = np.random.default_rng(1)  # the synthetic bags' frames are flat; give the batch some texture
    for frames in prepared[0]["images"].values():
        frames[...] = rng.integers(0, 256, frames.shape, dtype=np.uint8)
    trainer.train_step(prepared)
    for cam, frames in prepared[0]["images"].items():
        original = torch.from_numpy(frames).permute(0, 1, 4, 2, 3)
        assert not torch.equal(seen[0][cam], original)
        if cam == "agentview":  # the first camera gets the first draw of step 0's generator
            assert torch.equal(seen[0][cam], random_shift(original, 3, shift_generator(0, 0)))
    trainer.validate()
    assert len(seen) >= 2
    val_frames = trainer._numpy_batch(np.arange(min(8, trainer.data.n_windows("val"))), "val")[0]["images"]
    first = next(iter(val_frames))
    assert torch.equal(seen[1][first], torch.from_numpy(val_frames[first]).permute(0, 1, 4, 2, 3))  # unshifted
