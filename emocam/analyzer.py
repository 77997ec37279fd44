"""Detect on a downscaled copy, classify crops cut from the full-resolution frame."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from emocam.classify import Classifier
from emocam.detect import Detector
from emocam.types import Analysis, Face


class FrameAnalyzer:
    def __init__(self, detector: Detector, classifier: Classifier, max_side: int = 640):
        self.detector = detector
        self.classifier = classifier
        self.max_side = max_side

    def detect(self, frame_bgr: np.ndarray) -> list[Face]:
        h, w = frame_bgr.shape[:2]
        k = min(1.0, self.max_side / max(h, w))
        if k < 1.0:
            small = cv2.resize(frame_bgr, (round(w * k), round(h * k)), interpolation=cv2.INTER_LINEAR)
            faces = self.detector.detect(small)
            return [_rescale(f, 1.0 / k) for f in faces]
        return self.detector.detect(frame_bgr)

    def warm_up(self) -> None:
        """One pass over a blank frame before the stream starts, so that the first frames do not wait for the
        backends' lazy set-up (OpenCV's and torch's first calls: 0.1-0.5 s here, more on a busy machine)."""
        blank = np.zeros((360, 640, 3), np.uint8)
        self.detector.detect(blank)
        self.detector.reset()  # the blank frame is not the scene: a tracker must start over on the first real one
        self.classifier.predict_crops([blank[:64, :64]])

    def analyze(self, frame_bgr: np.ndarray, frame_index: int = 0, timestamp: float = 0.0) -> Analysis:
        faces = self.detect(frame_bgr)
        faces = self.classifier.classify(frame_bgr, faces) if faces else []
        h, w = frame_bgr.shape[:2]
        return Analysis(frame_index, timestamp, (w, h), tuple(faces))


def _rescale(face: Face, k: float) -> Face:
    landmarks = None if face.landmarks is None else (face.landmarks * k).astype(np.float32)
    return replace(face, box=(face.box * k).astype(np.float32), landmarks=landmarks)
