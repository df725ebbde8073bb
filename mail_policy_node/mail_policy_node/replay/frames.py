"""Compressed camera frames kept encoded until used: the image size read from the PNG / JPEG header."""

from __future__ import annotations

from ..data.images import ImageDecodeError


def compressed_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG or JPEG header, without decoding; ImageDecodeError if it has none."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
                i += 2
                continue
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ImageDecodeError(f"no PNG or JPEG header with an image size in {len(data)} bytes")


class CompressedFrame:
    """A sensor_msgs/CompressedImage kept compressed until a tick uses it (raw images are decoded
    there too, by the runtime): the synchroniser buffers every frame, the engine takes one per tick.
    Width and height come from the header, for the runtime's empty-frame check."""

    def __init__(self, msg):
        self.format = msg.format
        self.data = msg.data
        self.width, self.height = compressed_size(bytes(msg.data))
