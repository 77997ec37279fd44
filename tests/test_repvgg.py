"""RepVGG-Plus: reparameterisation, the classifier backend (through WeightStore) and explain on it."""

from __future__ import annotations

import copy
import dataclasses

import cv2
import numpy as np
import pytest
import torch

from emocam.classify import CLASSIFIERS
from emocam.classify.mini_xception import fer_clamped_window, fer_gray_crop
from emocam.classify.repvgg import RepVGGClassifier, RepVGGOptions
from emocam.errors import WeightsError
from emocam.evaluate.classification import classification_metrics
from emocam.explain.explainer import Explainer
from emocam.explain.options import ExplainConfig
from emocam.nets.repvgg_plus import (VARIANTS, RepVGGPlusBlock, build_repvgg_plus, deploy_state_dict,
                                     load_deploy_for_training, load_deployed, matching_variants, normalise_u8)
from emocam.train.emotion_data import labels_csv_samples, load_faces
from emocam.types import EMOTIONS, Face
from emocam.weights import WeightStore, sha256_file

FACE_VARIANTS = [name for name, c in VARIANTS.items() if c.input_size <= 64]


def trained_looking(arch: str, seed: int = 0):
    """A model whose BatchNorms hold non-trivial statistics and affine terms, as after training."""
    torch.manual_seed(seed)
    model = build_repvgg_plus(arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("arch", FACE_VARIANTS)
def test_deploy_form_equals_training_form(arch):
    torch.set_num_threads(1)  # a second thread mostly waits on a busy 2-core machine
    model = trained_looking(arch)
    c = model.config
    x = torch.randn(3, c.in_channels, c.input_size, c.input_size)
    with torch.no_grad():
        expected = model(x)
        deployed = copy.deepcopy(model).reparameterize()
        got = deployed(x)
    assert deployed.deployed and not model.deployed
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.modules())
    assert all(sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in b.modules()) == 1
               for b in deployed.blocks)
    assert float((got - expected).abs().max()) < 1e-4
    assert [n for n, _ in model.conv_layers()] == [n for n, _ in deployed.conv_layers()]


def test_deploy_weights_load_back_into_the_training_form():
    """What lets a shipped model (deploy weights only) be fine-tuned: the training form computes the same."""
    deployed = trained_looking("repvggplus-fer-xw", seed=3).reparameterize()
    x = torch.randn(64, 1, 48, 48)
    model = build_repvgg_plus("repvggplus-fer-xw")
    load_deploy_for_training(model, deploy_state_dict(deployed), [x[:40], x[40:]])
    with torch.no_grad():
        expected = deployed(x)
        torch.testing.assert_close(model.eval()(x), expected, atol=1e-4, rtol=1e-4)
        model.train()
        model.dropout.eval()
        # batch statistics: on the very inputs they were measured on, the same as the deploy model
        torch.testing.assert_close(model(x), expected, atol=1e-3, rtol=1e-3)
    silent = [b.pointwise.bn.weight for b in model.blocks] + [b.identity.weight for b in model.blocks if b.identity]
    assert all(float(w.detach().abs().max()) == 0 for w in silent)  # the extra branches start at zero
    assert all(b.pointwise.conv.weight.abs().max() > 0 for b in model.blocks)


def test_identity_branch_only_where_shapes_allow():
    assert RepVGGPlusBlock(16, 16, 1, se=False).identity is not None
    assert RepVGGPlusBlock(16, 32, 1, se=False).identity is None
    assert RepVGGPlusBlock(16, 16, 2, se=False).identity is None


def test_squeeze_excitation_per_stage():
    model = build_repvgg_plus("repvggplus-fer-xw")
    has_se = [b.se is not None for b in model.blocks]
    assert has_se == [False] * 7 + [True]  # stem, 1 + 2 + 3 blocks without, the last stage's block with
    with pytest.raises(ValueError, match="5 entries"):
        dataclasses.replace(VARIANTS["repvggplus-fer-xs"], se=(True, False))


