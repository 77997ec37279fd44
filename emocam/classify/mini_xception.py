"""fer's mini-XCEPTION (FER2013, 64x64 gray) with fer's own crop and normalisation, so results match fer."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from emocam.classify import CLASSIFIERS
from emocam.classify.base import Classifier
from emocam.nets.mini_xception import INPUT_SIZE, load_mini_xception
from emocam.types import Face

WEIGHTS = "mini_xception"
FER_PADDING = 40  # fer pads the whole gray frame by this much before cutting faces
FER_OFFSET = 10  # and widens every (squared) box by this much on each side


def fer_crop_window(box_xyxy: np.ndarray) -> tuple[int, int, int, int]:
    """fer's crop window (x1, y1, x2, y2) in frame pixels for a face box; it may reach outside the frame."""
    x, y = _round(box_xyxy[0]), _round(box_xyxy[1])
    w, h = _round(box_xyxy[2]) - x, _round(box_xyxy[3]) - y
    # fer's tosquare: grow the short side, shifting the box back by half the difference (floor division).
    if h > w:
        x -= (h - w) // 2
        w = h
    elif w > h:
        y -= (w - h) // 2
        h = w
    return x - FER_OFFSET, y - FER_OFFSET, x + w + FER_OFFSET, y + h + FER_OFFSET


def fer_clamped_window(box_xyxy: np.ndarray, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """fer's crop window clamped like fer's slicing of the padded frame: what the 64x64 input really shows."""
    height, width = frame_shape[:2]
    wx1, wy1, wx2, wy2 = fer_crop_window(box_xyxy)
    pad = FER_PADDING
    px1, py1 = min(max(wx1 + pad, 0), width + 2 * pad - 1), min(max(wy1 + pad, 0), height + 2 * pad - 1)
    px2, py2 = max(min(wx2 + pad, width + 2 * pad), px1 + 1), max(min(wy2 + pad, height + 2 * pad), py1 + 1)
    return px1 - pad, py1 - pad, px2 - pad, py2 - pad


def _round(v: float) -> int:
    return math.floor(float(v) + 0.5)


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def fer_gray_crop(frame: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray:
    """The 64x64 uint8 gray face fer hands to its model, from a BGR (or gray) frame.

    fer pads the gray frame by 40 px with the mean of its last two rows, cuts the window (clamped at the padded
    image's edges) and resizes it. Only the window is converted to gray here, which gives the same pixels without
    converting and padding a whole 1080p frame per face.
    """
    height, width = frame.shape[:2]
    pad = FER_PADDING
    px1, py1, px2, py2 = (v + pad for v in fer_clamped_window(box_xyxy, (height, width)))
    # cv2.copyMakeBorder stores the float mean as uint8 with round-half-to-even, like np.rint.
    fill = np.uint8(np.clip(np.rint(cv2.mean(_gray(frame[height - 2:]))[0]), 0, 255))
    window = np.full((py2 - py1, px2 - px1), fill, np.uint8)
    fx1, fy1 = max(px1 - pad, 0), max(py1 - pad, 0)
    fx2, fy2 = min(px2 - pad, width), min(py2 - pad, height)
    if fx2 > fx1 and fy2 > fy1:
        window[fy1 + pad - py1:fy2 + pad - py1, fx1 + pad - px1:fx2 + pad - px1] = _gray(frame[fy1:fy2, fx1:fx2])
    return cv2.resize(window, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)


def normalise(gray_u8: np.ndarray) -> np.ndarray:
    """fer's input scaling, op for op in float32 so the result is bit-identical to fer's."""
    x = gray_u8.astype(np.float32)
    x = x / 255.0
    return (x - 0.5) * 2.0


@CLASSIFIERS.register("mini-xception")
class MiniXceptionClassifier(Classifier):
    """fer 25.10.3's Keras mini-XCEPTION in PyTorch; probabilities match Keras to ~1e-6."""

    cpu_graph_kind = "freeze"

    def __init__(self, options, device: torch.device, weights):
        super().__init__(options, device, weights)
        self.model = load_mini_xception(weights.state_dict(WEIGHTS), device)

    def crop(self, frame_bgr: np.ndarray, face: Face) -> np.ndarray:
        return fer_gray_crop(frame_bgr, face.box)

    def crop_window(self, face: Face, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        return fer_clamped_window(face.box, frame_shape)

    def preprocess(self, crops_bgr: list[np.ndarray]) -> torch.Tensor:
        batch = np.empty((len(crops_bgr), 1, INPUT_SIZE, INPUT_SIZE), np.float32)
        for i, crop in enumerate(crops_bgr):
            gray = _gray(crop)
            if gray.shape != (INPUT_SIZE, INPUT_SIZE):
                gray = cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
            batch[i, 0] = normalise(gray)
        return torch.from_numpy(batch)

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {WEIGHTS: self.weights.sha256(WEIGHTS)}
