"""A V4L2 camera through OpenCV. Conference cameras deliver 1080p30 over USB only as MJPG, so that is asked for;
what the driver actually negotiated is logged and shown in SourceInfo.description."""

from __future__ import annotations

import os
import time

import cv2
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from emocam.devices import DeviceNotFound, describe_devices, find_device, list_devices, resolve_device
from emocam.sources import SOURCES
from emocam.sources.base import Frame, Source, SourceInfo, SourceLost, SourceUnavailable


class CameraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: int | str = Field(
        0,
        description="Index (0 = /dev/video0), path (/dev/video2, /dev/v4l/by-id/...) or name as `emocam devices` "
        "lists it (a unique part is enough).",
    )
    width: int = Field(1920, ge=16, le=8192, description="Frame width to ask the camera for.")
    height: int = Field(1080, ge=16, le=8192, description="Frame height to ask the camera for.")
    fps: float = Field(30.0, gt=0, le=1000, description="Frame rate to ask the camera for.")
    fourcc: str = Field(
        "MJPG",
        min_length=4,
        max_length=4,
        description="Pixel format to ask for: MJPG gives 1080p30 over USB 2; YUYV is uncompressed and usually "
        "only 5-10 fps at 1080p.",
    )


def fourcc_code(text: str) -> int:
    return cv2.VideoWriter_fourcc(*text)


def fourcc_text(code: float) -> str:
    value = int(code)
    text = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() and value else f"0x{value:08x}"


@SOURCES.register("camera")
class CameraSource(Source):
    Options = CameraOptions
    options: CameraOptions

    def __init__(self, options: CameraOptions | None = None):
        super().__init__(options)
        self._cap: cv2.VideoCapture | None = None
        self._path = ""
        # Keeps counting across reopens, so the pipeline never sees an index go backwards after a replug.
        self._index = 0

    def open(self) -> SourceInfo:
        self.close()
        opts = self.options
        devices = list_devices()
        try:
            path = resolve_device(opts.device, devices)
        except DeviceNotFound as exc:
            raise SourceUnavailable(f"{exc}; {describe_devices(devices)}") from None
        if not os.path.exists(path):
            raise SourceUnavailable(f"{path}: no such camera; {describe_devices(devices)}")
        device = find_device(path, devices)
        name = device.name if device else "unknown"
        if device is not None and device.virtual:
            logger.warning(
                f"{path} {name!r} is a virtual (loopback) device, not a camera; "
                "if it is EmoCam's own output, the picture feeds back into itself"
            )
        cap = cv2.VideoCapture(path, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceUnavailable(
                f"{path}: could not open it as a V4L2 camera (another program using it? is this user in the "
                f"'video' group?); {describe_devices(devices)}"
            )
        # The pixel format first: the sizes and rates a camera offers depend on it.
        cap.set(cv2.CAP_PROP_FOURCC, fourcc_code(opts.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, opts.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, opts.height)
        cap.set(cv2.CAP_PROP_FPS, opts.fps)
        # Two driver buffers: OpenCV hands a buffer back only at the next grab, so with one the driver has nowhere to
        # put the frame that arrives while the last one is decoded and drops it (a 30 fps camera delivers ~15).
        # The capture thread reads without pause, so a frame waits at most one period in the second buffer.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 2)
        # One frame proves the camera streams in this format and tells its real size; read() delivers fresh ones.
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceUnavailable(
                f"{path}: opened but delivered no frame (is another program streaming from it? does it offer "
                f"{opts.fourcc} {opts.width}x{opts.height}? see `v4l2-ctl -d {path} --list-formats-ext`)"
            )
        fourcc = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
        height, width = image.shape[:2]
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if 0 < fps <= 1000 else opts.fps
        description = f"{path} {name!r} {fourcc} {width}x{height} @ {fps:.1f}"
        logger.info(f"camera {description}")
        asked = (opts.fourcc, opts.width, opts.height, round(opts.fps, 1))
        if (fourcc, width, height, round(fps, 1)) != asked:
            logger.warning(
                f"{path}: asked for {opts.fourcc} {opts.width}x{opts.height} @ {opts.fps:.1f}, "
                f"the camera gave {fourcc} {width}x{height} @ {fps:.1f}"
            )
        self._cap, self._path = cap, path
        return SourceInfo(width=width, height=height, fps=fps, description=description)

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceLost("camera is not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            raise SourceLost(f"{self._path}: the camera stopped delivering frames (unplugged?)")
        frame = Frame(image=image, index=self._index, timestamp=time.monotonic())
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
