"""A network stream (RTSP from an IP camera, HTTP MJPEG or video) read through OpenCV's FFmpeg backend.

A live stream paces itself, so frames are delivered as they arrive. When the stream stops (network drop,
camera reboot, end of a served file) read() raises SourceLost and the pipeline reconnects.
"""

from __future__ import annotations

import os
import re
import time
from typing import Literal
from urllib.parse import urlsplit

import cv2
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from emocam.sources import SOURCES
from emocam.sources.base import Frame, Source, SourceInfo, SourceLost, SourceUnavailable
from emocam.sources.video import file_fps, output_size, resize_to

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class UrlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field("", description="rtsp://, http:// or https:// address; a password in it never reaches the logs.")
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTSP over TCP survives lossy Wi-Fi; UDP has less latency but smears frames on loss."
    )
    open_timeout_s: float = Field(10.0, gt=0, description="Give up connecting after this long.")
    read_timeout_s: float = Field(5.0, gt=0, description="A stream silent for this long counts as lost.")
    width: int | None = Field(None, ge=16, le=8192, description="Resize frames to this width; alone, height follows.")
    height: int | None = Field(None, ge=16, le=8192, description="Resize frames to this height; alone, width follows.")


# scheme://user:password@ up to the LAST @: a password may hold '/', '#', '?' or '@', which urlsplit reads as the
# end of the host. A '@' later in the URL (a query's e-mail, say) hides more than the password: safe for a log.
_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:@/]*:)(.*)@")
_SECRET_PARAMETER = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|token|key|secret|auth|signature|sig)=)[^&;#]*")


def redact(url: str) -> str:
    """The URL with any password (in its user part or a query parameter) replaced by ***, for logs and messages."""
    url = _PASSWORD.sub(r"\1***@", url, count=1)
    return _SECRET_PARAMETER.sub(r"\1***", url)


@SOURCES.register("url")
class UrlSource(Source):
    Options = UrlOptions
    options: UrlOptions

    def __init__(self, options: UrlOptions | None = None):
        super().__init__(options)
        self._cap: cv2.VideoCapture | None = None
        self._size = (0, 0)
        self._where = redact(self.options.url)
        # Live sources keep counting across reconnects, so the pipeline never sees an index go backwards.
        self._index = 0

    def open(self) -> SourceInfo:
        self.close()
        opts = self.options
        if not opts.url:
            raise SourceUnavailable("source.url.url is not set: give an rtsp:// or http:// address")
        if urlsplit(opts.url).scheme.lower() not in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
            raise SourceUnavailable(
                f"{self._where}: not a stream address (rtsp:// or http://); for a file use source 'video'"
            )
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(opts.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(opts.read_timeout_s * 1000),
        ]  # fmt: skip
        cap = self._connect(params)
        # One frame proves the stream plays and tells its size; a live stream's reads then stay fresh.
        ok, image = cap.read() if cap.isOpened() else (False, None)
        if not ok or image is None:
            cap.release()
            raise SourceUnavailable(
                f"{self._where}: could not open the stream: check the address, that the camera or server is up "
                "and reachable from here, and the credentials"
            )
        fps = file_fps(cap, self._where)
        src_size = (image.shape[1], image.shape[0])
        self._size = output_size(*src_size, opts.width, opts.height)
        self._cap = cap
        resized = f" (resized from {src_size[0]}x{src_size[1]})" if self._size != src_size else ""
        description = f"{self._where} {self._size[0]}x{self._size[1]} @ {fps:.3g}{resized}"
        logger.info(f"stream {description}")
        return SourceInfo(width=self._size[0], height=self._size[1], fps=fps, description=description)

    def _connect(self, params: list[int]) -> cv2.VideoCapture:
        # FFmpeg options reach OpenCV only through this variable; set it for this open only, and never
        # override what the user exported.
        scheme = urlsplit(self.options.url).scheme.lower()
        if not scheme.startswith("rtsp") or FFMPEG_OPTIONS_ENV in os.environ:
            return cv2.VideoCapture(self.options.url, cv2.CAP_FFMPEG, params)
        os.environ[FFMPEG_OPTIONS_ENV] = f"rtsp_transport;{self.options.rtsp_transport}"
        try:
            return cv2.VideoCapture(self.options.url, cv2.CAP_FFMPEG, params)
        finally:
            del os.environ[FFMPEG_OPTIONS_ENV]

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceLost(f"{self._where}: stream is not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            raise SourceLost(f"{self._where}: the stream stopped delivering frames")
        frame = Frame(image=resize_to(image, self._size), index=self._index, timestamp=time.monotonic())
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
