"""Overlay annotators, one file each, registered by name; presets chain them."""

from emocam.registry import Registry
from emocam.render.base import Annotator

ANNOTATORS: Registry[Annotator] = Registry("annotator", __name__)

__all__ = ["ANNOTATORS", "Annotator"]
