"""A demo camera that needs no camera: the astronaut from scikit-image drifting, zooming and changing light
over a plain background, as a deterministic function of the frame index, so that overlays visibly follow her.

The picture repeats every CYCLE frames (20 s at 30 fps). A weight that rises and falls once per cycle blends a
calm first phase (wandering at about 60% of the frame height) into a second one where she also zooms from about
40% to 97% of the frame height and back: her face is 89 to 207 px tall at 720p (MTCNN's default 40 px minimum
on the 640x360 copy the analyser sees).
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from emocam.sources import SOURCES
from emocam.sources.base import Frame, Source, SourceInfo
from emocam.sources.video import RealtimeClock

CYCLE = 600
# Head and shoulders of the 512x512 astronaut (x1, y1, x2, y2), and her face in it as EmoCam's MTCNN finds it
# (180.3, 60.7, 268.4, 172.2); by eye, hairline to chin and cheek to cheek, it is 178, 68, 274, 178.
ASTRONAUT_CROP = (48, 0, 400, 352)
ASTRONAUT_FACE = (180, 61, 268, 172)
BORDER = 6  # a white photo-card border around the picture
SPRITE_SIZE = ASTRONAUT_CROP[2] - ASTRONAUT_CROP[0] + 2 * BORDER
FACE_IN_SPRITE = (
    ASTRONAUT_FACE[0] - ASTRONAUT_CROP[0] + BORDER,
    ASTRONAUT_FACE[1] - ASTRONAUT_CROP[1] + BORDER,
    ASTRONAUT_FACE[2] - ASTRONAUT_CROP[0] + BORDER,
    ASTRONAUT_FACE[3] - ASTRONAUT_CROP[1] + BORDER,
)


class DemoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(1280, ge=160, le=7680, description="Frame width.")
    height: int = Field(720, ge=120, le=4320, description="Frame height.")
    fps: float = Field(30.0, gt=0, le=1000, description="Frames per second.")
    frames: int | None = Field(None, ge=1, description="Stop after this many frames; leave out to run forever.")
    pacing: Literal["realtime", "fast"] = Field(
        "realtime", description='"realtime": one frame every 1/fps s like a camera; "fast": as fast as they render.'
    )


def placement(index: int, width: int, height: int) -> tuple[int, int, int, float]:
    """Where the picture goes in frame `index`: left, top, side length in pixels, and brightness gain."""
    u = (index % CYCLE) / CYCLE
    zoom_phase = 0.5 - 0.5 * math.cos(2 * math.pi * u)
    scale = 0.62 * math.exp(0.45 * zoom_phase * math.sin(2 * math.pi * 3 * u))
    side = round(min(scale * height, 0.97 * width))
    room_x, room_y = (width - side) / 2, (height - side) / 2
    cx = width / 2 + 0.9 * room_x * math.sin(2 * math.pi * 2 * u)
    cy = height / 2 + 0.8 * room_y * math.sin(2 * math.pi * 3 * u + 1.0)
    gain = 0.85 + 0.2 * math.sin(2 * math.pi * 4 * u + 0.3)
    return round(cx - side / 2), round(cy - side / 2), side, gain


def demo_face_box(index: int, width: int, height: int) -> np.ndarray:
    """The astronaut's face in demo frame `index` at that frame size: (4,) float32 x1, y1, x2, y2."""
    left, top, side, _ = placement(index, width, height)
    scale = side / SPRITE_SIZE
    x1, y1, x2, y2 = FACE_IN_SPRITE
    return np.array([left + x1 * scale, top + y1 * scale, left + x2 * scale, top + y2 * scale], np.float32)


@lru_cache(maxsize=1)
def astronaut_card() -> np.ndarray:
    import skimage.data

    x1, y1, x2, y2 = ASTRONAUT_CROP
    picture = cv2.cvtColor(skimage.data.astronaut()[y1:y2, x1:x2], cv2.COLOR_RGB2BGR)
    card = cv2.copyMakeBorder(picture, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=(235, 235, 235))
    card.setflags(write=False)
    return card


def background(width: int, height: int) -> np.ndarray:
    """A dim room: a vertical gradient, a lighter window at the upper left and a desk edge at the bottom."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    top, bottom = np.array([92, 72, 58], np.float32), np.array([150, 140, 132], np.float32)
    image = np.repeat(((1 - t) * top + t * bottom)[:, None, :], width, axis=1).reshape(height, width, 3)
    image = image.astype(np.uint8)
    unit = height / 720
    cv2.rectangle(image, (round(60 * unit), round(50 * unit)), (round(360 * unit), round(300 * unit)),
                  (190, 180, 170), -1)  # fmt: skip
    cv2.rectangle(image, (0, round(height * 0.9)), (width, height), (60, 75, 95), -1)
    cv2.putText(image, "EmoCam demo", (round(20 * unit), height - round(20 * unit)), cv2.FONT_HERSHEY_SIMPLEX,
                0.8 * unit, (200, 200, 200), max(1, round(2 * unit)), cv2.LINE_AA)  # fmt: skip
    image.setflags(write=False)
    return image


def render(index: int, width: int, height: int, back: np.ndarray, card: np.ndarray) -> np.ndarray:
    left, top, side, gain = placement(index, width, height)
    frame = back.copy()
    picture = cv2.resize(card, (side, side), interpolation=cv2.INTER_LINEAR)
    frame[top : top + side, left : left + side] = cv2.convertScaleAbs(picture, alpha=gain)
    return frame


@SOURCES.register("demo")
class DemoSource(Source):
    Options = DemoOptions
    options: DemoOptions

    def __init__(self, options: DemoOptions | None = None):
        super().__init__(options)
        self._background: np.ndarray | None = None
        self._clock: RealtimeClock | None = None
        self._index = 0

    def open(self) -> SourceInfo:
        opts = self.options
        self._background = background(opts.width, opts.height)
        self._clock = RealtimeClock(opts.fps) if opts.pacing == "realtime" else None
        self._index = 0
        description = f"demo: skimage astronaut {opts.width}x{opts.height} @ {opts.fps:.3g} ({opts.pacing})"
        logger.info(description)
        return SourceInfo(width=opts.width, height=opts.height, fps=opts.fps, description=description)

    def read(self) -> Frame | None:
        opts = self.options
        if self._background is None or (opts.frames is not None and self._index >= opts.frames):
            return None
        if self._clock is not None:
            self._clock.wait(self._index)
        image = render(self._index, opts.width, opts.height, self._background, astronaut_card())
        frame = Frame(image=image, index=self._index, timestamp=time.monotonic())
        self._index += 1
        return frame

    def close(self) -> None:
        self._background = None
