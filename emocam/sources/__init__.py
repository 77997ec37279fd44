"""Frame sources (camera, video file, image folder, URL, demo), one file each, registered by name."""

from emocam.registry import Registry
from emocam.sources.base import Frame, Source, SourceInfo, SourceLost, SourceUnavailable

SOURCES: Registry[Source] = Registry("source", __name__)

__all__ = ["SOURCES", "Frame", "Source", "SourceInfo", "SourceLost", "SourceUnavailable"]
