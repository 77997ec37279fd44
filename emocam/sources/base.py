"""What every frame source provides. The capture thread owns a source; nothing else touches it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from emocam.errors import EmoCamError


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # HxWx3 uint8 BGR, never modified after capture
    index: int  # 0, 1, 2, ... in capture order, counting every frame the source delivered
    timestamp: float  # time.monotonic() when the frame was captured
    lost: bool = False  # made by the pipeline while the source is away: shown as is, never analysed


@dataclass(frozen=True)
class SourceInfo:
    width: int
    height: int
    fps: float
    description: str  # what was opened and negotiated, e.g. "/dev/video0 MJPG 1920x1080 @ 30.0"


class SourceLost(EmoCamError):
    """The device went away (unplugged, stream dropped). The pipeline shows a 'lost' frame and reopens."""


class SourceUnavailable(EmoCamError):
    """The source cannot be opened at all; the message says what to do (e.g. lists the cameras found)."""


class Source:
    """A backend file subclasses this and registers itself with @SOURCES.register(name)."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel | None = None):
        self.options = options if options is not None else self.Options()

    def open(self) -> SourceInfo:
        raise NotImplementedError

    def read(self) -> Frame | None:
        """Block until the next frame is due and return it; None at the end of a finite source.
        Raises SourceLost when a live device disappears."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