def test_class_maps_average_to_the_logits():
    model = trained_looking("repvggplus-fer-xs").reparameterize()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        maps = model.class_maps(x)
        torch.testing.assert_close(maps.mean(dim=(2, 3)), model(x))
    assert maps.shape == (2, 7, 3, 3)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="repvggplus-fer-xs"):
        build_repvgg_plus("repvggplus-nope")


def _store(tmp_path, arch: str | None = "repvggplus-fer-xs", seed: int = 0) -> WeightStore:
    model = trained_looking(arch or "repvggplus-fer-xs", seed).reparameterize()
    path = tmp_path / "repvgg_test.pth"
    torch.save(deploy_state_dict(model), path)
    arch_line = f'arch = "{arch}"\n' if arch else ""
    (tmp_path / "manifest.toml").write_text(
        f'[weights.repvgg_fer]\nfile = "repvgg_test.pth"\nsha256 = "{sha256_file(path)}"\n{arch_line}')
    return WeightStore(tmp_path)


@pytest.fixture
def random_classifier(tmp_path) -> RepVGGClassifier:
    return RepVGGClassifier(RepVGGOptions(), torch.device("cpu"), _store(tmp_path))


def test_backend_is_registered_and_loads_deploy_weights(random_classifier, tmp_path):
    assert CLASSIFIERS.get("repvgg-fer") is RepVGGClassifier
    reference = trained_looking("repvggplus-fer-xs").reparameterize()
    faces = [np.random.default_rng(i).integers(0, 256, (48, 48), dtype=np.uint8) for i in range(3)]
    probs = random_classifier.predict_crops(faces)
    with torch.no_grad():
        expected = torch.softmax(reference(normalise_u8(torch.from_numpy(np.stack(faces)[:, None]))), 1)
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)
    assert random_classifier.weights_sha256["repvgg_fer"] == sha256_file(tmp_path / "repvgg_test.pth")


def test_backend_needs_the_arch_in_the_manifest(tmp_path):
    with pytest.raises(WeightsError, match="arch"):
        RepVGGClassifier(RepVGGOptions(), torch.device("cpu"), _store(tmp_path, arch=None))


def test_weights_of_another_variant_do_not_load(tmp_path):
    state = deploy_state_dict(trained_looking("repvggplus-fer-s").reparameterize())
    with pytest.raises(RuntimeError):
        load_deployed("repvggplus-fer-xs", state)


def test_the_variant_is_recognised_from_deploy_weights():
    for arch in FACE_VARIANTS:
        state = deploy_state_dict(build_repvgg_plus(arch).eval().reparameterize())
        assert arch in matching_variants(state)
    # only input size and stem stride tell these two apart, and neither is in the weights
    state = deploy_state_dict(build_repvgg_plus("repvggplus-fer-m").eval().reparameterize())
    assert matching_variants(state) == ["repvggplus-fer-m", "repvggplus-face64-m"]
    state = deploy_state_dict(build_repvgg_plus("repvggplus-fer-xs").eval().reparameterize())
    assert matching_variants(state) == ["repvggplus-fer-xs"]
    assert matching_variants({k: v for k, v in state.items() if k != "blocks.1.fused.bias"}) == []
    assert matching_variants(build_repvgg_plus("repvggplus-fer-xs").state_dict()) == []  # training form


def test_backend_loads_a_deploy_file_named_by_path(tmp_path):
    """What `emocam train classifier` writes runs in every command without a manifest entry."""
    model = trained_looking("repvggplus-fer-s", seed=3).reparameterize()
    path = tmp_path / "run" / "deploy.pt"
    path.parent.mkdir()
    torch.save(deploy_state_dict(model), path)
    classifier = RepVGGClassifier(RepVGGOptions(weights=str(path)), torch.device("cpu"), WeightStore(tmp_path))
    assert classifier.config == VARIANTS["repvggplus-fer-s"]
    assert classifier.weights_sha256 == {str(path): sha256_file(path)}
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    with torch.no_grad():
        expected = torch.softmax(model(normalise_u8(torch.from_numpy(face[None, None]))), 1).numpy()
    np.testing.assert_allclose(classifier.predict_crops([face]), expected, atol=1e-5)


