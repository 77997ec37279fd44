"""Builds the configured detector and classifier."""

from __future__ import annotations

import torch

from emocam.classify import CLASSIFIERS, Classifier
from emocam.config import Config
from emocam.detect import DETECTORS, Detector
from emocam.device import select_device
from emocam.weights import WeightStore


def build_detector(cfg: Config, name: str | None = None) -> Detector:
    name = name or cfg.detector.name
    cls = DETECTORS.get(name)
    return cls(cfg.detector.options(name), select_device(cfg.runtime), WeightStore(cfg.models_dir))


def build_classifier(cfg: Config, name: str | None = None, options=None) -> Classifier:
    """The named (default: configured) classifier with its configured options, or with `options` instead."""
    name = name or cfg.classifier.name
    cls = CLASSIFIERS.get(name)
    device = select_device(cfg.runtime)
    classifier = cls(options or cfg.classifier.options(name), device, WeightStore(cfg.models_dir))
    if cfg.runtime.half and device.type == "cuda":
        classifier.precision = torch.float16
    if cfg.classifier.cpu_graph:
        classifier.use_cpu_graph()
    classifier.mirror = cfg.classifier.mirror
    return classifier
