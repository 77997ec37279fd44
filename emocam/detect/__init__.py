"""Face detector backends, one file each, registered by name."""

from emocam.detect.base import Detector
from emocam.registry import Registry

DETECTORS: Registry[Detector] = Registry("detector", __name__)

__all__ = ["DETECTORS", "Detector"]