def test_a_wrong_weights_file_is_named_with_what_to_do(tmp_path):
    def load(path):
        return RepVGGClassifier(RepVGGOptions(weights=str(path)), torch.device("cpu"), WeightStore(tmp_path))

    with pytest.raises(WeightsError, match="no such file"):
        load(tmp_path / "missing.pt")
    checkpoint = tmp_path / "last.pt"
    torch.save({"model": build_repvgg_plus("repvggplus-fer-xs").state_dict()}, checkpoint)
    with pytest.raises(WeightsError, match="training checkpoint: use deploy.pt"):
        load(checkpoint)
    ambiguous = tmp_path / "m.pt"
    torch.save(deploy_state_dict(build_repvgg_plus("repvggplus-face64-m").eval().reparameterize()), ambiguous)
    with pytest.raises(WeightsError, match="set classifier.repvgg-fer.arch"):
        load(ambiguous)
    chosen = RepVGGClassifier(RepVGGOptions(weights=str(ambiguous), arch="repvggplus-face64-m"),
                              torch.device("cpu"), WeightStore(tmp_path))
    assert chosen.size == 64
    with pytest.raises(WeightsError, match="not repvggplus-fer-xs"):
        RepVGGClassifier(RepVGGOptions(weights=str(ambiguous), arch="repvggplus-fer-xs"), torch.device("cpu"),
                         WeightStore(tmp_path))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not torch")
    with pytest.raises(WeightsError, match="not a torch weights file"):
        load(broken)


def test_crop_is_fers_window_at_48(random_classifier, astronaut_bgr):
    face = Face(np.array([180.3, 60.7, 268.4, 172.2], np.float32), 1.0)
    crop = random_classifier.crop(astronaut_bgr, face)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    fer64 = fer_gray_crop(astronaut_bgr, face.box)
    np.testing.assert_array_equal(crop, cv2.resize(fer64, (48, 48), interpolation=cv2.INTER_AREA))
    assert random_classifier.crop_window(face, astronaut_bgr.shape) == fer_clamped_window(face.box,
                                                                                         astronaut_bgr.shape)
    # a colour crop of another size goes through preprocess the same way training saw faces: gray, 48x48
    x = random_classifier.preprocess([cv2.resize(astronaut_bgr[60:172, 180:268], (96, 96))])
    assert x.shape == (1, 1, 48, 48) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("mode", ["activation", "cam", "gradcam"])
def test_explain_works_on_the_deployed_classifier(random_classifier, astronaut_bgr, mode):
    explainer = Explainer(random_classifier, ExplainConfig(mode=mode))
    face = Face(np.array([180.3, 60.7, 268.4, 172.2], np.float32), 1.0)
    (out,) = explainer.classify(astronaut_bgr, [face])
    fm = out.explanation
    assert fm.layers[-1] == "classifier" and len(fm.layers) == len(random_classifier.model.blocks) + 1
    channels = [m.shape[0] for m in fm.maps]
    assert channels[-1] == 7  # the class conv: one map per class, so `cam` works
    assert set(channels[:-1]) == ({7} if mode == "gradcam" else {1})
    np.testing.assert_allclose(out.probs, random_classifier.classify(astronaut_bgr, [face])[0].probs, atol=1e-5)


def test_shipped_model_recognises_publictest_faces(models_dir, data_dir):
    """The committed weights on the first 400 FER2013 PublicTest faces (the full set is in the model card)."""
    store = WeightStore(models_dir)
    if "repvgg_fer" not in store.manifest():
        pytest.skip("no repvgg_fer entry in the manifest")
    torch.set_num_threads(1)  # a second thread mostly waits on a busy 2-core machine
    classifier = RepVGGClassifier(RepVGGOptions(), torch.device("cpu"), store)
    samples = labels_csv_samples(data_dir / "eval/emotion/labels.csv", "fer2013_PublicTest_")[:400]
    faces = load_faces(samples, 48)
    probs = np.concatenate([classifier.predict_crops(list(faces.images[i:i + 100])) for i in range(0, 400, 100)])
    metrics = classification_metrics(faces.labels, probs.argmax(1), EMOTIONS)
    assert metrics.accuracy > 0.6, metrics.to_json()
