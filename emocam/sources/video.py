"""A video file as a frame source: paced like a live camera or as fast as it decodes, optionally looped,
resized, and with a USB camera's MJPG decode cost emulated (see shared/notes/video-io.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from emocam.sources import SOURCES
from emocam.sources.base import Frame, Source, SourceInfo, SourceUnavailable


class RealtimeClock:
    """Frame n of a stream is due at start + n / fps; the schedule starts with the first frame asked for."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.start: float | None = None

    def wait_or_skip(self, position: int) -> int:
        """Sleep until frame `position` is due and return it. A caller already past the next frame's due time
        gets the position due now instead, and drops the frames in between: it never bursts to catch up."""
        now = time.monotonic()
        if self.start is None:
            self.start = now - position * self.period
            return position
        due = self.start + position * self.period
        if now < due:
            time.sleep(due - now)
            return position
        return max(position, int((now - self.start) / self.period))

    def settle(self, position: int) -> None:
        """After delivering frame `position`: when even the next frame is overdue, skipping did not catch up (on
        a file that decodes slower than it plays, stepping over a frame costs as much as showing it), so the
        schedule moves to make the next frame due now: the file plays as fast as it decodes. Otherwise every read
        would be later than the last and skip more frames."""
        now = time.monotonic()
        if self.start is not None and now > self.start + (position + 1) * self.period:
            self.start = now - (position + 1) * self.period

    def wait(self, position: int) -> None:
        """For a stream whose every frame must be shown: when late, move the schedule instead of skipping."""
        if self.wait_or_skip(position) != position:
            self.start = time.monotonic() - position * self.period


def output_size(width: int, height: int, want_width: int | None, want_height: int | None) -> tuple[int, int]:
    """The delivered size: as asked, or with one side given, the other following the aspect ratio (even)."""
    if want_width and want_height:
        return want_width, want_height
    if want_width:
        return want_width, max(2, round(height * want_width / width / 2) * 2)
    if want_height:
        return max(2, round(width * want_height / height / 2) * 2), want_height
    return width, height


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def file_fps(cap: cv2.VideoCapture, what: str) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    if 0 < fps <= 1000:
        return float(fps)
    logger.warning(f"{what}: no usable frame rate in the stream ({fps}); assuming 30 fps")
    return 30.0


class VideoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="Video file to play (mp4, mov, mkv, avi, ...).")
    pacing: Literal["realtime", "fast"] = Field(
        "realtime",
        description='"realtime": each frame when it is due, dropping frames when the reader falls behind; '
        '"fast": as fast as frames decode.',
    )
    fps: float | None = Field(None, gt=0, le=1000, description="Play at this rate instead of the file's own.")
    loop: bool = Field(False, description="Start again at the end instead of stopping; frame indices keep growing.")
    width: int | None = Field(
        None, ge=16, le=8192, description="Resize frames to this width (INTER_LINEAR); alone, height keeps the aspect."
    )
    height: int | None = Field(
        None, ge=16, le=8192, description="Resize frames to this height; alone, width keeps the aspect."
    )
    mjpeg_emulation: bool = Field(
        False,
        description="JPEG-encode every frame once when opening and decode one per read: what a USB camera's "
        "MJPG stream costs the capture thread.",
    )
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality of mjpeg_emulation (cameras use 80-90).")
    mjpeg_cache_mb: int = Field(
        1024, ge=16, description="Memory mjpeg_emulation may hold for the encoded frames; a longer video is refused."
    )


