from __future__ import annotations

import time
from collections import deque

import cv2
import numpy as np
from pydantic import Field

from emocam.explain.maps import layer_index, short_name
from emocam.explain.overlay import (PANEL_BG, Corner, InsetCache, InsetOptions, explained_face, fit_text, paste,
                                    text)
from emocam.render import ANNOTATORS
from emocam.render.base import NO_INFO, Annotator, RenderInfo, ui_scale
from emocam.render.colors import EMOTION_BGR
from emocam.types import EMOTIONS, Analysis, Face


@ANNOTATORS.register("histograms")
class HistogramAnnotator(Annotator):
    """Per class, a live histogram of the chosen layer's map intensities (0..1 on the layer's running scale) of
    one face over the last `window_s` seconds, beside that class's probability bar. A layer without per-class maps
    is replaced by the class layer, as in the class strip. The histograms restart when the face or layer changes.

    Counts are added once per analysis (a running sum over a window of analyses); the panel is drawn once per
    analysis and pasted on every frame.
    """

    class Options(InsetOptions):
        corner: Corner = "top-right"
        width: int = Field(330, ge=160)  # panel width at 720p, scaled with the frame
        row: int = Field(26, ge=14)  # height of one class's row at 720p
        bins: int = Field(16, ge=4, le=64)
        window_s: float = Field(5.0, gt=0)
        layer: int | str = -1

    def __init__(self, options=None):
        super().__init__(options)
        self._cache = InsetCache(self.options.refresh_hz)
        self._source: tuple | None = None  # (track, layer name) the counts belong to
        self._seen: tuple | None = None  # the analysis last counted
        self._window: deque[tuple[float, np.ndarray]] = deque()
        self._sum = np.zeros((len(EMOTIONS), self.options.bins), np.float64)
        self.compute_ms = 0.0

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        s = ui_scale(scene)
        face = explained_face(analysis, info.selection)
        layer = -1
        if face is not None:
            layer = face.explanation.class_layer(layer_index(face.explanation, info.selection.get("layer"),
                                                             self.options.layer))
            if layer >= 0:
                self._count(analysis, face, layer)  # every analysis counts, drawn or not
        if self._cache.due(analysis, scene, info.selection, face if layer >= 0 else None):
            started = time.perf_counter()
            self._cache.inset = self._draw(face, layer, s) if layer >= 0 else None
            self.compute_ms = 1000 * (time.perf_counter() - started)
        if self._cache.inset is not None:
            paste(scene, self._cache.inset, self.options, s)
        return scene

    def _count(self, analysis: Analysis, face: Face, layer: int) -> None:
        fm = face.explanation
        source = (face.track_id, fm.layers[layer])
        if source != self._source:
            self._source, self._seen = source, None
            self._window.clear()
            self._sum[:] = 0
        seen = (analysis.frame_index, analysis.timestamp)
        if seen == self._seen:  # the same analysis again (the scene size or the selection changed)
            return
        self._seen = seen
        b = self.options.bins
        values = fm.maps[layer].reshape(len(EMOTIONS), -1)
        idx = np.minimum((values * b).astype(np.int64), b - 1) + (np.arange(len(EMOTIONS)) * b)[:, None]
        counts = np.bincount(idx.ravel(), minlength=len(EMOTIONS) * b).reshape(len(EMOTIONS), b)
        counts = counts / values.shape[1]  # each analysis weighs the same whatever the map's size
        now = analysis.timestamp
        self._window.append((now, counts))
        self._sum += counts
        while self._window and now - self._window[0][0] > self.options.window_s:
            self._sum -= self._window.popleft()[1]

    def _draw(self, face: Face, layer: int, s: float) -> np.ndarray:
        o, fm = self.options, face.explanation
        width, row = round(o.width * s), round(o.row * s)
        pad, title_h = max(3, round(5 * s)), round(22 * s)
        name_w, prob_w = round(66 * s), round(84 * s)
        hist_w = width - name_w - prob_w - 3 * pad
        inset = np.full((title_h + len(EMOTIONS) * row + pad, width, 3), PANEL_BG, np.uint8)
        title = f"intensity, last {o.window_s:g} s: {short_name(fm.layers[layer])}"
        text(inset, fit_text(title, width - 2 * pad, s), (pad, title_h - round(7 * s)), s)
        probs = face.probs if face.probs is not None else np.zeros(len(EMOTIONS), np.float32)
        predicted = int(np.argmax(probs))
        hists = self._sum  # each row is scaled to its own peak below: the shape is what matters
        step = hist_w / o.bins
        for c, name in enumerate(EMOTIONS):
            y0 = title_h + c * row
            color = EMOTION_BGR[name]
            if c == predicted:
                cv2.rectangle(inset, (0, y0), (width - 1, y0 + row - 1), (64, 64, 64), -1)
            text(inset, name, (pad, y0 + row - round(8 * s)), s, color)
            hx, base = name_w + pad, y0 + row - round(3 * s)
            cv2.line(inset, (hx, base), (hx + hist_w, base), (90, 90, 90), 1)
            peak = max(float(hists[c].max()), 1e-9)
            for i, v in enumerate(hists[c]):
                h = int(round(v / peak * (row - round(6 * s))))
                if h:
                    cv2.rectangle(inset, (hx + int(i * step), base - h), (hx + int((i + 1) * step) - 1, base),
                                  color, -1)
            px = hx + hist_w + pad
            bar_w = prob_w - round(34 * s)
            p = float(np.clip(probs[c], 0, 1))
            cv2.rectangle(inset, (px, y0 + round(6 * s)), (px + bar_w, base - round(2 * s)), (70, 70, 70), 1)
            if round(p * bar_w):
                cv2.rectangle(inset, (px, y0 + round(6 * s)), (px + round(p * bar_w), base - round(2 * s)), color, -1)
            text(inset, f"{p:.0%}", (px + bar_w + round(3 * s), y0 + row - round(8 * s)), s, size=0.4)
        return inset
