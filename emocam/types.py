"""Data shared between stages. Faces are plain values; nothing here holds a model or a thread."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) float32 x1, y1, x2, y2 in frame pixels
    score: float
    landmarks: np.ndarray | None = None  # (5, 2) float32: eyes, nose, mouth corners
    probs: np.ndarray | None = None  # (7,) float32 in EMOTIONS order
    track_id: int | None = None
    extra: dict = field(default_factory=dict, compare=False)
    # emocam.explain.FaceMaps: per-layer maps of this face and their statistics (to_json() goes to the log)
    explanation: Any = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str | None:
        return None if self.probs is None else EMOTIONS[int(np.argmax(self.probs))]

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def with_probs(self, probs: np.ndarray) -> "Face":
        return replace(self, probs=np.asarray(probs, dtype=np.float32))

    def to_json(self) -> dict:
        out: dict = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": None if self.landmarks is None else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }
        if self.track_id is not None:
            out["track_id"] = self.track_id
        if self.probs is not None:
            out["label"] = self.label
            out["probabilities"] = {name: round(float(p), 6) for name, p in zip(EMOTIONS, self.probs)}
        if self.explanation is not None:
            out["explain"] = self.explanation.to_json()
        return out


@dataclass(frozen=True)
class Analysis:
    """Everything known about one analysed frame; the only thing the analysis and render stages share."""

    frame_index: int
    timestamp: float  # capture time, seconds (monotonic clock of the source)
    size: tuple[int, int]  # (width, height) of the frame the boxes refer to
    faces: tuple[Face, ...] = ()

    def to_json(self) -> dict:
        return {
            "frame": self.frame_index,
            "t": round(self.timestamp, 4),
            "size": list(self.size),
            "faces": [f.to_json() for f in self.faces],
        }
