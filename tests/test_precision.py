"""Reduced precision for the classifier and its maps (float16 on CUDA). No GPU here, so the same autocast code path
is run on the CPU with bfloat16, which has fewer mantissa bits than float16: what holds for it holds for float16."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from emocam.backends import build_classifier
from emocam.config import load_config
from emocam.explain.explainer import Explainer
from emocam.explain.options import ExplainConfig


@pytest.fixture(scope="module")
def faces(data_dir) -> list[np.ndarray]:
    folder = data_dir / "eval" / "emotion"
    with open(folder / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["file"].startswith("images/fer2013_PublicTest_")][:64]
    return [cv2.imread(str(folder / r["file"])) for r in rows]


def test_half_applies_only_on_cuda(models_dir):
    cfg = load_config(None, [f"runtime.models_dir={str(models_dir)!r}"])
    assert cfg.runtime.half is True
    assert build_classifier(cfg).precision is None  # CPU: float32, whatever runtime.half says


@pytest.mark.parametrize("name", ["mini-xception", "repvgg-fer"])
def test_reduced_precision_keeps_the_predictions(models_dir, faces, name):
    cfg = load_config(None, [f"runtime.models_dir={str(models_dir)!r}"])
    classifier = build_classifier(cfg, name)
    full = classifier.predict_crops(faces)
    classifier.precision = torch.bfloat16
    reduced = classifier.predict_crops(faces)
    assert reduced.dtype == np.float32
    np.testing.assert_allclose(reduced.sum(1), 1.0, atol=1e-5)
    assert np.abs(reduced - full).max() < 0.1
    assert (reduced.argmax(1) == full.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize("mode", ["cam", "gradcam"])
def test_reduced_precision_maps_match(models_dir, faces, mode):
    cfg = load_config(None, [f"runtime.models_dir={str(models_dir)!r}"])
    classifier = build_classifier(cfg, "mini-xception")
    explainer = Explainer(classifier, ExplainConfig(mode=mode))
    probs, maps = explainer.forward(faces[:8])
    classifier.precision = torch.bfloat16
    probs_r, maps_r = explainer.forward(faces[:8])
    assert np.abs(probs_r - probs).max() < 0.1
    for name in maps:
        assert maps_r[name].dtype == np.float32 and np.isfinite(maps_r[name]).all()
        a, b = maps[name].ravel(), maps_r[name].ravel()
        if a.std() > 0:
            assert np.corrcoef(a, b)[0, 1] > 0.9, name
