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


def scale_boxes(analysis: Analysis, scene: np.ndarray) -> float:
    """Factor from analysis coordinates to scene coordinates (the renderer may draw on a resized frame)."""
    w = analysis.size[0]
    return scene.shape[1] / w if w else 1.0


def put_label(scene: np.ndarray, text: str, org: tuple[int, int], bg: tuple[int, int, int],
              fg: tuple[int, int, int], scale: float) -> tuple[int, int]:
    """Text on a filled box whose bottom-left corner is `org`, kept inside the frame. Returns the box size."""
    font_scale = 0.6 * scale
    thick = max(1, round(1.5 * scale))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    pad = max(2, round(4 * scale))
    w, h = tw + 2 * pad, th + base + 2 * pad
    x = int(np.clip(org[0], 0, max(0, scene.shape[1] - w)))
    y = int(np.clip(org[1], h, scene.shape[0]))
    cv2.rectangle(scene, (x, y - h), (x + w, y), bg, -1)
    cv2.putText(scene, text, (x + pad, y - pad - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, fg, thick, cv2.LINE_AA)
    return w, h
