"""Reading the shared test videos the way the live path sees them."""

from __future__ import annotations

import cv2


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
