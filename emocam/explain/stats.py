"""Numbers per map for analysing a recording later: level, peak, dominant share, centroid and how much of the
map's energy falls on the eyes, the nose and the mouth (regions built from the detector's five landmarks)."""

from __future__ import annotations

import numpy as np

GRID = 64  # maps are compared on a GRID x GRID raster of the crop window (mini-XCEPTION's own input size)
REGIONS = ("eyes", "nose", "mouth")
# Region sizes as fractions of the distance between the eyes.
EYE_RADIUS, NOSE_RADIUS, MOUTH_EXTRA, MOUTH_HALF_HEIGHT = 0.3, 0.25, 0.15, 0.2


def region_masks(landmarks: np.ndarray | None, window: tuple[int, int, int, int],
                 grid: int = GRID) -> np.ndarray | None:
    """(3, grid, grid) float32 masks of eyes, nose and mouth on the window's raster; None without landmarks.

    landmarks (5, 2) in frame pixels: left eye, right eye, nose, left and right mouth corner. Eyes and nose are
    discs; the mouth is an ellipse along the line of its corners, a little wider than they are apart.
    """
    if landmarks is None or len(landmarks) < 5:
        return None
    x1, y1, x2, y2 = window
    # Work in frame pixels on the raster's cell centres, so radii stay round whatever the window's aspect.
    xs = x1 + (np.arange(grid, dtype=np.float32) + 0.5) * ((x2 - x1) / grid)
    ys = y1 + (np.arange(grid, dtype=np.float32) + 0.5) * ((y2 - y1) / grid)
    gx, gy = np.meshgrid(xs, ys)
    lm = np.asarray(landmarks, np.float32)
    d = max(float(np.linalg.norm(lm[1] - lm[0])), 1.0)

    def disc(p, r):
        return (gx - p[0]) ** 2 + (gy - p[1]) ** 2 <= r * r

    eyes = disc(lm[0], EYE_RADIUS * d) | disc(lm[1], EYE_RADIUS * d)
    nose = disc(lm[2], NOSE_RADIUS * d)
    centre, along = (lm[3] + lm[4]) / 2, lm[4] - lm[3]
    half_width = float(np.linalg.norm(along)) / 2 + MOUTH_EXTRA * d
    angle = float(np.arctan2(along[1], along[0]))
    c, s = np.cos(angle), np.sin(angle)
    u = (gx - centre[0]) * c + (gy - centre[1]) * s
    v = -(gx - centre[0]) * s + (gy - centre[1]) * c
    mouth = (u / half_width) ** 2 + (v / (MOUTH_HALF_HEIGHT * d)) ** 2 <= 1
    return np.stack([eyes, nose, mouth]).astype(np.float32)


def map_stats(maps: np.ndarray, window: tuple[int, int, int, int], masks: np.ndarray | None, threshold: float,
              which: tuple[str, ...]) -> list[list]:
    """One row per map of a (C, grid, grid) stack in [0, 1], values in the order of `which` ("centroid" adds x
    and y in frame pixels, "regions" the shares of eyes, nose and mouth). Rounded for the log; None where a number
    does not exist (an all-zero map has no centroid; no landmarks, no regions)."""
    c, gh, gw = maps.shape
    flat = maps.reshape(c, -1)
    total = flat.sum(axis=1)
    columns: list[np.ndarray] = []
    digits: list[int] = []
    for stat in which:
        if stat == "mean":
            columns.append(flat.mean(axis=1)); digits.append(3)
        elif stat == "max":
            columns.append(flat.max(axis=1)); digits.append(3)
        elif stat == "above":
            columns.append((flat > threshold).mean(axis=1)); digits.append(3)
        elif stat == "centroid":
            x1, y1, x2, y2 = window
            with np.errstate(invalid="ignore", divide="ignore"):
                cx = (maps.sum(axis=1) @ (np.arange(gw) + 0.5)) / total
                cy = (maps.sum(axis=2) @ (np.arange(gh) + 0.5)) / total
            columns += [x1 + cx * (x2 - x1) / gw, y1 + cy * (y2 - y1) / gh]; digits += [1, 1]
        elif stat == "regions":
            if masks is None:
                shares = np.full((c, len(REGIONS)), np.nan)
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    shares = (flat @ masks.reshape(len(REGIONS), -1).T) / total[:, None]
            columns += list(shares.T); digits += [3] * len(REGIONS)
    table = np.stack(columns, axis=1) if columns else np.zeros((c, 0))
    return [[None if not np.isfinite(v) else round(float(v), n) for v, n in zip(row, digits)] for row in table]


def stat_keys(which: tuple[str, ...]) -> list[str]:
    keys: list[str] = []
    for stat in which:
        keys += ["cx", "cy"] if stat == "centroid" else list(REGIONS) if stat == "regions" else [stat]
    return keys
