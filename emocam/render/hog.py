from __future__ import annotations

import time
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emocam.export.hog import hog_input, hog_kwargs, orientation_histogram
from emocam.export.options import HogOptions
from emocam.render import ANNOTATORS
from emocam.render.base import NO_INFO, Annotator, Placement, RenderInfo, to_scene, ui_scale
from emocam.render.colors import face_color
from emocam.types import Analysis, Face


@ANNOTATORS.register("hog")
class HogInsetAnnotator(Annotator):
    """An inset with the HOG of the main face (the track in the selection, else the largest face): scikit-image's
    cell-orientation picture and the orientation histogram, as the patch export computes them.

    The patch is cut from the scene itself, so put "hog" before annotators that draw on faces. The HOG is computed
    once per analysis on a small patch (about 3-4 ms at 64 px); the frames in between only paste the cached inset.
    """

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        corner: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "top-right"
        size: int = Field(150, ge=48)  # inset height at 720p, scaled with the frame
        patch: int = Field(64, ge=16, le=256)  # the face is resized to patch x patch before hog()
        orientations: int = Field(9, ge=2, le=36)
        pixels_per_cell: int = Field(8, ge=2)
        cells_per_block: int = Field(2, ge=1)

    def __init__(self, options: BaseModel | None = None):
        super().__init__(options)
        o = self.options
        self.hog = HogOptions(size=o.patch, orientations=o.orientations, pixels_per_cell=o.pixels_per_cell,
                              cells_per_block=o.cells_per_block)
        self._key = None
        self._inset: np.ndarray | None = None
        self.compute_ms = 0.0  # the last HOG computation and inset drawing, for benchmarks
        self._warm_up()

    def _warm_up(self) -> None:
        # The first hog() (imports) and the first cv2.putText (OpenCV 5 loads its font) cost 25-35 ms each:
        # pay that while presets load, not on the publish thread in the middle of the video.
        from skimage.feature import hog

        hog(np.zeros((self.hog.size,) * 2, np.uint8), visualize=True, **hog_kwargs(self.hog))
        cv2.putText(np.zeros((8, 8, 3), np.uint8), "0", (0, 7), cv2.FONT_HERSHEY_SIMPLEX, 0.2, (255, 255, 255))

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        face = main_face(analysis, info)
        if face is None:
            return scene
        key = (analysis.frame_index, face.track_id, scene.shape)
        if key != self._key:
            started = time.perf_counter()
            self._inset = self._draw_inset(scene, face, to_scene(analysis, scene), ui_scale(scene))
            self._key = key
            self.compute_ms = 1000 * (time.perf_counter() - started)
        if self._inset is not None:
            self._paste(scene, self._inset)
        return scene

    def _draw_inset(self, scene: np.ndarray, face: Face, to_px: Placement, s: float) -> np.ndarray | None:
        from skimage.feature import hog

        x1, y1, x2, y2 = to_px(face.box)
        # A little inside the box: an earlier annotator's box outline would show up as strong edges.
        dx, dy = 0.04 * (x2 - x1), 0.04 * (y2 - y1)
        H, W = scene.shape[:2]
        x1, y1 = int(max(0, x1 + dx)), int(max(0, y1 + dy))
        x2, y2 = int(min(W, x2 - dx)), int(min(H, y2 - dy))
        if x2 - x1 < 8 or y2 - y1 < 8:
            return None
        vector, picture = hog(hog_input(scene[y1:y2, x1:x2], self.hog), feature_vector=True, visualize=True,
                              **hog_kwargs(self.hog))
        hist = orientation_histogram(vector, self.hog)[0]

        side = max(48, round(self.options.size * s))
        pad = max(2, round(4 * s))
        top = max(1.0, float(np.percentile(picture, 99.5)))
        gray = np.clip(picture * (255.0 / top), 0, 255).astype(np.uint8)
        inset = np.full((side + 2 * pad, 2 * side + 3 * pad, 3), 24, np.uint8)
        inset[pad:pad + side, pad:pad + side] = cv2.cvtColor(
            cv2.resize(gray, (side, side), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
        self._histogram(inset[pad:pad + side, 2 * pad + side:2 * pad + 2 * side], hist, face_color(face), s)
        return inset

    @staticmethod
    def _histogram(area: np.ndarray, hist: np.ndarray, color: tuple[int, int, int], s: float) -> None:
        h, w = area.shape[:2]
        text_h = max(10, round(16 * s))
        font = 0.4 * s
        thick = max(1, round(s))
        cv2.putText(area, "HOG 0-180 deg", (0, text_h - 4), cv2.FONT_HERSHEY_SIMPLEX, font, (230, 230, 230), thick,
                    cv2.LINE_AA)
        n = len(hist)
        scale = (h - text_h - 2) / max(float(hist.max()), 1e-6)
        step = w / n
        for i, value in enumerate(hist):
            bar = int(round(value * scale))
            cv2.rectangle(area, (int(i * step) + 1, h - 1 - bar), (int((i + 1) * step) - 2, h - 1), color, -1)

    def _paste(self, scene: np.ndarray, inset: np.ndarray) -> None:
        H, W = scene.shape[:2]
        h, w = min(inset.shape[0], H), min(inset.shape[1], W)
        margin = round(10 * ui_scale(scene))
        corner = self.options.corner
        x = margin if corner.endswith("left") else W - w - margin
        y = margin if corner.startswith("top") else H - h - margin
        x, y = max(0, x), max(0, y)
        scene[y:y + h, x:x + w] = inset[:h, :w]


def main_face(analysis: Analysis, info: RenderInfo) -> Face | None:
    """The face the selection names by track (selection["track"]), else the largest one."""
    if not analysis.faces:
        return None
    wanted = info.selection.get("track")
    for face in analysis.faces:
        if wanted is not None and face.track_id == wanted:
            return face
    return max(analysis.faces, key=lambda f: f.width * f.height)
