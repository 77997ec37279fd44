from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from emocam.render import ANNOTATORS
from emocam.render.base import NO_INFO, Annotator, RenderInfo, label_size, put_label, to_scene, ui_scale
from emocam.render.colors import face_color, text_color_on
from emocam.types import Analysis


@ANNOTATORS.register("labels")
class LabelAnnotator(Annotator):
    """The predicted emotion and its probability above each face (below it when the face touches the top)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        show_track_id: bool = True

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        to_px = to_scene(analysis, scene)
        s = ui_scale(scene)
        for face in analysis.faces:
            if face.probs is None:
                continue
            text = f"{face.label} {float(face.probs.max()):.0%}"
            if self.options.show_track_id and face.track_id is not None:
                text = f"#{face.track_id} {text}"
            x1, y1, _, y2 = to_px(face.box).round().astype(int)
            color = face_color(face)
            h = label_size(text, s)[1]
            # above the box, or just below it when there is no room above
            put_label(scene, text, (x1, y1 if y1 - h >= 0 else y2 + h), color, text_color_on(color), s)
        return scene
