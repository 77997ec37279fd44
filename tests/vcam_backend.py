"""A pyvirtualcam backend that keeps what it is sent, so tests drive the real pyvirtualcam.Camera without a device.

Importing this module registers it as backend "emocam-test". pyvirtualcam calls it with keyword arguments
(width, height, fps, fourcc, device), then send(flat uint8 array) per frame, then close() exactly once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyvirtualcam
from pyvirtualcam.util import decode_fourcc

NAME = "emocam-test"
DEFAULT_DEVICE = "/dev/video-emocam-test"


@dataclass
class Sent:
    data: np.ndarray | None  # the flat frame as received (a copy), None when keep_pixels is off
    size: int  # number of bytes received
    arrived: float  # time.monotonic() when send() was called
    width: int
    height: int
    fmt: str  # pyvirtualcam pixel format name, e.g. "BGR"

    def image(self) -> np.ndarray:
        channels = self.size // (self.width * self.height)
        return self.data.reshape(self.height, self.width, channels)


SENT: list[Sent] = []
OPENED: list["RecordingBackend"] = []
settings = {"fail_on_send": None, "keep_pixels": True}


def reset(fail_on_send: int | None = None, keep_pixels: bool = True) -> None:
    """Forget earlier frames; fail_on_send=N makes the Nth send() (1-based, counted per camera) raise OSError."""
    SENT.clear()
    OPENED.clear()
    settings.update(fail_on_send=fail_on_send, keep_pixels=keep_pixels)


class RecordingBackend:
    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw):
        self.width, self.height, self.fps = width, height, fps
        self.fourcc = fourcc
        self.fmt = pyvirtualcam.PixelFormat(decode_fourcc(fourcc)).name
        self._device = device or DEFAULT_DEVICE
        self.sends = 0
        self.closed = 0
        OPENED.append(self)

    def send(self, frame: np.ndarray) -> None:
        self.sends += 1
        if settings["fail_on_send"] == self.sends:
            raise OSError(19, "No such device")  # what a write to a removed v4l2 device reports
        keep = settings["keep_pixels"]
        SENT.append(Sent(frame.copy() if keep else None, frame.size, time.monotonic(),
                         self.width, self.height, self.fmt))

    def close(self) -> None:
        self.closed += 1

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int:
        return self.fourcc


pyvirtualcam.register_backend(NAME, RecordingBackend)
