"""emocam.explain: hooks, the three map modes, upsampling, the stable scale, smoothing, statistics, the log."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emocam.classify.base import NoOptions
from emocam.classify.mini_xception import MiniXceptionClassifier, fer_gray_crop
from emocam.errors import ConfigError
from emocam.explain.explainer import Explainer
from emocam.explain.hooks import capture, explain_layers
from emocam.explain.maps import FaceMaps, class_index, layer_index, upsample
from emocam.explain.modes import MODES, CamMode, GradCamMode
from emocam.explain.normalise import RunningRange, TrackSmoother
from emocam.explain.options import ExplainConfig
from emocam.explain.stats import map_stats, region_masks
from emocam.nets.mini_xception import MiniXception
from emocam.tracker import Tracker
from emocam.types import EMOTIONS, Analysis, Face
from emocam.weights import WeightStore

# mini-XCEPTION's conv layers and their map sizes for a 64x64 input.
SIZES = {"stem1.conv": 62, "stem2.conv": 60, "block1.sepconv1": 60, "block1.sepconv2": 60, "block1.shortcut": 30,
         "block2.sepconv1": 30, "block2.sepconv2": 30, "block2.shortcut": 15, "block3.sepconv1": 15,
         "block3.sepconv2": 15, "block3.shortcut": 8, "block4.sepconv1": 8, "block4.sepconv2": 8,
         "block4.shortcut": 4, "classifier": 4}
ASTRONAUT_BOX = np.array([180.3, 60.7, 268.4, 172.2], np.float32)
ASTRONAUT_LANDMARKS = np.array([[205.4, 101.5], [246.9, 103.1], [225.1, 129.2], [201.2, 139.6], [245.1, 141.1]],
                               np.float32)


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def net() -> MiniXception:
    """Random weights, eval mode, channels_last like the real classifier: no weight file needed."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = MiniXception().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so every layer matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.to(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def classifier(models_dir) -> MiniXceptionClassifier:
    torch.set_num_threads(2)
    return MiniXceptionClassifier(NoOptions(), torch.device("cpu"), WeightStore(models_dir))


@pytest.fixture
def astronaut_face() -> Face:
    return Face(ASTRONAUT_BOX, 1.0, ASTRONAUT_LANDMARKS)


# ---- hooks ------------------------------------------------------------------------------------------------------
def test_hooks_exist_only_inside_the_block(net):
    layers = explain_layers(net)
    assert [name for name, _ in layers] == list(SIZES)
    x = torch.randn(1, 1, 64, 64)
    for _ in range(300):
        with torch.no_grad(), capture(layers) as store:
            assert hook_count(net) == len(layers)
            net(x)
        assert set(store) == set(SIZES)
    assert hook_count(net) == 0


def test_hooks_released_when_the_block_raises(net):
    layers = explain_layers(net)
    for _ in range(50):
        with pytest.raises(RuntimeError, match="boom"):
            with torch.no_grad(), capture(layers):
                net(torch.randn(1, 1, 64, 64))
                raise RuntimeError("boom")
    # An error inside the forward pass itself (wrong input) too.
    with pytest.raises(RuntimeError):
        with capture(layers):
            net(torch.randn(1, 3, 64, 64))
    assert hook_count(net) == 0


@pytest.mark.parametrize("mode", sorted(MODES))
def test_no_hook_left_after_many_explained_frames(net, mode):
    run = MODES[mode](net, explain_layers(net), 7, True)
    for _ in range(50 if mode != "gradcam" else 5):
        run(torch.randn(1, 1, 64, 64))
    assert hook_count(net) == 0


# ---- modes ------------------------------------------------------------------------------------------------------
def test_cam_is_exactly_the_class_maps_of_the_last_conv(net):
    x = torch.randn(3, 1, 64, 64)
    logits, maps = CamMode(net, explain_layers(net), 7, True)(x)
    with torch.no_grad():
        expected = net.class_maps(x)
        torch.testing.assert_close(logits, net(x), rtol=0, atol=0)
    torch.testing.assert_close(maps["classifier"], expected, rtol=0, atol=0)
    # ... whose spatial mean is the logit, which is what makes them class activation maps.
    torch.testing.assert_close(maps["classifier"].mean(dim=(2, 3)), logits, rtol=1e-5, atol=1e-5)


