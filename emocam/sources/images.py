"""A folder (or glob) of images played as a video at a fixed rate. Unreadable images are skipped, never fatal."""

from __future__ import annotations

import glob
import re
import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

from emocam.imageio import UnreadableImage, read_bgr
from emocam.sources import SOURCES
from emocam.sources.base import Frame, Source, SourceInfo, SourceUnavailable
from emocam.sources.video import RealtimeClock, output_size

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class ImagesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None, description="A folder (its images in natural order: img2 before img10) or a glob such as 'shots/*.png'."
    )
    fps: float = Field(30.0, gt=0, le=1000, description="Images per second.")
    pacing: Literal["realtime", "fast"] = Field(
        "realtime", description='"realtime": one image every 1/fps s, skipping when the reader falls behind; "fast".'
    )
    loop: bool = Field(False, description="Start again after the last image; frame indices keep growing.")
    width: int | None = Field(None, ge=16, le=8192, description="Frame width; default: the first readable image's.")
    height: int | None = Field(None, ge=16, le=8192, description="Frame height; default: the first readable image's.")


def natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", str(path))]


def find_images(pattern: str) -> list[Path]:
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file()]
    elif glob.has_magic(pattern):
        files = [Path(p) for p in glob.glob(str(path)) if Path(p).is_file()]
    else:
        files = [path] if path.is_file() else []
    return sorted(files, key=natural_key)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit the image inside size keeping its aspect ratio, centred on black."""
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == size:
        return image
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((height, width, 3), np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    out[y : y + new_h, x : x + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out


@SOURCES.register("images")
class ImagesSource(Source):
    Options = ImagesOptions
    options: ImagesOptions

    def __init__(self, options: ImagesOptions | None = None):
        super().__init__(options)
        self._files: list[Path] = []
        self._clock: RealtimeClock | None = None
        self._size = (0, 0)
        self._index = 0  # frames delivered
        self._position = 0  # images consumed (delivered + skipped for time), growing across loops
        self.corrupt: set[Path] = set()  # unreadable files, each warned about once and then passed over
        self.dropped = 0  # images skipped because the reader fell behind the realtime schedule

    @property
    def skipped(self) -> int:
        """How many files were unreadable."""
        return len(self.corrupt)

    def open(self) -> SourceInfo:
        opts = self.options
        if not opts.path:
            raise SourceUnavailable("source.images.path is not set: give a folder of images or a glob")
        self._files = find_images(opts.path)
        if not self._files:
            raise SourceUnavailable(f"{opts.path}: no images found (looked for {', '.join(sorted(EXTENSIONS))})")
        self.corrupt = set()
        first = None
        for path in self._files:
            first = self._load(path)
            if first is not None:
                break
        if first is None:
            raise SourceUnavailable(f"{opts.path}: none of the {len(self._files)} images is readable")
        self._size = output_size(first.shape[1], first.shape[0], opts.width, opts.height)
        self._index = self._position = self.dropped = 0
        self._clock = RealtimeClock(opts.fps) if opts.pacing == "realtime" else None
        description = (
            f"{opts.path} ({len(self._files)} images) {self._size[0]}x{self._size[1]} @ {opts.fps:.3g} "
            f"({opts.pacing}{', loop' if opts.loop else ''})"
        )
        logger.info(f"images {description}")
        return SourceInfo(width=self._size[0], height=self._size[1], fps=opts.fps, description=description)

    def _load(self, path: Path) -> np.ndarray | None:
        if path in self.corrupt:
            return None
        try:
            return read_bgr(path)
        except UnreadableImage as exc:
            self.corrupt.add(path)
            logger.warning(f"skipping {exc}")
            return None

    def _file_at(self, position: int) -> Path | None:
        """The file for a stream position, None past the end when not looping."""
        if position < len(self._files):
            return self._files[position]
        return self._files[position % len(self._files)] if self.options.loop else None

    def read(self) -> Frame | None:
        if not self._files:
            return None
        target = self._clock.wait_or_skip(self._position) if self._clock else self._position
        if not self.options.loop:
            target = min(target, len(self._files))
        self.dropped += target - self._position
        self._position = target
        while len(self.corrupt) < len(self._files) and (path := self._file_at(self._position)) is not None:
            self._position += 1
            image = self._load(path)
            if image is not None:
                frame = Frame(image=letterbox(image, self._size), index=self._index, timestamp=time.monotonic())
                self._index += 1
                return frame
        return None

    def close(self) -> None:
        if self.corrupt:
            logger.info(f"images: skipped {len(self.corrupt)} unreadable files")
        self._files = []
