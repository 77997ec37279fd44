"""A local window showing the rendered frames. Pressing q or Esc (or closing the window) sets quit_requested.

OpenCV's Qt backend aborts the whole process when it cannot reach a display, so open() first checks the
environment and then opens a window in a throwaway subprocess; only when that works does this process touch HighGUI.
HighGUI windows belong to the thread that made them: call open(), write() and close() from the same thread.
"""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
from pydantic import BaseModel, ConfigDict, Field

from emocam.sinks import SINKS
from emocam.sinks.base import OutputFrame, Sink, SinkContext, SinkError

TITLE = "EmoCam preview"
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27: Esc
HEADLESS_HINT = ('run emocam from a desktop session (or `ssh -X`), or leave "preview" out of the sinks; '
                 "the virtual camera and the recorder do not need a display")
PROBE = "import cv2; cv2.namedWindow('emocam-probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
PROBE_TIMEOUT_S = 20


class PreviewOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: float = Field(1.0, gt=0, le=4, description="Window size relative to the rendered frames, e.g. 0.5.")


@SINKS.register("preview")
class PreviewSink(Sink):
    Options = PreviewOptions

    def __init__(self, options: PreviewOptions | None = None):
        super().__init__(options)
        self.quit_requested = False  # the pipeline polls this
        self.frames_shown = 0
        self._open = False

    def open(self, ctx: SinkContext) -> None:
        check_display()
        try:
            cv2.namedWindow(TITLE, cv2.WINDOW_AUTOSIZE)
        except cv2.error as e:
            raise SinkError(f"cannot open the preview window ({e}); {HEADLESS_HINT}") from None
        self._open = True

    def write(self, frame: OutputFrame) -> None:
        if not self._open:
            return
        image = frame.image
        scale = self.options.scale
        if scale != 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        try:
            cv2.imshow(TITLE, image)
            key = cv2.waitKey(1)  # also runs the window's event loop
            closed = cv2.getWindowProperty(TITLE, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error as e:
            raise SinkError(f"preview window failed: {e}") from None
        self.frames_shown += 1
        if (key & 0xFF) in QUIT_KEYS or closed:
            self.quit_requested = True

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(TITLE)
                cv2.waitKey(1)
            except cv2.error:
                pass  # the window was already gone

    def status(self) -> dict:
        return {"window": TITLE, "frames_shown": self.frames_shown, "quit_requested": self.quit_requested}


def check_display() -> None:
    """Raise SinkError, with what to do, when no window can be opened here."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise SinkError(f"no display for the preview window (DISPLAY and WAYLAND_DISPLAY are unset); {HEADLESS_HINT}")
    try:
        probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SinkError(f"the preview window did not open within {PROBE_TIMEOUT_S} s; {HEADLESS_HINT}") from None
    if probe.returncode != 0:
        lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
        reason = lines[0] if lines else f"exit status {probe.returncode}"
        where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "the desktop"
        raise SinkError(f"cannot open a window on {where} ({reason}); {HEADLESS_HINT}")