def test_map_shapes_per_mode(net):
    x = torch.randn(2, 1, 64, 64)
    for mode in MODES:
        _, maps = MODES[mode](net, explain_layers(net), 7, True)(x)
        assert list(maps) == list(SIZES) or set(maps) == set(SIZES)
        for name, size in SIZES.items():
            channels = 7 if mode == "gradcam" or name == "classifier" else 1
            assert tuple(maps[name].shape) == (2, channels, size, size), (mode, name)


def test_activation_is_channel_mean_of_the_rectified_output(net):
    x = torch.randn(2, 1, 64, 64)
    _, maps = MODES["activation"](net, explain_layers(net), 7, True)(x)
    with torch.no_grad():
        stem = net.stem1.conv(x)
    torch.testing.assert_close(maps["stem1.conv"], stem.relu().mean(1, keepdim=True))
    assert float(maps["classifier"].min()) >= 0  # the class layer's seven maps, rectified


def test_gradcam_all_classes_from_one_pass_equal_one_backward_per_class(net):
    x = torch.randn(2, 1, 64, 64)
    layers = explain_layers(net)
    logits, maps = GradCamMode(net, layers, 7, True)(x)
    for c in (0, 3, 6):
        with torch.enable_grad(), capture(layers) as store:
            out = net(x.clone().requires_grad_(True))
            acts = [store[name] for name, _ in layers]
            grads = torch.autograd.grad(out[:, c].sum(), acts)
        for (name, _), act, grad in zip(layers, acts, grads):
            expected = (grad.mean(dim=(2, 3), keepdim=True) * act).sum(1).relu().detach()
            torch.testing.assert_close(maps[name][:, c], expected, rtol=1e-4, atol=1e-6, msg=f"{name} class {c}")
    with torch.no_grad():
        torch.testing.assert_close(logits, net(x), rtol=1e-5, atol=1e-5)
    assert hook_count(net) == 0


def test_gradcam_works_inside_inference_mode(net):
    with torch.inference_mode():
        _, maps = GradCamMode(net, explain_layers(net), 7, True)(torch.randn(1, 1, 64, 64))
    assert maps["classifier"].shape == (1, 7, 4, 4)


# ---- upsampling, scale, smoothing -------------------------------------------------------------------------------
def test_upsampling_is_bicubic():
    rng = np.random.default_rng(1)
    m = rng.random((7, 4, 4)).astype(np.float32)
    up = upsample(m, (53, 41))
    assert up.shape == (7, 41, 53)
    ref = F.interpolate(torch.from_numpy(m)[None], size=(41, 53), mode="bicubic", align_corners=False)[0].numpy()
    np.testing.assert_allclose(up, np.clip(ref, 0, 1), atol=1e-5)
    # Bicubic, not bilinear: the two differ clearly on a 4x4 map.
    bilinear = F.interpolate(torch.from_numpy(m)[None], size=(41, 53), mode="bilinear", align_corners=False)[0]
    assert np.abs(up - bilinear.numpy()).max() > 0.02
    single = upsample(m[0], (20, 30))
    assert single.shape == (30, 20)
    np.testing.assert_allclose(upsample(m[:1], (20, 30))[0], single, atol=1e-6)
    assert 0 <= up.min() and up.max() <= 1
    assert upsample(m * 3, (20, 20), clip=False).max() > 1
    many = rng.random((300, 4, 4)).astype(np.float32)  # more channels than OpenCV resizes at once
    np.testing.assert_allclose(upsample(many, (9, 9))[299], upsample(many[299], (9, 9)), atol=1e-6)


def test_stable_scale_keeps_a_constant_input_constant():
    rng = np.random.default_rng(2)
    scale = RunningRange(1, 99, 0.05)
    frame = rng.random((1, 1, 16, 16)).astype(np.float32) * 5 + 2
    first = scale.normalise("l", frame)
    for _ in range(50):
        np.testing.assert_allclose(scale.normalise("l", frame), first, atol=1e-6)
    assert first.min() == 0 and first.max() == 1


