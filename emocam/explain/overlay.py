"""What the explain annotators (render/heatmap.py, layer_strip.py, class_strip.py, histograms.py) share: which
face, layer and class to show, inset placement, thumbnails and text. Drawing styles live in the annotators."""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emocam.explain.maps import COLORMAPS, FaceMaps, colorize, upsample
from emocam.types import Analysis, Face

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]
ClassChoice = Literal["predicted", "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
Colormap = Literal[COLORMAPS]  # type: ignore[valid-type]
FONT = cv2.FONT_HERSHEY_SIMPLEX
PANEL_BG = 24  # gray level of inset panels (a scalar fill is a fast memset)
TEXT = (235, 235, 235)


class InsetOptions(BaseModel):
    """Where an inset sits: a corner of the frame, moved by `offset` (x, y) pixels at 720p towards the middle.
    `refresh_hz`: how often a new analysis redraws it (analyses come at up to ~30 Hz; the eye does not need that
    in a side panel, and each redraw costs the publish thread ~1 ms)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    corner: Corner = "top-left"
    offset: tuple[int, int] = (0, 0)
    refresh_hz: float = Field(10.0, gt=0)


class InsetCache:
    """An inset drawn for one analysis, pasted on every frame until a redraw is due: at most `refresh_hz` times a
    second of analysis time, but at once when the scene size or the selection changes or the face is gone."""

    def __init__(self, refresh_hz: float):
        self.period = 1.0 / refresh_hz
        self.inset: np.ndarray | None = None
        self._key: tuple | None = None
        self._layout: tuple | None = None
        self._drawn_at = 0.0

    def due(self, analysis: Analysis, scene: np.ndarray, selection: dict[str, Any], face: Face | None) -> bool:
        key = render_key(analysis, scene, selection)
        if key == self._key:
            return False
        layout = key[2:]
        recent = 0 <= analysis.timestamp - self._drawn_at < self.period
        if self.inset is not None and face is not None and layout == self._layout and recent:
            return False
        self._key, self._layout, self._drawn_at = key, layout, analysis.timestamp
        return True


def explained_face(analysis: Analysis, selection: dict[str, Any]) -> Face | None:
    """The face whose maps an inset shows: the tracked face selection["track"] names, else the largest."""
    faces = [f for f in analysis.faces if isinstance(f.explanation, FaceMaps)]
    if not faces:
        return None
    wanted = selection.get("track")
    for face in faces:
        if wanted is not None and face.track_id == wanted:
            return face
    return max(faces, key=lambda f: f.width * f.height)


def render_key(analysis: Analysis, scene: np.ndarray, selection: dict[str, Any]) -> tuple:
    """Insets are drawn once per analysis (and size, and selection), then only pasted on every frame."""
    return (analysis.frame_index, analysis.timestamp, scene.shape, tuple(sorted(selection.items(), key=str)))


def paste(scene: np.ndarray, inset: np.ndarray, options: InsetOptions, s: float) -> None:
    H, W = scene.shape[:2]
    h, w = min(inset.shape[0], H), min(inset.shape[1], W)
    margin = round(10 * s)
    dx, dy = round(options.offset[0] * s), round(options.offset[1] * s)
    x = margin + dx if options.corner.endswith("left") else W - w - margin - dx
    y = margin + dy if options.corner.startswith("top") else H - h - margin - dy
    x, y = int(np.clip(x, 0, W - w)), int(np.clip(y, 0, H - h))
    scene[y:y + h, x:x + w] = inset[:h, :w]


def thumbnail(fm: FaceMaps, map_lowres: np.ndarray, side: int, colormap: str, alpha: float) -> np.ndarray:
    """side x side BGR: the model's input picture in gray under the colourised map (opacity grows with the map)."""
    heat = upsample(map_lowres, (side, side))
    color = colorize(heat, colormap)
    if fm.crop is None:
        return color
    gray = cv2.cvtColor(cv2.resize(fm.crop, (side, side), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
    a = cv2.cvtColor(alpha * (0.35 + 0.65 * heat), cv2.COLOR_GRAY2BGR)
    return cv2.convertScaleAbs(gray * (1 - a) + color * a)


def text(img: np.ndarray, s: str, org: tuple[int, int], scale: float, color=TEXT, size: float = 0.45) -> None:
    cv2.putText(img, s, org, FONT, size * scale, color, max(1, round(scale)), cv2.LINE_AA)


def text_width(s: str, scale: float, size: float = 0.45) -> int:
    return cv2.getTextSize(s, FONT, size * scale, max(1, round(scale)))[0][0]


def fit_text(s: str, width: int, scale: float, size: float = 0.45) -> str:
    """Shortened with '..' until it fits `width` pixels."""
    while len(s) > 2 and text_width(s, scale, size) > width:
        s = s[:-3] + ".."
    return s

