from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from emocam.explain.maps import class_index, layer_index, short_name
from emocam.explain.overlay import PANEL_BG, ClassChoice, Colormap, Corner, InsetOptions, fit_text, text, thumbnail
from emocam.render import ANNOTATORS
from emocam.render.colors import EMOTION_BGR
from emocam.render.inset import FaceInsetAnnotator
from emocam.types import EMOTIONS, Face


@ANNOTATORS.register("layers")
class LayerStripAnnotator(FaceInsetAnnotator):
    """An inset with one face's maps for every explained layer, first conv to class layer, each over the model's
    input picture and labelled; the selected layer (info.selection "layer") is framed. The face: the tracked one
    info.selection "track" names, else the largest. Drawn once per analysis, pasted on every frame."""

    class Options(InsetOptions):
        corner: Corner = "top-left"
        tile: int = Field(60, ge=24)  # thumbnail side at 720p, scaled with the frame
        columns: int = Field(8, ge=1)
        class_: ClassChoice = Field("predicted", alias="class")
        alpha: float = Field(0.6, ge=0, le=1)
        colormap: Colormap = "jet"

    def _draw(self, face: Face, selection: dict, s: float) -> np.ndarray:
        o, fm = self.options, face.explanation
        n = len(fm.layers)
        cls = class_index(face, selection.get("class"), o.class_)
        chosen = layer_index(fm, selection.get("layer"), -1) if "layer" in selection else None
        side, pad = round(o.tile * s), max(2, round(4 * s))
        label_h, title_h = round(16 * s), round(22 * s)
        cols = min(o.columns, n)
        rows = -(-n // cols)
        cell_w, cell_h = side + pad, side + label_h + pad
        inset = np.full((title_h + rows * cell_h + pad, cols * cell_w + pad, 3), PANEL_BG, np.uint8)
        who = f"#{face.track_id} " if face.track_id is not None else ""
        title = fit_text(f"{who}layers: {EMOTIONS[cls]} ({fm.mode})", inset.shape[1] - 2 * pad, s)
        text(inset, title, (pad, title_h - round(7 * s)), s, EMOTION_BGR[EMOTIONS[cls]])
        for i, name in enumerate(fm.layers):
            r, c = divmod(i, cols)
            x, y = pad + c * cell_w, title_h + r * cell_h
            inset[y:y + side, x:x + side] = thumbnail(fm, fm.map(i, cls), side, o.colormap, o.alpha)
            if i == chosen:
                cv2.rectangle(inset, (x - 1, y - 1), (x + side, y + side), (255, 255, 255), max(1, round(s)))
            label = fit_text(short_name(name), side, s, 0.38)
            text(inset, label, (x, y + side + label_h - round(4 * s)), s, size=0.38)
        return inset