def test_stable_scale_does_not_stretch_a_flat_frame_into_noise():
    rng = np.random.default_rng(3)
    scale = RunningRange(1, 99, 0.05)
    for _ in range(30):  # a face with structure sets the layer's range
        scale.normalise("l", rng.random((1, 1, 16, 16)).astype(np.float32))
    outputs = [scale.normalise("l", (0.5 + 1e-3 * rng.standard_normal((1, 1, 16, 16))).astype(np.float32))
               for _ in range(10)]
    # Flat in, flat out, frame after frame; per-frame min-max would span 0..1 on every one of them.
    assert max(float(np.ptp(o)) for o in outputs) < 0.02
    assert float(np.abs(outputs[-1] - outputs[0]).max()) < 0.02
    assert RunningRange().normalise("flat", np.full((1, 1, 4, 4), 3.0, np.float32)).max() == 0


def test_track_smoothing_blends_per_track_and_forgets_lost_tracks():
    sm = TrackSmoother(0.5)
    a, b = np.zeros((1, 4, 4), np.float32), np.ones((1, 4, 4), np.float32)
    np.testing.assert_array_equal(sm.smooth(1, {"l": a})["l"], a)
    np.testing.assert_array_equal(sm.smooth(2, {"l": b})["l"], b)  # another face: its own history
    np.testing.assert_allclose(sm.smooth(1, {"l": b})["l"], 0.5)
    np.testing.assert_allclose(sm.smooth(1, {"l": b})["l"], 0.75)
    sm.keep_only({2})
    np.testing.assert_array_equal(sm.smooth(1, {"l": b})["l"], b)  # track 1 was forgotten: starts afresh


# ---- statistics ---------------------------------------------------------------------------------------------------
def test_region_statistics_follow_the_landmarks():
    window = (100, 200, 228, 328)  # 128 px square: 2 frame px per raster cell
    lm = np.array([[140, 240], [188, 240], [164, 268], [146, 296], [182, 296]], np.float32)
    masks = region_masks(lm, window)
    assert masks.shape == (3, 64, 64)
    # A map that is hot exactly on the mouth: all its energy is there, its centroid at the mouth's centre.
    mouth = masks[2][None]
    mean, mx, above, cx, cy, eyes, nose, mouth_share = map_stats(mouth, window, masks, 0.5,
                                                                ("mean", "max", "above", "centroid", "regions"))[0]
    assert (eyes, nose, mouth_share) == (0.0, 0.0, 1.0)
    assert abs(cx - 164) < 1.5 and abs(cy - 296) < 1.5
    assert mx == 1.0 and mean == above == round(float(masks[2].mean()), 3)
    # Eyes: discs around each eye.
    assert masks[0][20, 20] == 1 and masks[0][20, 44] == 1 and masks[0][20, 32] == 0
    assert map_stats(np.zeros((1, 64, 64), np.float32), window, None, 0.5, ("centroid", "regions"))[0] == \
        [None] * 5


def test_layer_and_class_choice():
    maps = (np.zeros((1, 8, 8), np.float32), np.zeros((7, 4, 4), np.float32))
    fm = FaceMaps("cam", ("a", "classifier"), maps, (0, 0, 10, 10))
    assert layer_index(fm, None) == 1 and layer_index(fm, 0) == 0 and layer_index(fm, 9) == 1
    assert layer_index(fm, "a") == 0 and layer_index(fm, None, "classifier") == 1 and layer_index(fm, -2) == 0
    assert fm.class_layer(0) == 1 and fm.per_class(1) and not fm.per_class(0)
    face = Face(np.zeros(4, np.float32), 1.0, probs=np.eye(7, dtype=np.float32)[3])
    assert class_index(face, None) == 3 and class_index(face, "sad") == 4 and class_index(face, None, "fear") == 2


