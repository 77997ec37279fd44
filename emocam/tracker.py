"""Keeps face identities across analysed frames (greedy IoU matching) and smooths their probabilities (EMA)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from emocam.types import Face


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of a (N,4) and b (M,4), x1y1x2y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class _Track:
    id: int
    face: Face
    last_seen: float
    hits: int = 1


class Tracker:
    """`alpha` is the weight of a new observation: 1 = no smoothing; 0.3 settles in ~5 analyses."""

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.0, alpha: float = 0.3, box_alpha: float = 0.6):
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.alpha = alpha
        self.box_alpha = box_alpha
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(self, faces: list[Face], now: float, detected: bool = True) -> list[Face]:
        """Match new detections (with probabilities) to tracks; return the smoothed faces with track ids.

        detected=False: `faces` are the tracks themselves, classified again on a frame the detector skipped
        (detect_interval > 1). They update the probabilities but are no sighting: a face that left the frame
        still ages out after max_age_s, instead of confirming itself forever."""
        boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        track_boxes = np.array([t.face.box for t in self._tracks], np.float32).reshape(-1, 4)
        iou = iou_matrix(track_boxes, boxes)
        matched_tracks: dict[int, int] = {}
        # Greedy on IoU, best pairs first: enough for a handful of faces and stable in practice.
        for flat in np.argsort(-iou, axis=None):
            ti, fi = divmod(int(flat), iou.shape[1])
            if iou[ti, fi] < self.iou_threshold:
                break
            if ti in matched_tracks or fi in matched_tracks.values():
                continue
            matched_tracks[ti] = fi
        for ti, fi in matched_tracks.items():
            track = self._tracks[ti]
            track.face = self._blend(track.face, faces[fi])
            if detected:
                track.last_seen = now
                track.hits += 1
        for fi, face in enumerate(faces):
            if detected and fi not in matched_tracks.values():
                self._tracks.append(_Track(self._next_id, replace(face, track_id=self._next_id), now))
                self._next_id += 1
        # A face the detector missed briefly stays (its last state) so overlays do not flicker.
        self._tracks = [t for t in self._tracks if now - t.last_seen <= self.max_age_s]
        return self.active

    def _blend(self, old: Face, new: Face) -> Face:
        box = (self.box_alpha * new.box + (1 - self.box_alpha) * old.box).astype(np.float32)
        probs = new.probs
        if old.probs is not None and new.probs is not None:
            probs = (self.alpha * new.probs + (1 - self.alpha) * old.probs).astype(np.float32)
        return replace(new, box=box, probs=probs, track_id=old.track_id)

    @property
    def active(self) -> list[Face]:
        return sorted((t.face for t in self._tracks), key=lambda f: f.track_id)
