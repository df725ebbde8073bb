"""A camera type added the way data/cameras.py says: a class implementing `CapturedSource` and one
`register_camera_source`. It draws its frames, so it needs no device: frame k has red k % 256 in every
pixel and a green left half (orientation), stamped with the host time it was drawn, `fps` a second.

Run as a module (``python -m tests.data.pattern_camera --ros-args ...``) it is the camera node with this
source registered: what a lab's own camera package would do."""

from __future__ import annotations

import time

import numpy as np

from mail_policy_node.data.cameras import (CameraError, CameraFrame, intrinsics_from_fovy, register_camera_source,
                                           unregister_camera_source)

NAME = "pattern"


class PatternCamera:
    renders_sim_state = False  # the node reads it in its capture thread
    is_recording = False  # live: nothing to wait for, never ends
    ended = False
    reanchors = 0
    last_reanchor = ""

    def __init__(self, width: int, height: int, fps: int):
        self.width, self.height = width, height
        self.frame_period = 1.0 / fps
        self.intrinsics = None
        self._next: tuple[int, float] | None = None  # (index, monotonic time due) while open
        self.drawn = 0

    def check(self) -> None:
        if self.width < 2:
            raise CameraError(f"pattern camera could not start: width {self.width} leaves no left half")

    def open(self) -> None:
        self.check()
        self.intrinsics = intrinsics_from_fovy(self.width, self.height, 60.0)
        self._next = (0, time.monotonic())

    @property
    def time_domain(self) -> str | None:
        return "host clock when drawn" if self.drawn else None

    @property
    def setup_note(self) -> str:
        return f"drawing {self.width}x{self.height}"

    def read(self, timeout: float = 1.0) -> CameraFrame | None:
        if self._next is None:
            raise CameraError("pattern camera read before open")
        k, due = self._next
        wait = due - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        time.sleep(max(0.0, wait))
        rgb = np.zeros((self.height, self.width, 3), np.uint8)
        rgb[..., 0] = k % 256
        rgb[:, : self.width // 2, 1] = 200
        self._next = (k + 1, due + self.frame_period)
        self.drawn += 1
        return CameraFrame(rgb, time.time(), k)

    def close(self) -> None:
        self._next = None


def register() -> None:
    register_camera_source(NAME, lambda p: PatternCamera(p["width"], p["height"], p["fps"]),
                           "draws a test pattern (no device): red = frame index")


def unregister() -> None:
    unregister_camera_source(NAME)


if __name__ == "__main__":
    register()
    from mail_policy_node.nodes.camera_node import main

    main()
