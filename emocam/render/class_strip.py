from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from emocam.explain.maps import layer_index, short_name
from emocam.explain.overlay import PANEL_BG, Colormap, Corner, InsetOptions, fit_text, text, thumbnail
from emocam.render import ANNOTATORS
from emocam.render.colors import EMOTION_BGR
from emocam.render.inset import FaceInsetAnnotator
from emocam.types import EMOTIONS, Face


@ANNOTATORS.register("classes")
class ClassStripAnnotator(FaceInsetAnnotator):
    """An inset with one face's seven class maps of the chosen layer, each labelled with its probability; the
    predicted class is framed in its colour. A layer without per-class maps (an activation map) is replaced by the
    next layer that has them, the class layer; the title names the layer shown."""

    class Options(InsetOptions):
        corner: Corner = "bottom-right"
        tile: int = Field(64, ge=24)  # thumbnail side at 720p, scaled with the frame
        layer: int | str = -1
        alpha: float = Field(0.6, ge=0, le=1)
        colormap: Colormap = "jet"

    def _draw(self, face: Face, selection: dict, s: float) -> np.ndarray | None:
        o, fm = self.options, face.explanation
        layer = fm.class_layer(layer_index(fm, selection.get("layer"), o.layer))
        if layer < 0:
            return None
        probs = face.probs if face.probs is not None else np.zeros(len(EMOTIONS), np.float32)
        predicted = int(np.argmax(probs))
        side, pad = round(o.tile * s), max(3, round(5 * s))
        line, title_h = round(15 * s), round(22 * s)
        cell = side + pad
        inset = np.full((title_h + side + 2 * line + 2 * pad, len(EMOTIONS) * cell + pad, 3), PANEL_BG, np.uint8)
        who = f"#{face.track_id} " if face.track_id is not None else ""
        title = f"{who}class maps: {short_name(fm.layers[layer])} ({fm.mode})"
        text(inset, fit_text(title, inset.shape[1] - 2 * pad, s), (pad, title_h - round(7 * s)), s)
        thick = max(2, round(2 * s))
        for c, name in enumerate(EMOTIONS):
            x, y = pad + c * cell, title_h + pad
            inset[y:y + side, x:x + side] = thumbnail(fm, fm.map(layer, c), side, o.colormap, o.alpha)
            if c == predicted:
                d = thick // 2 + 1
                cv2.rectangle(inset, (x - d, y - d), (x + side + d - 1, y + side + d - 1), EMOTION_BGR[name], thick)
            y += side + round(2 * s)
            text(inset, fit_text(name, side + pad, s, 0.4), (x, y + line - round(3 * s)), s, EMOTION_BGR[name], 0.4)
            text(inset, f"{float(probs[c]):.0%}", (x, y + 2 * line - round(3 * s)), s, size=0.4)
        return inset
