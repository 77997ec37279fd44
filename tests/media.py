"""The shared test media as the live path sees them, and what a detector must find in them."""

from __future__ import annotations

import cv2
import numpy as np


def video_frames(path, size=(640, 360)):
    """Every frame of a video file, resized to the detection size."""
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    finally:
        capture.release()


def assert_the_astronauts_face(faces, min_score: float) -> None:
    """scikit-image's astronaut: one face, her face (not the flag or the suit), landmarks where a face has them."""
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert face.box.dtype == np.float32 and face.landmarks.shape == (5, 2) and face.score > min_score
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert np.all((face.landmarks >= (x1, y1)) & (face.landmarks <= (x2, y2)))
    assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)
