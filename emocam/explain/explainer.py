"""Maps for every face on the analysis thread, from the same forward pass that classifies it."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import torch

from emocam.errors import ConfigError
from emocam.explain.hooks import explain_layers
from emocam.explain.maps import FaceMaps, upsample
from emocam.explain.modes import MODES
from emocam.explain.normalise import RunningRange, TrackSmoother
from emocam.explain.options import ExplainConfig
from emocam.explain.stats import GRID, map_stats, region_masks, stat_keys
from emocam.types import EMOTIONS, Face


class Explainer:
    """Wraps a classifier: classify() gives the faces their probabilities AND their maps in one pass (never a
    second forward pass), normalised on each layer's running scale with statistics for the log; smooth(), after
    the tracker assigned identities, averages each face's maps over time for display."""

    def __init__(self, classifier, options: ExplainConfig | None = None):
        self.classifier = classifier
        self.options = options or ExplainConfig()
        model = classifier.model
        layers = explain_layers(model)
        names = [name for name, _ in layers]
        unknown = [name for name in self.options.layers if name not in names]
        if unknown:
            raise ConfigError(f"explain.layers: {classifier.name} has no layer {unknown[0]!r} "
                              f"(layers: {', '.join(names)})")
        if self.options.layers:  # the class layer stays: `cam` and the class strip need it
            layers = [(n, m) for n, m in layers if n in self.options.layers or n == names[-1]]
        head = layers[-1][1]
        k = len(EMOTIONS)
        per_class_head = callable(getattr(model, "class_maps", None)) and getattr(head, "out_channels", 0) == k
        if self.options.mode == "cam" and not per_class_head:
            raise ConfigError(f"explain.mode = \"cam\" needs a classifier whose last conv gives one map per class; "
                              f"{classifier.name} has none: use \"activation\" or \"gradcam\"")
        self.layers = tuple(name for name, _ in layers)
        self.mode = MODES[self.options.mode](model, layers, k, per_class_head)
        self.range = RunningRange(self.options.low_percentile, self.options.high_percentile,
                                  self.options.range_update)
        self.smoother = TrackSmoother(self.options.smoothing)
        self._fresh: set[int] = set()

    # ---- live ------------------------------------------------------------------------------------------------
    def classify(self, frame_bgr: np.ndarray, faces: list[Face]) -> list[Face]:
        """What Classifier.classify does, plus each face's FaceMaps in Face.explanation."""
        crops = [self.classifier.crop(frame_bgr, f) for f in faces]
        windows = [self.classifier.crop_window(f, frame_bgr.shape) for f in faces]
        out = self.explain(crops, faces, windows)
        self._fresh = {id(f.explanation) for f in out}
        return out

    def smooth(self, faces: list[Face]) -> list[Face]:
        """Per tracked face, blend the maps classify() just made with that face's earlier ones."""
        out = []
        for face in faces:
            fm = face.explanation
            if fm is not None and id(fm) in self._fresh and face.track_id is not None:
                smoothed = self.smoother.smooth(face.track_id, dict(zip(fm.layers, fm.maps)))
                face = replace(face, explanation=replace(fm, maps=tuple(smoothed[n] for n in fm.layers)))
            out.append(face)
        self.smoother.keep_only({f.track_id for f in faces if f.track_id is not None})
        self._fresh = set()
        return out

    # ---- the work --------------------------------------------------------------------------------------------
    def forward(self, crops: list[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One pass of the configured mode: probabilities (N, 7) and raw maps per layer (N, C, h, w)."""
        x = self.classifier.preprocess(crops).to(self.classifier.device)
        with self.classifier.autocast():
            logits, maps = self.mode(x)
            if self.classifier.mirror:  # as predict_crops; outside mode()'s hooks, so the maps stay the face's own
                with torch.no_grad():
                    logits = (logits.float() + self.classifier.model(x.flip(3)).float()) / 2
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        return probs, {name: maps[name].cpu().numpy() for name in self.layers}

    def explain(self, crops: list[np.ndarray], faces: list[Face],
                windows: list[tuple[int, int, int, int]]) -> list[Face]:
        if not faces:
            return []
        probs, raw = self.forward(crops)
        scaled = {name: self.range.normalise(name, maps) for name, maps in raw.items()}
        out = []
        for i, face in enumerate(faces):
            maps = tuple(scaled[name][i] for name in self.layers)
            window = tuple(int(v) for v in windows[i])
            fm = FaceMaps(self.options.mode, self.layers, maps, window, _gray(crops[i]),
                          self.statistics(face.landmarks, probs[i], maps, window))
            out.append(replace(face.with_probs(probs[i]), explanation=fm))
        return out

    def statistics(self, landmarks, probs: np.ndarray, maps: tuple[np.ndarray, ...],
                   window: tuple[int, int, int, int]) -> dict:
        o = self.options
        which = tuple(o.log_stats)
        doc: dict = {"mode": o.mode}
        if not which:
            return doc
        masks = region_masks(landmarks, window) if "regions" in which else None
        predicted = int(np.argmax(probs))
        grids = []
        for stack in maps:
            if o.log_classes == "predicted" and stack.shape[0] > 1:
                stack = stack[predicted:predicted + 1]
            grids.append(upsample(stack, (GRID, GRID)))
        rows = map_stats(np.concatenate(grids), window, masks, o.threshold, which)  # all layers in one go
        layers, start = {}, 0
        for name, grid in zip(self.layers, grids):
            mine = rows[start:start + len(grid)]
            layers[name] = mine[0] if o.log_classes == "predicted" else mine
            start += len(grid)
        if o.log_classes == "predicted":
            doc["class"] = EMOTIONS[predicted]
        doc["keys"] = stat_keys(which)
        doc["layers"] = layers
        return doc

    def reset(self) -> None:
        """Forget running scales and tracks (offline: each image on its own scale)."""
        self.range.ranges.clear()
        self.smoother.keep_only(set())


def _gray(crop: np.ndarray) -> np.ndarray:
    return crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
