"""Observation encoder: ResNet-18 with GroupNorm, spatial softmax, per-frame calls, tokens."""

import pytest
import torch

from mail_policy_node.model.encoder import ObsEncoder, ObsEncoderConfig, ResNet18GN

from .tiny import tiny_spec


def tiny_encoder(**kw):
    cfg = ObsEncoderConfig.from_spec(tiny_spec(), base_width=16, camera_features=16, d_model=32, keypoints=4, **kw)
    return ObsEncoder(cfg).eval()


def test_resnet18_structure():
    net = ResNet18GN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(convs) == 17  # 1 stem + 8 blocks x 2: ResNet-18
    groups = {(m.num_channels, m.num_groups) for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {(64, 4), (128, 8), (256, 16), (512, 32)}  # C/16 groups
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(11.17e6, rel=0.01)
    assert net(torch.rand(1, 3, 128, 128)).shape == (1, 512, 4, 4)


def test_per_frame_calls_match_batched_tokens():
    enc = tiny_encoder()
    images = {c: torch.rand(2, 3, 3, 32, 32) for c in ("agentview", "wrist")}
    state = torch.randn(2, 3, 8)
    with torch.no_grad():
        feats = enc.encode_frames(images)  # (B, T, cams, F)
        assert feats.shape == (2, 3, 2, 16)
        one = enc.encode_frame("wrist", images["wrist"][:, 1])
        torch.testing.assert_close(one, feats[:, 1, 1], atol=1e-5, rtol=1e-5)
        tokens = enc.tokens(feats, state)
        assert tokens.shape == (2, 6, 32)  # 2 tokens per step: images, joint state
        assert enc.goal_token(torch.randn(2, 6)).shape == (2, 1, 32)


def test_uint8_and_float_images_agree():
    enc = tiny_encoder()
    img = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_frame("agentview", img),
                                   enc.encode_frame("agentview", img.float() / 255), atol=1e-6, rtol=0)


def test_errors_name_the_problem():
    enc = tiny_encoder()
    with pytest.raises(ValueError, match=r"expected \(B, 3, 32, 32\), got \(1, 3, 64, 64\)"):
        enc.encode_frame("agentview", torch.rand(1, 3, 64, 64))
    with pytest.raises(KeyError, match="unknown camera 'left'"):
        enc.encode_frame("left", torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="base_width must be a multiple of 16, got 20"):
        ObsEncoderConfig(base_width=20)
