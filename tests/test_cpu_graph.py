"""On a CPU the classifiers classify through a frozen graph of their model (Classifier.use_cpu_graph): the same
probabilities as the eager model, which explain maps keep using."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loguru import logger

from emocam.backends import build_classifier
from emocam.config import Config
from emocam.explain.explainer import Explainer
from emocam.types import Face

pytestmark = pytest.mark.weights


def config(models_dir, monkeypatch, **classifier) -> Config:
    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    return Config.model_validate({"classifier": classifier})


def face_crops(astronaut_bgr) -> list[np.ndarray]:
    """Real face crops of several sizes, as the live path and `emocam classify` hand them over."""
    return [astronaut_bgr[20:220, 150:330], astronaut_bgr[40:160, 180:300], astronaut_bgr[0:300, 100:400]]


def eager_probs(classifier, crops) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(classifier.model(classifier.preprocess(crops)), 1).numpy()


@pytest.mark.parametrize("name", ["mini-xception", "repvgg-fer"])
def test_graph_gives_the_eager_models_probabilities(name, models_dir, monkeypatch, astronaut_bgr):
    classifier = build_classifier(config(models_dir, monkeypatch), name)
    assert classifier.graph is not None
    crops = face_crops(astronaut_bgr)
    expected = eager_probs(classifier, crops)
    np.testing.assert_allclose(classifier.predict_crops(crops), expected, atol=1e-5)
    for i, crop in enumerate(crops):  # one face a call, the live path's usual batch
        np.testing.assert_allclose(classifier.predict_crops([crop])[0], expected[i], atol=1e-5)
    assert classifier.predict_crops([]).shape == (0, 7)


def test_explain_maps_come_from_the_eager_model_with_the_same_probabilities(models_dir, monkeypatch, astronaut_bgr):
    classifier = build_classifier(config(models_dir, monkeypatch), "repvgg-fer")
    face = Face(np.array([150, 20, 330, 220], np.float32), 0.99)
    explained = Explainer(classifier).classify(astronaut_bgr, [face])[0]
    np.testing.assert_allclose(explained.probs, classifier.classify(astronaut_bgr, [face])[0].probs, atol=1e-5)


def test_config_can_turn_the_graph_off(models_dir, monkeypatch):
    assert build_classifier(config(models_dir, monkeypatch, cpu_graph=False), "mini-xception").graph is None


def test_no_graph_is_a_warning_and_the_eager_model_classifies(models_dir, monkeypatch, astronaut_bgr):
    def broken_freeze(*args, **kwargs):
        raise RuntimeError("freezing is not supported by this build")

    monkeypatch.setattr(torch.jit, "freeze", broken_freeze)
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        classifier = build_classifier(config(models_dir, monkeypatch), "repvgg-fer")
    finally:
        logger.remove(sink)
    assert classifier.graph is None
    assert len(lines) == 1 and "no frozen CPU graph" in lines[0] and "freezing is not supported" in lines[0]
    crops = face_crops(astronaut_bgr)
    np.testing.assert_allclose(classifier.predict_crops(crops), eager_probs(classifier, crops), atol=1e-6)


def test_explain_timings_add_the_maps_to_the_eager_pass_and_show_the_graph_beside(models_dir, monkeypatch,
                                                                                  astronaut_bgr):
    from emocam.explain.timing import mode_costs

    classifier = build_classifier(config(models_dir, monkeypatch), "repvgg-fer")
    face = Face(np.array([150, 20, 330, 220], np.float32), 0.99)
    costs = mode_costs(classifier, astronaut_bgr, [face], repeats=1, rounds=1)
    assert list(costs) == ["faces", "classify_only", "classify_graph", "activation", "cam", "gradcam"]
    assert classifier.graph is not None  # the eager baseline ran on a copy
