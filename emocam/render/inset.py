"""The base of the face-map insets that redraw at most `refresh_hz` times a second and paste on every frame."""

from __future__ import annotations

import time

import numpy as np

from emocam.explain.overlay import InsetCache, explained_face, paste
from emocam.render.base import NO_INFO, Annotator, RenderInfo, ui_scale
from emocam.types import Analysis, Face


class FaceInsetAnnotator(Annotator):
    """Subclasses draw the inset for one face in `_draw(face, selection, scale)`; None draws nothing."""

    def __init__(self, options=None):
        super().__init__(options)
        self._cache = InsetCache(self.options.refresh_hz)
        self.compute_ms = 0.0  # the last redraw, for benchmarks

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        s = ui_scale(scene)
        face = explained_face(analysis, info.selection)
        if self._cache.due(analysis, scene, info.selection, face):
            started = time.perf_counter()
            self._cache.inset = None if face is None else self._draw(face, info.selection, s)
            self.compute_ms = 1000 * (time.perf_counter() - started)
        if self._cache.inset is not None:
            paste(scene, self._cache.inset, self.options, s)
        return scene

    def _draw(self, face: Face, selection: dict, s: float) -> np.ndarray | None:
        raise NotImplementedError
