"""Camera message decoding (every supported encoding) and the resize rule."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mail_policy_node.data.images import (
    ImageDecodeError,
    compressed_msg_to_rgb,
    encode_compressed,
    image_msg_to_rgb,
    msg_to_rgb,
    resize_to_model,
)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def _image(encoding, pixels, pad=0):
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=padded.shape[1], data=padded.reshape(-1))


@pytest.mark.parametrize("pad", [0, 3])
def test_rgb8_bgr8_rgba8_bgra8(rgb, pad):
    np.testing.assert_array_equal(image_msg_to_rgb(_image("rgb8", rgb, pad)), rgb)
    np.testing.assert_array_equal(image_msg_to_rgb(_image("bgr8", rgb[:, :, ::-1].copy(), pad)), rgb)
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    np.testing.assert_array_equal(image_msg_to_rgb(_image("rgba8", np.concatenate([rgb, alpha], 2), pad)), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], alpha], 2)
    np.testing.assert_array_equal(image_msg_to_rgb(_image("bgra8", bgra, pad)), rgb)


def test_mono8_repeats_to_three_channels(rgb):
    grey = rgb[:, :, 0].copy()
    out = image_msg_to_rgb(_image("mono8", grey[:, :, None], pad=2))
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_bytes_data_and_errors(rgb):
    msg = _image("rgb8", rgb)
    msg.data = bytes(msg.data)  # rclpy messages carry bytes-like data
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    with pytest.raises(ImageDecodeError, match="16UC1"):
        image_msg_to_rgb(SimpleNamespace(encoding="16UC1", height=1, width=1, step=2, data=b"\0\0"))
    short = _image("rgb8", rgb)
    short.data = short.data[:-1]
    with pytest.raises(ImageDecodeError, match="do not fit"):
        image_msg_to_rgb(short)


def test_compressed_png_is_lossless_and_jpeg_close():
    rng = np.random.default_rng(1)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8), (9, 9), 3)
    png = SimpleNamespace(format="png", data=np.frombuffer(encode_compressed(smooth, "png"), np.uint8))
    np.testing.assert_array_equal(compressed_msg_to_rgb(png), smooth)
    jpeg = SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=encode_compressed(smooth, "jpeg", 95))
    out = msg_to_rgb(jpeg)
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 4, "jpeg decode must keep RGB channel order"
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    assert msg_to_rgb(SimpleNamespace(format="jpeg", data=encode_compressed(red, "jpeg")))[..., 0].mean() > 240
    with pytest.raises(ImageDecodeError, match="tiff"):
        compressed_msg_to_rgb(SimpleNamespace(format="tiff", data=b""))
    with pytest.raises(ImageDecodeError, match="could not decode"):
        compressed_msg_to_rgb(SimpleNamespace(format="png", data=b"not a png"))


def test_resize_rule_is_inter_area_without_crop():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = resize_to_model(frame, 128, 128)
    assert out.shape == (128, 128, 3)
    np.testing.assert_array_equal(out, cv2.resize(frame, (128, 128), interpolation=cv2.INTER_AREA))
    same = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    assert resize_to_model(same, 128, 128) is same
    # No crop: a marker in the frame's corner stays in the corner.
    marked = np.zeros((480, 640, 3), np.uint8)
    marked[:60, :80] = 255
    assert resize_to_model(marked, 128, 128)[:8, :8].min() == 255
    with pytest.raises(ValueError, match="uint8"):
        resize_to_model(frame.astype(np.float32), 128, 128)


def test_whole_number_area_downscale_without_opencv_matches_opencv_bit_for_bit():
    import cv2

    from mail_policy_node.data.images import area_downscale_integer

    rng = np.random.default_rng(3)
    for fy in range(1, 6):
        for fx in range(1, 6):
            if fy == fx == 1:
                continue
            img = rng.integers(0, 256, (12 * fy, 10 * fx, 3), dtype=np.uint8)
            ours = area_downscale_integer(img, 12, 10)
            np.testing.assert_array_equal(ours, cv2.resize(img, (10, 12), interpolation=cv2.INTER_AREA),
                                          err_msg=f"factor {fy}x{fx}")
    assert area_downscale_integer(np.zeros((100, 100, 3), np.uint8), 64, 64) is None  # not a whole factor
    assert area_downscale_integer(np.zeros((32, 32, 3), np.uint8), 64, 64) is None  # an upscale


def test_resize_rule_works_without_opencv_for_whole_number_factors(monkeypatch):
    import mail_policy_node.data.images as images

    img = np.random.default_rng(4).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    with_cv2 = resize_to_model(img, 64, 64)

    def no_cv2():
        raise ImportError("No module named 'cv2'")

    monkeypatch.setattr(images, "_cv2", no_cv2)  # what a machine without OpenCV sees
    np.testing.assert_array_equal(resize_to_model(img, 64, 64), with_cv2)
    with pytest.raises(ImportError):
        resize_to_model(img, 100, 100)  # needs real interpolation: OpenCV
