"""Sinks for rendered frames (virtual camera, recorder, preview), one file each, registered by name."""

from emocam.registry import Registry
from emocam.sinks.base import OutputFrame, Sink, SinkContext, SinkError

SINKS: Registry[Sink] = Registry("sink", __name__)

__all__ = ["SINKS", "OutputFrame", "Sink", "SinkContext", "SinkError"]
