from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emocam.render import ANNOTATORS
from emocam.render.base import NO_INFO, Annotator, RenderInfo, to_scene, ui_scale
from emocam.render.colors import face_color
from emocam.types import Analysis


@ANNOTATORS.register("boxes")
class BoxAnnotator(Annotator):
    """A rectangle around each face in its emotion's colour, optionally with the five landmarks."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        thickness: float = Field(2.0, gt=0)
        landmarks: bool = False

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        to_px = to_scene(analysis, scene)
        s = ui_scale(scene)
        thick = max(1, round(self.options.thickness * s))
        for face in analysis.faces:
            color = face_color(face)
            x1, y1, x2, y2 = to_px(face.box).round().astype(int)
            cv2.rectangle(scene, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
            if self.options.landmarks and face.landmarks is not None:
                for x, y in to_px(face.landmarks).round().astype(int):
                    cv2.circle(scene, (int(x), int(y)), max(2, thick), color, -1, cv2.LINE_AA)
        return scene
