"""Camera messages to model input: decode to HxWx3 uint8 RGB, then resize to the model size.

Accepted inputs (any object with the ROS 2 fields: rosbags messages, rclpy messages, or look-alikes):
- ``sensor_msgs/Image`` with encoding ``rgb8``, ``bgr8``, ``mono8`` (also ``rgba8``/``bgra8``, alpha
  dropped). Rows may be padded (``step`` > width * channels). Mono images are repeated to 3 channels.
- ``sensor_msgs/CompressedImage`` whose ``format`` names jpeg or png (plain "jpeg", or image_transport's
  "rgb8; jpeg compressed bgr8"). Decoded with OpenCV, which yields BGR; we return RGB.

Resize rule (one rule for training, replay and the robot): if a decoded frame is not the model's
``height x width``, it is resized with ``cv2.INTER_AREA`` straight to that size. No crop and no
padding: a frame of another aspect ratio is stretched. Cameras should therefore be configured with
the aspect ratio of the model input (square for the paper's 128x128). Frames already at the model
size are returned unchanged (no copy, no resampling).
"""

from __future__ import annotations

import numpy as np

_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}
SUPPORTED_ENCODINGS = tuple(_CHANNELS)


def _cv2():
    """OpenCV, imported on first use: raw frames at the model size need none of it, so the engine runs
    where OpenCV is not installed (e.g. the GPU image)."""
    import cv2

    return cv2


class ImageDecodeError(ValueError):
    pass


def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB."""
    check_layout(msg)
    encoding = str(msg.encoding).lower()
    h, w, step, ch = int(msg.height), int(msg.width), int(msg.step), _CHANNELS[encoding]
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    img = buf[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if encoding == "rgb8":
        return np.ascontiguousarray(img)
    if encoding == "bgr8":
        return np.ascontiguousarray(img[:, :, ::-1])
    if encoding == "mono8":
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if encoding == "rgba8":
        return np.ascontiguousarray(img[:, :, :3])
    return np.ascontiguousarray(img[:, :, 2::-1])  # bgra8


def compressed_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> (H, W, 3) uint8 RGB."""
    check_layout(msg)
    buf = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8)
    cv2 = _cv2()
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # always 3-channel BGR, grey inputs included
    if img is None:
        raise ImageDecodeError(f"could not decode {len(buf)} bytes of {msg.format!r}")
    return np.ascontiguousarray(img[:, :, ::-1])


def _is_compressed(msg) -> bool:
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def check_layout(msg) -> None:
    """The checks of `msg_to_rgb` that need no decoding (encoding or format, sizes, data length), cheap
    enough for every received message: a malformed one is refused when it arrives, not only if it is
    ever used. Raises ImageDecodeError."""
    if _is_compressed(msg):
        fmt = str(msg.format).lower()
        if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
            raise ImageDecodeError(f"compressed image format {msg.format!r} not supported (jpeg or png)")
        return
    encoding = str(msg.encoding).lower()
    if encoding not in _CHANNELS:
        raise ImageDecodeError(f"image encoding {msg.encoding!r} not supported; supported: {SUPPORTED_ENCODINGS}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if step < w * _CHANNELS[encoding] or len(msg.data) < h * step:
        raise ImageDecodeError(f"{encoding} image {w}x{h}: step {step} and {len(msg.data)} data bytes do not fit")


def msg_to_rgb(msg) -> np.ndarray:
    """Either camera message type -> (H, W, 3) uint8 RGB (CompressedImage has ``format``, Image
    has ``encoding``)."""
    if _is_compressed(msg):
        return compressed_msg_to_rgb(msg)
    return image_msg_to_rgb(msg)


def resize_to_model(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """The stack's resize rule: INTER_AREA straight to (height, width), no crop (see module doc)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    if img.shape[:2] == (height, width):
        return img
    try:
        cv2 = _cv2()
    except ImportError:
        small = area_downscale_integer(img, height, width)
        if small is None:
            raise
        return small
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def area_downscale_integer(img: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """INTER_AREA for whole-number downscale factors without OpenCV (e.g. on a GPU image that has none),
    bit-identical to ``cv2.resize`` (its 2x2 path rounds half up, its general path half to even);
    None for other sizes."""
    fy, fx = img.shape[0] // height, img.shape[1] // width
    if fy < 1 or fx < 1 or fy * height != img.shape[0] or fx * width != img.shape[1]:
        return None
    sums = img.reshape(height, fy, width, fx, -1).astype(np.int64).sum((1, 3))
    out = (sums + 2) >> 2 if (fy, fx) == (2, 2) else np.rint(sums / (fy * fx))
    return out.astype(np.uint8)


def encode_compressed(img: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """RGB (H, W, 3) uint8 -> jpeg/png bytes (for tests and recorders of CompressedImage)."""
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    ext = ".png" if fmt == "png" else ".jpg"
    cv2 = _cv2()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ImageDecodeError(f"could not encode {fmt}")
    return buf.tobytes()
