"""Emotion classifier backends, one file each, registered by name."""

from emocam.classify.base import Classifier
from emocam.registry import Registry

CLASSIFIERS: Registry[Classifier] = Registry("classifier", __name__)

__all__ = ["CLASSIFIERS", "Classifier"]