@SOURCES.register("video")
class VideoSource(Source):
    Options = VideoOptions
    options: VideoOptions

    def __init__(self, options: VideoOptions | None = None):
        super().__init__(options)
        self._cap: cv2.VideoCapture | None = None
        self._jpegs: list[np.ndarray] | None = None  # mjpeg_emulation: the whole file, encoded once
        self._pending: np.ndarray | None = None  # the frame open() decoded to check the file
        self._clock: RealtimeClock | None = None
        self._size = (0, 0)
        self._index = 0  # frames delivered
        self._position = 0  # frames consumed (delivered + dropped), growing across loops
        self._file_pos = 0  # position within the file of the next frame
        self._ended = False
        self.dropped = 0  # frames skipped because the reader fell behind the realtime schedule

    def open(self) -> SourceInfo:
        self.close()
        opts = self.options
        if opts.path is None:
            raise SourceUnavailable("source.video.path is not set: give the video file to play")
        path = Path(opts.path).expanduser()
        if not path.is_file():
            raise SourceUnavailable(f"{path}: no such video file")
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            raise SourceUnavailable(f"{path}: not a readable video (corrupt, empty, or a format FFmpeg cannot decode)")
        fps = opts.fps or file_fps(cap, str(path))
        src_size = (first.shape[1], first.shape[0])
        self._size = output_size(*src_size, opts.width, opts.height)
        self._cap, self._pending = cap, first
        self._index = self._position = self._file_pos = 0
        self._ended = False
        self.dropped = 0
        if opts.mjpeg_emulation:
            self._jpegs = self._encode_all(path)
            self._cap.release()
            self._cap = None
        self._clock = RealtimeClock(fps) if opts.pacing == "realtime" else None

        notes = [opts.pacing] + (["loop"] if opts.loop else [])
        if self._size != src_size:
            notes.append(f"resized from {src_size[0]}x{src_size[1]}")
        if opts.mjpeg_emulation:
            notes.append(f"MJPG emulation q{opts.jpeg_quality}")
        description = f"{path} {self._size[0]}x{self._size[1]} @ {fps:.3g} ({', '.join(notes)})"
        logger.info(f"video {description}")
        return SourceInfo(width=self._size[0], height=self._size[1], fps=fps, description=description)

    def _encode_all(self, path: Path) -> list[np.ndarray]:
        started = time.monotonic()
        limit = self.options.mjpeg_cache_mb * 1024 * 1024
        params = [cv2.IMWRITE_JPEG_QUALITY, self.options.jpeg_quality]
        jpegs, total = [], 0
        while (image := self._decode_next()) is not None:
            ok, data = cv2.imencode(".jpg", image, params)
            if not ok:
                raise SourceUnavailable(f"{path}: JPEG encoding failed for frame {len(jpegs)}")
            jpegs.append(data)
            total += data.nbytes
            if total > limit:
                self.close()
                raise SourceUnavailable(
                    f"{path}: too long for mjpeg_emulation ({len(jpegs)} frames already take more than "
                    f"{self.options.mjpeg_cache_mb} MB): use a shorter clip or raise mjpeg_cache_mb"
                )
        self._file_pos = 0
        # Decode cost grows with JPEG size: an upscaled small video makes smaller JPEGs than a real sensor's
        # 1080p (roughly 200-500 KB), so say what this emulation measures.
        logger.info(
            f"mjpeg_emulation: encoded {len(jpegs)} frames, {total / max(1, len(jpegs)) / 1024:.0f} KB each, "
            f"in {time.monotonic() - started:.1f} s"
        )
        return jpegs

    def _decode_next(self) -> np.ndarray | None:
        """The next frame of the file, resized; None at its end."""
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._cap.read()
            if not ok:
                return None
        self._file_pos += 1
        return resize_to(image, self._size)

    def _grab_next(self) -> bool:
        """Step over the next frame of the file without converting or resizing it."""
        if self._pending is not None:
            self._pending = None
        elif not self._cap.grab():
            return False
        self._file_pos += 1
        return True

    def _step(self, keep: bool) -> np.ndarray | bool | None:
        """Consume the next frame of the file: the image when `keep`, else True; None at its end."""
        if self._jpegs is None:
            return self._decode_next() if keep else (self._grab_next() or None)
        if self._file_pos >= len(self._jpegs):
            return None
        data = self._jpegs[self._file_pos]
        self._file_pos += 1
        return cv2.imdecode(data, cv2.IMREAD_COLOR) if keep else True

    def _advance(self, keep: bool) -> np.ndarray | bool | None:
        """Like _step, but starting the file again at its end when looping."""
        got = self._step(keep)
        if got is None and self.options.loop and self._file_pos > 0:
            self._file_pos = 0
            if self._cap is not None:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            got = self._step(keep)
        return got

    def read(self) -> Frame | None:
        if self._ended or (self._cap is None and self._jpegs is None):
            return None
        target = self._clock.wait_or_skip(self._position) if self._clock else self._position
        while self._position < target:
            if self._advance(keep=False) is None:
                return self._end()
            self._position += 1
            self.dropped += 1
        image = self._advance(keep=True)
        if image is None:
            return self._end()
        if self._clock:
            self._clock.settle(self._position)
        self._position += 1
        frame = Frame(image=image, index=self._index, timestamp=time.monotonic())
        self._index += 1
        return frame

    def _end(self) -> None:
        self._ended = True
        return None

    def close(self) -> None:
        if self.dropped and (self._cap is not None or self._jpegs is not None):
            logger.info(f"video: dropped {self.dropped} frames to keep up with realtime")
        if self._cap is not None:
            self._cap.release()
        self._cap = None
        self._jpegs = None
        self._pending = None
