"""Colour policy, kept apart from drawing: one BGR colour per emotion, readable on light and dark video."""

from __future__ import annotations

from emocam.types import EMOTIONS, Face

EMOTION_BGR: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220),
    "disgust": (40, 140, 40),
    "fear": (160, 60, 160),
    "happy": (0, 200, 255),
    "sad": (200, 120, 40),
    "surprise": (220, 220, 0),
    "neutral": (200, 200, 200),
}
UNKNOWN_BGR = (0, 255, 0)

assert set(EMOTION_BGR) == set(EMOTIONS)


def face_color(face: Face) -> tuple[int, int, int]:
    return EMOTION_BGR.get(face.label, UNKNOWN_BGR) if face.label else UNKNOWN_BGR


def text_color_on(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
