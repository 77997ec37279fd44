from __future__ import annotations

import time

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emocam.explain.maps import FaceMaps, class_index, colorize_u8, layer_index
from emocam.explain.overlay import ClassChoice, Colormap, render_key
from emocam.render import ANNOTATORS
from emocam.render.base import NO_INFO, Annotator, RenderInfo, placement
from emocam.types import Analysis


@ANNOTATORS.register("heatmap")
class HeatmapAnnotator(Annotator):
    """Each face's map of the chosen layer and class, over the frame region the model's input covers (fer's crop
    window, larger than the box). Layer and class: info.selection ("layer" index, "class" name) over the preset's.

    The map is upsampled (bicubic) and colourised once per analysis; every frame only blends the cached layers.
    Put it before boxes and labels so they stay on top.
    """

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        layer: int | str = -1  # index (negative: from the class layer back) or module name
        class_: ClassChoice = Field("predicted", alias="class")
        colormap: Colormap = "jet"
        alpha: float = Field(0.55, ge=0, le=1)  # opacity where the map is strongest
        weighted: bool = True  # opacity follows the map (weak regions stay clear); false: uniform alpha
        min_value: float = Field(0.0, ge=0, lt=1)  # map values up to this stay fully transparent

    def __init__(self, options: BaseModel | None = None):
        super().__init__(options)
        self._key = None
        self._layers: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # x, y, premultiplied colour, 1 - alpha
        self.compute_ms = 0.0  # the last per-analysis preparation, for benchmarks

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        key = render_key(analysis, scene, info.selection)
        if key != self._key:
            started = time.perf_counter()
            self._layers = self._prepare(scene.shape, analysis, info.selection)
            self._key = key
            self.compute_ms = 1000 * (time.perf_counter() - started)
        for x, y, premultiplied, inverse in self._layers:
            h, w = inverse.shape[:2]
            roi = scene[y:y + h, x:x + w]
            cv2.multiply(roi, inverse, dst=roi, scale=1 / 255)
            cv2.add(roi, premultiplied, dst=roi)
        return scene

    def _prepare(self, shape, analysis: Analysis, selection: dict) -> list:
        o = self.options
        H, W = shape[:2]
        to_px = placement(analysis.size, (W, H))  # analysis -> scene pixels
        out = []
        for face in analysis.faces:
            fm = face.explanation
            if not isinstance(fm, FaceMaps):
                continue
            layer = layer_index(fm, selection.get("layer"), o.layer)
            m = fm.map(layer, class_index(face, selection.get("class"), o.class_))
            x1, y1, x2, y2 = (int(v) for v in to_px(fm.window).round())
            vx1, vy1, vx2, vy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
            if vx2 - vx1 < 2 or vy2 - vy1 < 2:
                continue
            # All in uint8 with OpenCV: a 1080p face window is ~0.3 Mpx and this runs on the publish thread.
            # Bicubic on the 8-bit map saturates at 0 and 255 by itself (no overshoot to clip).
            small = (m * 255.0 + 0.5).astype(np.uint8)
            heat = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_CUBIC)
            heat = np.ascontiguousarray(heat[vy1 - y1:vy2 - y1, vx1 - x1:vx2 - x1])
            color = colorize_u8(heat, o.colormap)
            floor = round(255 * o.min_value)
            if o.weighted:  # alpha * (v - floor) / (1 - floor): saturating uint8 ops, 0 below the floor
                a = cv2.convertScaleAbs(cv2.subtract(heat, floor), alpha=o.alpha / (1 - o.min_value))
            else:
                a = np.where(heat > floor, np.uint8(round(255 * o.alpha)), np.uint8(0))
            a = cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
            premultiplied = cv2.multiply(color, a, scale=1 / 255)
            inverse = cv2.bitwise_not(a)
            out.append((vx1, vy1, premultiplied, inverse))
        return out
