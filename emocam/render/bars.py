from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emocam.render import ANNOTATORS
from emocam.render.base import NO_INFO, Annotator, RenderInfo, to_scene, ui_scale
from emocam.render.colors import EMOTION_BGR
from emocam.types import EMOTIONS, Analysis


@ANNOTATORS.register("bars")
class ProbabilityBarsAnnotator(Annotator):
    """Seven horizontal probability bars beside each face (right of it, or left when there is no room)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        width: int = Field(160, ge=40)  # bar length at 720p, scaled with the frame
        opacity: float = Field(0.6, ge=0, le=1)  # of the dark panel behind the bars

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        to_px = to_scene(analysis, scene)
        s = ui_scale(scene)
        row = max(10, round(18 * s))
        label_w = round(70 * s)
        bar_w = round(self.options.width * s)
        panel_w, panel_h = label_w + bar_w + round(12 * s), row * len(EMOTIONS) + round(8 * s)
        H, W = scene.shape[:2]
        for face in analysis.faces:
            if face.probs is None:
                continue
            x1, y1, x2, _ = to_px(face.box).round().astype(int)
            px = x2 + round(8 * s) if x2 + round(8 * s) + panel_w <= W else x1 - round(8 * s) - panel_w
            px = int(np.clip(px, 0, max(0, W - panel_w)))
            py = int(np.clip(y1, 0, max(0, H - panel_h)))
            roi = scene[py:py + panel_h, px:px + panel_w]
            roi[:] = (roi * (1 - self.options.opacity)).astype(np.uint8)
            font = 0.45 * s
            thick = max(1, round(s))
            for i, (name, p) in enumerate(zip(EMOTIONS, face.probs)):
                y = py + round(4 * s) + i * row
                cv2.putText(scene, name, (px + round(4 * s), y + row - round(5 * s)), cv2.FONT_HERSHEY_SIMPLEX,
                            font, (255, 255, 255), thick, cv2.LINE_AA)
                bx = px + label_w
                length = int(round(float(np.clip(p, 0, 1)) * bar_w))
                if length:
                    cv2.rectangle(scene, (bx, y + round(3 * s)), (bx + length, y + row - round(3 * s)),
                                  EMOTION_BGR[name], -1)
        return scene
