"""classifier.mirror: each face's logits averaged with its mirror image's, on every path that classifies (frozen
graph, eager model, int8 network, explain pass), while explain maps stay those of the face as it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emocam.backends import build_classifier
from emocam.config import Config
from emocam.explain.explainer import Explainer
from emocam.nets import quantize
from emocam.types import Face

pytestmark = pytest.mark.weights


def build(models_dir, monkeypatch, name, **classifier):
    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    return build_classifier(Config.model_validate({"classifier": classifier}), name)


def crops(astronaut_bgr) -> list[np.ndarray]:
    return [astronaut_bgr[20:220, 150:330], astronaut_bgr[40:160, 180:300]]


def two_view_probs(classifier, faces) -> np.ndarray:
    """What mirroring must give, computed the slow way: two separate passes of the eager model."""
    x = classifier.preprocess(faces)
    with torch.inference_mode():
        logits = (classifier.model(x) + classifier.model(x.flip(3))) / 2
    return torch.softmax(logits, 1).numpy()


@pytest.mark.parametrize("name, cpu_graph", [("mini-xception", True), ("repvgg-fer", True), ("repvgg-fer", False)])
def test_mirroring_averages_each_face_with_its_mirror_image(name, cpu_graph, models_dir, monkeypatch, astronaut_bgr):
    plain = build(models_dir, monkeypatch, name, cpu_graph=cpu_graph)
    mirrored = build(models_dir, monkeypatch, name, cpu_graph=cpu_graph, mirror=True)
    faces = crops(astronaut_bgr)
    got = mirrored.predict_crops(faces)
    np.testing.assert_allclose(got, two_view_probs(plain, faces), atol=1e-5)
    assert not np.allclose(got, plain.predict_crops(faces), atol=1e-3)  # the two views do differ
    np.testing.assert_allclose(mirrored.predict_crops([faces[1]])[0], got[1], atol=1e-5)  # one face a call
    assert mirrored.predict_crops([]).shape == (0, 7)


def test_a_symmetric_face_gives_what_it_gives_unmirrored(models_dir, monkeypatch, astronaut_bgr):
    face = astronaut_bgr[20:220, 150:330]
    half = face[:, : face.shape[1] // 2]
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)
    plain = build(models_dir, monkeypatch, "repvgg-fer")
    mirrored = build(models_dir, monkeypatch, "repvgg-fer", mirror=True)
    np.testing.assert_allclose(mirrored.predict_crops([symmetric]), plain.predict_crops([symmetric]), atol=1e-5)


@pytest.mark.skipif(quantize.engine() is None, reason="this torch has no x86 int8 kernels")
def test_the_int8_network_mirrors_too(models_dir, monkeypatch, astronaut_bgr):
    plain = build(models_dir, monkeypatch, "repvgg-fer-int8")
    mirrored = build(models_dir, monkeypatch, "repvgg-fer-int8", mirror=True)
    faces = crops(astronaut_bgr)
    with torch.inference_mode():
        x = plain.preprocess(faces)
        expected = torch.softmax((plain.graph(x) + plain.graph(x.flip(3).contiguous())) / 2, 1).numpy()
    np.testing.assert_allclose(mirrored.predict_crops(faces), expected, atol=1e-5)


def test_explain_averages_the_probabilities_but_keeps_the_faces_own_maps(models_dir, monkeypatch, astronaut_bgr):
    plain = build(models_dir, monkeypatch, "repvgg-fer")
    mirrored = build(models_dir, monkeypatch, "repvgg-fer", mirror=True)
    face = Face(np.array([150, 20, 330, 220], np.float32), 0.99)
    with_maps = Explainer(mirrored).classify(astronaut_bgr, [face])[0]
    without = Explainer(plain).classify(astronaut_bgr, [face])[0]
    np.testing.assert_allclose(with_maps.probs, mirrored.classify(astronaut_bgr, [face])[0].probs, atol=1e-5)
    assert not np.allclose(with_maps.probs, without.probs, atol=1e-3)
    for a, b in zip(with_maps.explanation.maps, without.explanation.maps):
        np.testing.assert_allclose(a, b, atol=1e-6)
