"""Annotators: the constructor takes style only, annotate() takes data only, and they chain on one frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from emocam.types import Analysis


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class RenderInfo:
    """What the pipeline knows besides the analysis: live statistics and the control state (chosen layer, class)."""

    stats: dict[str, Any] = field(default_factory=dict)
    preset: str = ""
    selection: dict[str, Any] = field(default_factory=dict)


NO_INFO = RenderInfo()


class Annotator:
    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel | None = None):
        self.options = options if options is not None else self.Options()

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        """Draw into `scene` (HxWx3 uint8 BGR) in place and return it. Boxes in `analysis` are scaled to the scene."""
        raise NotImplementedError


def ui_scale(scene: np.ndarray) -> float:
    """1.0 at 720p; text and lines grow with the frame so they stay readable at 1080p."""
    return scene.shape[0] / 720.0


@dataclass(frozen=True)
class Placement:
    """Where a frame of one size sits in an output of another: scaled by one factor (no distortion), centred,
    with bars on the sides that are left over (letterbox / pillarbox)."""

    scale: float
    x: int  # offset of the scaled frame in the output
    y: int
    width: int  # size of the scaled frame
    height: int

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        """x, y pairs in frame pixels (a box x1 y1 x2 y2, landmarks (N, 2)...) -> output pixels, same shape."""
        pairs = np.asarray(coords, np.float32).reshape(-1, 2) * self.scale + (self.x, self.y)
        return pairs.reshape(np.shape(coords))


def placement(frame_size: tuple[int, int], output_size: tuple[int, int]) -> Placement:
    """How a frame of frame_size (w, h) fits output_size (w, h); the pipeline and the annotators share this."""
    (fw, fh), (ow, oh) = frame_size, output_size
    if not fw or not fh or (fw, fh) == (ow, oh):
        return Placement(1.0, 0, 0, ow, oh)
    scale = min(ow / fw, oh / fh)
    w, h = min(ow, round(fw * scale)), min(oh, round(fh * scale))
    return Placement(scale, (ow - w) // 2, (oh - h) // 2, w, h)


def to_scene(analysis: Analysis, scene: np.ndarray) -> Placement:
    """From analysis coordinates to the scene the annotators draw on (the output may differ from the camera)."""
    return placement(analysis.size, (scene.shape[1], scene.shape[0]))


def _label_layout(text: str, scale: float) -> tuple[int, int, int, int, float, int]:
    """put_label's box (width, height), text baseline, padding, font scale and stroke, from one text measure."""
    font_scale, thick = 0.6 * scale, max(1, round(1.5 * scale))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    pad = max(2, round(4 * scale))
    return tw + 2 * pad, th + base + 2 * pad, base, pad, font_scale, thick


def label_size(text: str, scale: float) -> tuple[int, int]:
    """Width and height of put_label's box for this text, to place it before drawing."""
    return _label_layout(text, scale)[:2]


def put_label(scene: np.ndarray, text: str, org: tuple[int, int], bg: tuple[int, int, int],
              fg: tuple[int, int, int], scale: float) -> tuple[int, int]:
    """Text on a filled box whose bottom-left corner is `org`, kept inside the frame. Returns the box size."""
    w, h, base, pad, font_scale, thick = _label_layout(text, scale)
    x = int(np.clip(org[0], 0, max(0, scene.shape[1] - w)))
    y = int(np.clip(org[1], h, scene.shape[0]))
    cv2.rectangle(scene, (x, y - h), (x + w, y), bg, -1)
    cv2.putText(scene, text, (x + pad, y - pad - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, fg, thick, cv2.LINE_AA)
    return w, h
