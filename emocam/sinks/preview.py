"""A local window showing the rendered frames. Pressing q or Esc (or closing the window) asks the daemon to stop.

OpenCV's Qt backend aborts the whole process when it cannot reach a display, so open() first checks the
environment and then opens a window in a throwaway subprocess; only when that works does this process touch HighGUI.
HighGUI windows belong to the thread that made them, and Qt makes any other thread's call wait for that one: the
window lives on the sink's own thread, which shows the newest frame and runs the event loop. write() only hands the
frame over, so a slow or stuck window never holds up the virtual camera or the recorder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from emocam.mailbox import Mailbox
from emocam.sinks import SINKS
from emocam.sinks.base import OutputFrame, Sink, SinkContext, SinkError

TITLE = "EmoCam preview"
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27: Esc
HEADLESS_HINT = ('run emocam from a desktop session (or `ssh -X`), or leave "preview" out of the sinks; '
                 "the virtual camera and the recorder do not need a display")
PROBE = "import cv2; cv2.namedWindow('emocam-probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
PROBE_TIMEOUT_S = 20
EVENT_POLL_S = 0.02  # the window answers keys and repaints at least this often, frames or not


class PreviewOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: float = Field(1.0, gt=0, le=4, description="Window size relative to the rendered frames, e.g. 0.5.")


@SINKS.register("preview")
class PreviewSink(Sink):
    Options = PreviewOptions

    def __init__(self, options: PreviewOptions | None = None):
        super().__init__(options)
        self.quit_requested = False  # q, Esc or the window closed
        self.frames_shown = 0
        self._frames: Mailbox[np.ndarray] = Mailbox()
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._failure: str | None = None  # set by the window thread

    @property
    def stop_requested(self) -> bool:
        return self.quit_requested

    def open(self, ctx: SinkContext) -> None:
        check_display()
        self._frames, self._failure = Mailbox(), None
        self._opened.clear()
        self._thread = threading.Thread(target=self._window_loop, name="emocam-preview", daemon=True)
        self._thread.start()
        if not self._opened.wait(PROBE_TIMEOUT_S):
            self._failure = f"the preview window did not open within {PROBE_TIMEOUT_S} s; {HEADLESS_HINT}"
            self._frames.close()  # its thread ends by itself if the window ever opens
        if self._failure is not None:
            self._thread.join(1.0)
            self._thread = None
            raise SinkError(self._failure)

    def write(self, frame: OutputFrame) -> None:
        if self._thread is None:
            return
        if self._failure is not None:
            raise SinkError(self._failure)
        self._frames.put(frame.image)  # the window thread shows the newest; older ones are skipped

    def _window_loop(self) -> None:
        try:
            cv2.namedWindow(TITLE, cv2.WINDOW_AUTOSIZE)
        except cv2.error as e:
            self._failure = f"cannot open the preview window ({e}); {HEADLESS_HINT}"
            return
        finally:
            self._opened.set()
        version = 0
        try:
            while not self._frames.closed:
                image, version = self._frames.take(version, timeout=EVENT_POLL_S)
                if image is not None and not self.quit_requested:  # imshow would reopen a closed window
                    cv2.imshow(TITLE, self._scaled(image))
                    self.frames_shown += 1
                key = cv2.waitKey(1)  # runs the window's event loop
                if (key & 0xFF) in QUIT_KEYS or cv2.getWindowProperty(TITLE, cv2.WND_PROP_VISIBLE) < 1:
                    self.quit_requested = True
        except cv2.error as e:
            self._failure = f"preview window failed: {e}"
        finally:
            try:
                cv2.destroyWindow(TITLE)
                cv2.waitKey(1)
            except cv2.error:
                pass  # the window was already gone

    def _scaled(self, image: np.ndarray) -> np.ndarray:
        scale = self.options.scale
        if scale == 1.0:
            return image
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)

    def close(self) -> None:
        if self._thread is not None:
            self._frames.close()
            self._thread.join(5)
            self._thread = None

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
