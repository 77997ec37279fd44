"""What one face's explanation holds, and the small operations every consumer of maps shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from emocam.types import EMOTIONS, Face


@dataclass(frozen=True, eq=False)
class FaceMaps:
    """Per layer (input to output) a (C, h, w) float32 map stack in [0, 1] on that layer's running scale;
    C = 1 (class-agnostic) or 7 (EMOTIONS order). All maps cover `window`, the frame region the model's input
    shows, in the analysed frame's pixels. `crop` is the model's input picture (uint8)."""

    mode: str
    layers: tuple[str, ...]
    maps: tuple[np.ndarray, ...]
    window: tuple[int, int, int, int]
    crop: np.ndarray | None = None
    stats: dict | None = None  # JSON-ready, rounded: what the session log gets

    def to_json(self) -> dict:
        return self.stats if self.stats is not None else {"mode": self.mode}

    def per_class(self, layer: int) -> bool:
        return self.maps[layer].shape[0] == len(EMOTIONS)

    def class_layer(self, layer: int) -> int:
        """`layer` if it has one map per class, else the nearest later layer that has (-1 when none has)."""
        for i in range(layer, len(self.maps)):
            if self.per_class(i):
                return i
        return -1

    def map(self, layer: int, class_index: int) -> np.ndarray:
        stack = self.maps[layer]
        return stack[class_index if stack.shape[0] > 1 else 0]


def layer_index(fm: FaceMaps, wanted: Any, default: int | str = -1) -> int:
    """A layer chosen by index (negative from the end; too large means the last) or by module name."""
    for choice in (wanted, default):
        if isinstance(choice, str) and choice in fm.layers:
            return fm.layers.index(choice)
        if isinstance(choice, int) and not isinstance(choice, bool):
            n = len(fm.layers)
            return min(choice, n - 1) if choice >= 0 else max(n + choice, 0)
    return len(fm.layers) - 1


def class_index(face: Face, wanted: Any, default: str = "predicted") -> int:
    """A class chosen by name or index; "predicted" (or nothing) is the face's most probable class."""
    for choice in (wanted, default):
        if isinstance(choice, str) and choice in EMOTIONS:
            return EMOTIONS.index(choice)
        if isinstance(choice, int) and not isinstance(choice, bool) and 0 <= choice < len(EMOTIONS):
            return choice
    return int(np.argmax(face.probs)) if face.probs is not None else EMOTIONS.index("neutral")


def upsample(maps: np.ndarray, size: tuple[int, int], clip: bool = True) -> np.ndarray:
    """Bicubic (OpenCV's, which equals torch's bicubic with align_corners=False) to size=(width, height), clipped
    back to [0, 1] (cubic overshoots) unless clip=False. A (C, h, w) stack comes back as (C, H, W), a (h, w) map
    as (H, W)."""
    w, h = size
    if maps.ndim == 2:
        out = cv2.resize(maps, (w, h), interpolation=cv2.INTER_CUBIC)
    else:  # OpenCV resizes at most 128 channels at once
        out = np.concatenate([_resize_stack(maps[i:i + 128], w, h) for i in range(0, len(maps), 128)])
    return np.clip(out, 0.0, 1.0) if clip else out


def _resize_stack(maps: np.ndarray, w: int, h: int) -> np.ndarray:
    out = cv2.resize(np.ascontiguousarray(maps.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, -1).transpose(2, 0, 1)  # OpenCV drops a single channel's axis


COLORMAPS = ("jet", "turbo", "inferno", "magma", "viridis", "plasma", "hot", "parula")


@lru_cache(maxsize=None)
def _lut(colormap: str) -> np.ndarray:
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.applyColorMap(ramp, getattr(cv2, f"COLORMAP_{colormap.upper()}")).reshape(256, 1, 3)


def colorize(map01: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 BGR. A cached lookup table: cv2.applyColorMap rebuilds its table on
    every call (~0.1 ms even for a thumbnail)."""
    return colorize_u8((map01 * 255.0 + 0.5).astype(np.uint8), colormap)


def colorize_u8(map_u8: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 BGR."""
    return cv2.LUT(cv2.cvtColor(map_u8, cv2.COLOR_GRAY2BGR), _lut(colormap))


_SHORT = ((r"^stem(\d+)\.conv$", r"conv\1"), (r"^block(\d+)\.sepconv(\d+)$", r"b\1 sep\2"),
          (r"^block(\d+)\.shortcut$", r"b\1 skip"), (r"^blocks\.(\d+)$", r"blk \1"), (r"^classifier$", "cls conv"))


def short_name(layer: str) -> str:
    """A label that fits under a thumbnail: block2.sepconv1 -> b2 sep1."""
    for pattern, repl in _SHORT:
        if re.match(pattern, layer):
            return re.sub(pattern, repl, layer)
    return layer.rsplit(".", 1)[-1] if len(layer) > 10 else layer
