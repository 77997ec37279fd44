"""Cutting a face patch out of the full-resolution frame, and an eye-aligned copy of it."""

from __future__ import annotations

import math

import cv2
import numpy as np

# Where the aligned copy puts the eyes: their midpoint at (0.5, EYE_Y) of the side, EYE_DISTANCE of it apart.
EYE_Y, EYE_DISTANCE = 0.38, 0.36


def margin_rect(box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The box grown by `margin` of its size on each side, in whole pixels, clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    left, top = max(0, math.floor(x1 - dx)), max(0, math.floor(y1 - dy))
    right, bottom = min(width, math.ceil(x2 + dx)), min(height, math.ceil(y2 + dy))
    return left, top, max(left, right), max(top, bottom)


def aligned_copy(patch: np.ndarray, landmarks_in_patch: np.ndarray, size: int) -> np.ndarray:
    """Rotate and scale so the eyes (landmarks 0 and 1) lie level at fixed places of a size x size image."""
    left, right = np.asarray(landmarks_in_patch[0], float), np.asarray(landmarks_in_patch[1], float)
    dx, dy = right - left
    distance = max(math.hypot(dx, dy), 1e-3)
    center = (left + right) / 2
    m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), math.degrees(math.atan2(dy, dx)),
                                EYE_DISTANCE * size / distance)
    m[:, 2] += (0.5 * size - center[0], EYE_Y * size - center[1])
    return cv2.warpAffine(patch, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
