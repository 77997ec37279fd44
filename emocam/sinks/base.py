"""What every sink provides. The publish thread calls write() once per rendered frame, in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from emocam.types import Analysis


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class OutputFrame:
    image: np.ndarray  # HxWx3 uint8 BGR, annotated; sinks must not modify it
    index: int  # capture index of the source frame it was drawn on
    captured: float  # time.monotonic() at capture
    analysis: Analysis | None  # what was drawn (the latest analysis, possibly of an earlier frame)
    preset: str  # active overlay preset


@dataclass(frozen=True)
class SinkContext:
    width: int  # size of the frames write() receives
    height: int
    fps: float
    session_dir: Path  # this run's own folder (recordings, logs); created by the pipeline


class SinkError(Exception):
    """A sink failed; the message says what to do. Whether the daemon exits or goes on is the config's choice."""


class Sink:
    """A backend file subclasses this and registers itself with @SINKS.register(name)."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel | None = None):
        self.options = options if options is not None else self.Options()

    def open(self, ctx: SinkContext) -> None:
        raise NotImplementedError

    def write(self, frame: OutputFrame) -> None:
        raise NotImplementedError

    @property
    def stop_requested(self) -> bool:
        """True when the user asked this sink to end the run (a preview window closed, say)."""
        return False

    def close(self) -> None:
        """Finish cleanly (flush, finalise files, release devices). Safe to call twice."""

    def status(self) -> dict:
        """A small JSON-able summary for `emocam status` (e.g. device, file path, frames written)."""
        return {}