# ---- the explainer with the real model ----------------------------------------------------------------------------
def test_crop_window_is_what_the_model_sees(classifier, astronaut_bgr):
    for box in (ASTRONAUT_BOX, np.array([-30, -20, 60, 90], np.float32), np.array([450, 400, 530, 520], np.float32)):
        face = Face(box, 1.0)
        x1, y1, x2, y2 = classifier.crop_window(face, astronaut_bgr.shape)
        pad = 40
        gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
        fill = np.uint8(np.rint(gray[-2:].mean()))
        padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(fill))
        window = padded[y1 + pad:y2 + pad, x1 + pad:x2 + pad]
        expected = cv2.resize(window, (64, 64), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(fer_gray_crop(astronaut_bgr, box), expected)
        assert x2 - x1 > face.width and y2 - y1 > face.height  # the model sees more than the box


def test_one_forward_pass_gives_probabilities_and_maps(classifier, astronaut_bgr, astronaut_face):
    calls = []
    handle = classifier.model.register_forward_pre_hook(lambda m, inputs: calls.append(inputs[0].shape[0]))
    try:
        plain = classifier.classify(astronaut_bgr, [astronaut_face, astronaut_face])
        calls.clear()
        for mode in MODES:
            explainer = Explainer(classifier, ExplainConfig(mode=mode))
            faces = explainer.classify(astronaut_bgr, [astronaut_face, astronaut_face])
            assert len(calls) == 1, mode  # one pass (gradcam: one batched pass over 2 faces x 7 classes)
            assert calls.pop() == (14 if mode == "gradcam" else 2)
            for f, p in zip(faces, plain):
                np.testing.assert_allclose(f.probs, p.probs, atol=1e-5)
                assert f.label == "happy"
                fm = f.explanation
                assert fm.layers == tuple(SIZES) and fm.mode == mode
                for name, stack in zip(fm.layers, fm.maps):
                    assert stack.shape[1:] == (SIZES[name], SIZES[name]) and stack.dtype == np.float32
                    assert 0 <= stack.min() and stack.max() <= 1
                assert fm.window == classifier.crop_window(astronaut_face, astronaut_bgr.shape)
                assert fm.crop.shape == (64, 64)
    finally:
        handle.remove()
    assert hook_count(classifier.model) == 0


def test_cam_maps_of_the_explainer_are_the_class_maps(classifier, astronaut_bgr, astronaut_face):
    explainer = Explainer(classifier, ExplainConfig(mode="cam"))
    crop = classifier.crop(astronaut_bgr, astronaut_face)
    probs, raw = explainer.forward([crop])
    with torch.no_grad():
        expected = classifier.model.class_maps(classifier.preprocess([crop])).numpy()
    np.testing.assert_array_equal(raw["classifier"], expected)
    # Happy's evidence is where the smile is: the mouth region takes more of its map than of the others'.
    face = explainer.classify(astronaut_bgr, [astronaut_face])[0]
    assert face.explanation.stats["class"] == "happy"


def test_log_record_is_compact_and_rounded(classifier, astronaut_bgr, astronaut_face):
    explainer = Explainer(classifier, ExplainConfig(mode="gradcam"))
    tracker = Tracker()
    for i in range(3):
        faces = explainer.smooth(tracker.update(explainer.classify(astronaut_bgr, [astronaut_face]), i / 25))
    record = Analysis(2, 0.08, (512, 512), tuple(faces)).to_json()
    doc = record["faces"][0]["explain"]
    assert doc["mode"] == "gradcam" and doc["class"] == "happy"
    assert doc["keys"] == ["mean", "max", "above", "cx", "cy", "eyes", "nose", "mouth"]
    assert list(doc["layers"]) == list(SIZES)
    for row in doc["layers"].values():
        assert len(row) == 8 and all(v is None or round(v, 3) == v for v in row)
        x1, y1, x2, y2 = faces[0].explanation.window
        assert x1 <= row[3] <= x2 and y1 <= row[4] <= y2
    text = json.dumps(record, separators=(",", ":"))
    assert len(text) < 2500  # 15 layers x 8 numbers plus the face: compact enough to log at 30 fps
    # Explanations do not take part in equality (faces stay plain values).
    assert faces[0] == faces[0].__class__(**{**faces[0].__dict__, "explanation": None})


def test_log_all_classes_and_chosen_stats(classifier, astronaut_bgr, astronaut_face):
    explainer = Explainer(classifier, ExplainConfig(mode="cam", log_classes="all", log_stats=["mean", "regions"]))
    doc = explainer.classify(astronaut_bgr, [astronaut_face])[0].to_json()["explain"]
    assert doc["keys"] == ["mean", "eyes", "nose", "mouth"] and "class" not in doc
    assert len(doc["layers"]["stem1.conv"]) == 1 and len(doc["layers"]["classifier"]) == 7
    none = Explainer(classifier, ExplainConfig(log_stats=[])).classify(astronaut_bgr, [astronaut_face])[0]
    assert none.to_json()["explain"] == {"mode": "cam"}


def test_smoothing_happens_per_track(classifier, astronaut_bgr, astronaut_face):
    explainer = Explainer(classifier, ExplainConfig(mode="activation", smoothing=0.5))
    dark = (astronaut_bgr // 4).astype(np.uint8)
    tracker = Tracker()
    f1 = explainer.smooth(tracker.update(explainer.classify(astronaut_bgr, [astronaut_face]), 0.0))[0]
    raw2 = explainer.classify(dark, [astronaut_face])
    f2 = explainer.smooth(tracker.update(raw2, 0.04))[0]
    assert f2.track_id == f1.track_id
    for old, new, shown in zip(f1.explanation.maps, raw2[0].explanation.maps, f2.explanation.maps):
        np.testing.assert_allclose(shown, old + 0.5 * (new - old), atol=1e-6)
    # Statistics stay those of the frame itself, not of the smoothed display.
    assert f2.explanation.stats == raw2[0].explanation.stats


def test_layers_option_and_errors(classifier):
    explainer = Explainer(classifier, ExplainConfig(layers=["stem1.conv", "block2.sepconv2"]))
    assert explainer.layers == ("stem1.conv", "block2.sepconv2", "classifier")
    with pytest.raises(ConfigError, match="explain.layers: mini-xception has no layer 'conv9'"):
        Explainer(classifier, ExplainConfig(layers=["conv9"]))

    class NoCam:  # a classifier whose last conv does not give one map per class
        name = "plain"
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(8, 7))

    with pytest.raises(ConfigError, match="needs a classifier whose last conv gives one map per class"):
        Explainer(NoCam(), ExplainConfig(mode="cam"))
    assert Explainer(NoCam(), ExplainConfig(mode="gradcam")).layers == ("0",)


def test_works_for_repvgg_plus(astronaut_bgr, astronaut_face):
    """The other classifier family (random weights, deploy form): maps per block, exact CAM from its 1x1 head."""
    from emocam.classify.repvgg import RepVGGClassifier
    from emocam.explain.maps import short_name
    from emocam.nets.repvgg_plus import build_repvgg_plus

    torch.manual_seed(1)
    backend = RepVGGClassifier.__new__(RepVGGClassifier)  # no weight file: the backend's own crop and input
    backend.device, backend.size = torch.device("cpu"), 48
    backend.model = build_repvgg_plus("repvggplus-fer-xs").reparameterize().eval().to(memory_format=torch.channels_last)
    backend.name = "repvgg-fer"
    for mode in MODES:
        explainer = Explainer(backend, ExplainConfig(mode=mode))
        face = explainer.classify(astronaut_bgr, [astronaut_face])[0]
        fm = face.explanation
        assert fm.layers[0] == "blocks.0" and fm.layers[-1] == "classifier" and short_name(fm.layers[3]) == "blk 3"
        assert fm.maps[0].shape == ((7 if mode == "gradcam" else 1), 48, 48) and fm.maps[-1].shape[0] == 7
        assert fm.crop.shape == (48, 48) and fm.window == backend.crop_window(astronaut_face, astronaut_bgr.shape)
    crop = backend.crop(astronaut_bgr, astronaut_face)
    _, raw = Explainer(backend, ExplainConfig(mode="cam")).forward([crop])
    with torch.no_grad():
        expected = backend.model.class_maps(backend.preprocess([crop])).numpy()
    np.testing.assert_allclose(raw["classifier"], expected, atol=1e-6)
    assert hook_count(backend.model) == 0


def test_no_faces_no_work(classifier, astronaut_bgr):
    explainer = Explainer(classifier)
    assert explainer.classify(astronaut_bgr, []) == [] and explainer.smooth([]) == []
    assert EMOTIONS[class_index(Face(np.zeros(4, np.float32), 1.0), None)] == "neutral"
