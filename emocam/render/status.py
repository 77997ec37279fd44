from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict
from typing import Literal

from emocam.render import ANNOTATORS
from emocam.render.base import NO_INFO, Annotator, RenderInfo, label_size, put_label, ui_scale
from emocam.types import Analysis


@ANNOTATORS.register("status")
class StatusAnnotator(Annotator):
    """One line with the pipeline's health: fps in/out, inference rate, capture-to-publish latency, preset."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        corner: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "bottom-left"

    def annotate(self, scene: np.ndarray, analysis: Analysis, info: RenderInfo = NO_INFO) -> np.ndarray:
        st = info.stats
        text = (f"in {st.get('fps_in', 0):.1f} fps  out {st.get('fps_out', 0):.1f} fps  "
                f"infer {st.get('inference_hz', 0):.1f} Hz  latency {st.get('latency_ms', 0):.0f} ms  "
                f"faces {len(analysis.faces)}  [{info.preset}]")
        s = ui_scale(scene)
        margin = round(8 * s)
        corner = self.options.corner
        # Measure first (drawn off-frame would be clipped), then place in the chosen corner.
        w, h = label_size(text, s)
        x = margin if corner.endswith("left") else scene.shape[1] - w - margin
        y = h + margin if corner.startswith("top") else scene.shape[0] - margin
        put_label(scene, text, (x, y), (32, 32, 32), (255, 255, 255), s)
        return scene
