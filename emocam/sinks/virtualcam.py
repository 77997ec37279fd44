"""Publish rendered frames as a webcam other programs (Zoom, OBS, browsers) can select, through pyvirtualcam."""

from __future__ import annotations

import os
import platform

import cv2
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from emocam.sinks import SINKS
from emocam.sinks.base import OutputFrame, Sink, SinkContext, SinkError

LINUX_SETUP = (
    "create the loopback device: `sudo apt install v4l2loopback-dkms`, then "
    "`sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=EmoCam exclusive_caps=1` "
    "(it appears as /dev/video10, named \"EmoCam\" in other programs); then set [sinks.virtualcam] "
    "device = \"/dev/video10\", or leave device unset to use the first loopback device found"
)
OTHER_SETUP = "install OBS Studio (28 or newer) and start its virtual camera once, so its driver is registered"


class VirtualCamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(
        None, description='Loopback device, e.g. "/dev/video10"; unset: the first one pyvirtualcam finds.')
    backend: str | None = Field(
        None, description="pyvirtualcam backend (v4l2loopback, obs, unitycapture); unset: the platform's.")
    width: int | None = Field(None, ge=16, description="Camera width; unset: the size of the rendered frames.")
    height: int | None = Field(None, ge=16, description="Camera height; set with width.")
    fps: float | None = Field(None, gt=0, le=240, description="Advertised frame rate; unset: the pipeline's.")
    pace: bool = Field(
        False, description="Sleep between frames to hold fps; only for sources that are not paced themselves.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> "VirtualCamOptions":
        if (self.width is None) != (self.height is None):
            raise ValueError("set both width and height, or neither")
        return self


@SINKS.register("virtualcam")
class VirtualCamSink(Sink):
    Options = VirtualCamOptions

    def __init__(self, options: VirtualCamOptions | None = None):
        super().__init__(options)
        self._cam = None
        self._size = (0, 0)
        self._fps = 0.0
        self._device = self.options.device
        self._backend = self.options.backend
        self.frames_sent = 0
        self.error: str | None = None

    def open(self, ctx: SinkContext) -> None:
        import pyvirtualcam

        opts: VirtualCamOptions = self.options
        width, height = (opts.width, opts.height) if opts.width else (ctx.width, ctx.height)
        fps = opts.fps or ctx.fps
        known = pyvirtualcam.camera.BACKENDS
        if opts.backend is not None and opts.backend not in known:
            raise SinkError(f"virtual camera backend {opts.backend!r} does not exist here; "
                            f"available: {', '.join(sorted(known)) or 'none'} (or leave backend unset)")
        try:
            self._cam = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.BGR,
                                            device=opts.device, backend=opts.backend, print_fps=False)
        except RuntimeError as e:
            # pyvirtualcam joins one line per backend it tried; all of them failed.
            reason = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
            if opts.device is not None and os.path.exists(opts.device):  # the wrong kind, busy or not ours
                raise SinkError(f"virtual camera device {opts.device} cannot be used ({reason}). To fix: point "
                                "[sinks.virtualcam] device at a v4l2loopback device no other program is feeding "
                                "(`v4l2-ctl --list-devices` lists them), or leave device unset") from None
            setup = LINUX_SETUP if platform.system() == "Linux" else OTHER_SETUP
            raise SinkError(f"no virtual camera device ({reason}). To fix: {setup}") from None
        self._size = (width, height)
        self._fps = fps
        self._device = self._cam.device
        self._backend = self._cam.backend

    def write(self, frame: OutputFrame) -> None:
        if self._cam is None:
            raise SinkError("virtual camera is not open")
        image = frame.image
        width, height = self._size
        if image.shape[1] != width or image.shape[0] != height:
            # On the publish thread, so the cheap filter: INTER_AREA costs 5x more (5.2 ms for 1080p -> 720p).
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        try:
            self._cam.send(image)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            raise SinkError(
                f"virtual camera {self._device}: sending frame {frame.index} failed ({self.error}). The device was "
                "probably removed (module unloaded) or another program writes to it; recreate it or pick another "
                "[sinks.virtualcam] device, then restart") from None
        self.frames_sent += 1
        if self.options.pace:
            self._cam.sleep_until_next_frame()

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.close()
            except Exception as e:  # a device that vanished can fail to close; nothing is left to release
                logger.warning(f"virtual camera {self._device}: close failed: {e}")

    def status(self) -> dict:
        return {
            "device": self._device,
            "backend": self._backend,
            "size": list(self._size),
            "fps": self._fps,
            "frames_sent": self.frames_sent,
            "error": self.error,
        }
