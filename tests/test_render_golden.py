"""The explain annotators (heatmap, layers, classes, histograms) pixel for pixel against small stored goldens at
720p and 1080p, plus their behaviour: selection, caching per analysis, the histogram window, time per frame.

Regenerate the goldens after an intended change: EMOCAM_REGEN_GOLDEN=1 pytest tests/test_render_golden.py
(then look at tests/golden/*.png before committing them).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from emocam.explain.maps import FaceMaps
from emocam.render import ANNOTATORS
from emocam.render.base import RenderInfo, placement
from emocam.types import Analysis, Face

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("EMOCAM_REGEN_GOLDEN") == "1"
NAMES = ("heatmap", "layers", "classes", "histograms")
SIZE = (1280, 720)  # the analysed frame; the 1080p scene is drawn at 1.5x
PROBS = np.array([0.03, 0.01, 0.04, 0.62, 0.05, 0.08, 0.17], np.float32)


def blob(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-(((xs + 0.5) / w - cx) ** 2 + ((ys + 0.5) / h - cy) ** 2) / (2 * r * r)).astype(np.float32)


def face_picture() -> np.ndarray:
    img = np.full((64, 64), 60, np.uint8)
    cv2.ellipse(img, (32, 34), (20, 26), 0, 0, 360, 170, -1)
    for x in (24, 40):
        cv2.circle(img, (x, 28), 3, 40, -1)
    cv2.ellipse(img, (32, 46), (8, 4), 0, 0, 180, 40, 2)
    return img


def synthetic_face(shift: float = 0.0, track: int = 1) -> Face:
    layers = ("stem1.conv", "block1.sepconv2", "block2.shortcut", "block3.sepconv1", "block4.sepconv2",
              "classifier")
    maps = (
        (0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, 32 * 32)).reshape(1, 32, 32)).astype(np.float32),
        blob(30, 30, 0.35 + shift, 0.42, 0.08)[None] + blob(30, 30, 0.65, 0.42, 0.08)[None],
        blob(15, 15, 0.5, 0.6 + shift, 0.15)[None],
        blob(15, 15, 0.5, 0.72, 0.1)[None],
        blob(8, 8, 0.5 - shift, 0.7, 0.2)[None],
        np.stack([blob(4, 4, 0.15 + 0.12 * c, 0.2 + 0.1 * (c % 3) + shift, 0.3) for c in range(7)]),
    )
    maps = tuple(np.clip(m, 0, 1).astype(np.float32) for m in maps)
    box = np.array([540, 220, 740, 470], np.float32)
    fm = FaceMaps("gradcam", layers, maps, (500, 210, 780, 490), face_picture())
    return Face(box, 0.99, None, PROBS, track, explanation=fm)


def analysis(i: int = 0, shift: float = 0.0) -> Analysis:
    return Analysis(i, i / 25, SIZE, (synthetic_face(shift),))


def background(height: int) -> np.ndarray:
    w = height * 16 // 9
    ys, xs = np.mgrid[0:height, 0:w].astype(np.float32)
    b = 50 + 110 * ys / height + 40 * xs / w  # smooth: blending shows, and the PNG goldens stay small
    return np.stack([b, 0.8 * b + 20, 150 - 0.5 * b], axis=2).astype(np.uint8)


def render(name: str, height: int, selection: dict | None = None, options: dict | None = None) -> np.ndarray:
    cls = ANNOTATORS.get(name)
    annotator = cls(cls.Options.model_validate(options or {}))
    scene = background(height)
    info = RenderInfo({}, "test", selection or {})
    if name == "histograms":  # a few seconds of analyses first, so the histograms have a history
        for i in range(12):
            annotator.annotate(scene.copy(), analysis(i, 0.02 * (i % 4)), info)
    annotator.annotate(scene, analysis(12, 0.03), info)
    return scene


def small(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("height", [720, 1080])
@pytest.mark.parametrize("name", NAMES)
def test_matches_golden(name, height):
    got = small(render(name, height))
    path = GOLDEN / f"{name}_{height}p.png"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        cv2.imwrite(str(path), got, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert path.is_file(), f"no golden {path}: run EMOCAM_REGEN_GOLDEN=1 pytest {__file__}"
    want = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert want.shape == got.shape
    diff = np.abs(want.astype(np.int16) - got.astype(np.int16))
    # Room for anti-aliasing differences between OpenCV builds, none for a moved or missing element.
    assert diff.mean() < 0.5 and (diff > 24).mean() < 0.003, (float(diff.mean()), float((diff > 24).mean()))


@pytest.mark.parametrize("name", NAMES)
def test_draws_something_only_where_it_should(name):
    plain = background(720)
    drawn = render(name, 720)
    changed = np.argwhere(np.any(drawn != plain, axis=2))
    assert len(changed) > 2000
    (y1, x1), (y2, x2) = changed.min(axis=0), changed.max(axis=0)
    if name == "heatmap":  # only inside the crop window (500, 210, 780, 490)
        assert x1 >= 500 and y1 >= 210 and x2 < 780 and y2 < 490
    else:  # an inset in its corner, clear of the face in the middle
        corner = ANNOTATORS.get(name).Options().corner
        assert (x2 < 640) if corner.endswith("left") else (x1 > 640)
        assert (y2 < 360) if corner.startswith("top") else (y1 > 360)
    nothing = Analysis(3, 0.1, SIZE, (replace(synthetic_face(), explanation=None),))
    scene = plain.copy()
    ANNOTATORS.get(name)().annotate(scene, nothing, RenderInfo())
    np.testing.assert_array_equal(scene, plain)


def test_selection_overrides_the_preset_and_class_follows_the_prediction():
    by_selection = render("heatmap", 720, {"layer": 1, "class": "sad"})
    by_preset = render("heatmap", 720, {}, {"layer": 1, "class": "sad"})
    np.testing.assert_array_equal(by_selection, by_preset)
    assert not np.array_equal(by_selection, render("heatmap", 720))
    # Default class = the predicted one (happy): the same as naming it.
    np.testing.assert_array_equal(render("heatmap", 720), render("heatmap", 720, {"class": "happy"}))
    # The class strip of a class-agnostic layer falls back to the class layer.
    np.testing.assert_array_equal(render("classes", 720, {"layer": 0}), render("classes", 720))
    # A class-agnostic layer has one map: every class shows it.
    np.testing.assert_array_equal(render("heatmap", 720, {"layer": 0, "class": "sad"}),
                                  render("heatmap", 720, {"layer": 0, "class": "fear"}))


def test_inset_position_comes_from_the_preset():
    top_left = render("layers", 720)
    moved = render("layers", 720, options={"corner": "bottom-right", "offset": [20, 10]})
    changed = np.argwhere(np.any(moved != background(720), axis=2))
    (y1, x1), (y2, x2) = changed.min(axis=0), changed.max(axis=0)
    assert x1 > 640 and y1 > 360 and x2 == 1280 - 10 - 20 - 1 and y2 == 720 - 10 - 10 - 1
    assert not np.array_equal(top_left, moved)


@pytest.mark.parametrize("name", NAMES)
def test_prepared_once_per_analysis_insets_at_most_refresh_hz(name, monkeypatch):
    cls = ANNOTATORS.get(name)
    annotator = cls()
    method = "_prepare" if name == "heatmap" else "_draw"
    calls = []
    original = getattr(annotator, method)
    monkeypatch.setattr(annotator, method, lambda *a, **k: calls.append(1) or original(*a, **k))
    scene = background(720)
    for _ in range(5):  # the same analysis on five frames
        annotator.annotate(scene.copy(), analysis(0), RenderInfo())
    assert len(calls) == 1
    annotator.annotate(scene.copy(), analysis(1), RenderInfo())  # 40 ms later
    # The heatmap follows every analysis; an inset waits for its refresh period (10 Hz: 100 ms).
    assert len(calls) == (2 if name == "heatmap" else 1)
    annotator.annotate(scene.copy(), analysis(3), RenderInfo())  # 120 ms after the last drawing
    annotator.annotate(scene.copy(), analysis(3), RenderInfo({}, "", {"class": "sad"}))  # a selection: at once
    assert len(calls) == (4 if name == "heatmap" else 3)
    gone = Analysis(4, 4 / 25, SIZE, ())
    out = scene.copy()
    annotator.annotate(out, gone, RenderInfo({}, "", {"class": "sad"}))  # the face is gone: so is the inset
    np.testing.assert_array_equal(out, scene)


def test_histograms_keep_a_sliding_window():
    annotator = ANNOTATORS.get("histograms")()  # window_s = 5
    scene = background(720)
    for i in range(250):  # 10 s at 25 analyses per second, each drawn on two frames
        a = Analysis(i, i / 25, SIZE, (synthetic_face(0.01 * (i % 5)),))
        annotator.annotate(scene, a, RenderInfo())
        annotator.annotate(scene, a, RenderInfo())
    assert 120 <= len(annotator._window) <= 126
    # Counts of the class layer's 16 values per class, one unit per analysis, summed over the window.
    np.testing.assert_allclose(annotator._sum.sum(axis=1), len(annotator._window))
    expected = sum(c for _, c in annotator._window)
    np.testing.assert_allclose(annotator._sum, expected, atol=1e-9)
    annotator.annotate(scene, Analysis(251, 10.04, SIZE, (synthetic_face(track=2),)), RenderInfo())
    assert len(annotator._window) == 1  # another face: a new history


@pytest.mark.parametrize("height", [720, 1080])
def test_cheap_enough_for_30_fps(height):
    """A frame that reuses the prepared analysis costs little; a new analysis a few ms at most (2-core laptop)."""
    info = RenderInfo()
    for name in NAMES:
        annotator = ANNOTATORS.get(name)()
        scene = background(height)
        a = analysis(0)
        annotator.annotate(scene.copy(), a, info)
        started = time.perf_counter()
        for _ in range(20):
            annotator.annotate(scene, a, info)
        per_frame = (time.perf_counter() - started) / 20
        assert per_frame < 0.003, (name, per_frame)
        started = time.perf_counter()
        for i in range(10):
            annotator.annotate(scene, analysis(i + 1), info)
        assert (time.perf_counter() - started) / 10 < 0.030, name



def test_heatmap_opacity_options():
    plain = background(720).astype(np.int16)
    weighted = render("heatmap", 720, {"layer": 4}).astype(np.int16)
    floor = render("heatmap", 720, {"layer": 4}, {"min_value": 0.5}).astype(np.int16)
    flat = render("heatmap", 720, {"layer": 4}, {"weighted": False, "alpha": 0.5}).astype(np.int16)
    window = (slice(210, 490), slice(500, 780))
    changed = lambda img: np.any(img[window] != plain[window], axis=2).mean()  # noqa: E731
    # Weighted: faint where the map is weak; a floor clears more of the window; uniform alpha: the same area (where
    # the map is above the floor), at full opacity.
    assert changed(floor) < 0.5 * changed(weighted) and changed(flat) == changed(weighted) > 0.5
    assert np.abs(flat[window] - plain[window]).mean() > np.abs(weighted[window] - plain[window]).mean()


def test_a_camera_of_another_aspect_is_letterboxed_and_overlays_stay_on_the_face():
    # a 4:3 camera under a 16:9 output: the frame is scaled 1.5x into the middle 960 columns, bars either side
    at = placement((640, 480), (1280, 720))
    assert (at.scale, at.x, at.y, at.width, at.height) == (1.5, 160, 0, 960, 720)
    landmarks = np.array([[250, 350], [350, 350], [300, 380], [260, 420], [340, 420]], np.float32)
    face = Face(np.array([200, 300, 400, 450], np.float32), 0.99, landmarks, PROBS, 1)
    seen = Analysis(0, 0.0, (640, 480), (face,))
    scene = np.zeros((720, 1280, 3), np.uint8)
    ANNOTATORS.get("boxes")(ANNOTATORS.get("boxes").Options(landmarks=True)).annotate(scene, seen)
    drawn = np.argwhere(np.any(scene > 0, axis=2))
    (y1, x1), (y2, x2) = drawn.min(axis=0), drawn.max(axis=0)
    # the box is at 1.5 x (200, 300, 400, 450) + (160, 0) = (460, 450, 760, 675), give or take its thickness
    assert abs(x1 - 460) <= 2 and abs(y1 - 450) <= 2 and abs(x2 - 760) <= 2 and abs(y2 - 675) <= 2
    nose = scene[380 * 3 // 2 - 1:380 * 3 // 2 + 2, 300 * 3 // 2 + 159:300 * 3 // 2 + 162]
    assert nose.any()  # the landmarks moved with it
    window = replace(synthetic_face(), box=face.box, explanation=replace(synthetic_face().explanation,
                                                                        window=(180, 280, 420, 470)))
    heat = np.zeros((720, 1280, 3), np.uint8)
    ANNOTATORS.get("heatmap")().annotate(heat, Analysis(0, 0.0, (640, 480), (window,)), RenderInfo())
    drawn = np.argwhere(np.any(heat > 0, axis=2))
    (y1, x1), (y2, x2) = drawn.min(axis=0), drawn.max(axis=0)
    assert x1 >= 430 and y1 >= 420 and x2 < 790 and y2 < 705  # inside 1.5 x the window + (160, 0)
    assert x2 - x1 > 300 and y2 - y1 > 250


def test_the_pipeline_letterboxes_a_frame_of_another_aspect():
    from emocam.pipeline import Pipeline
    from emocam.sources import Frame

    pipeline = Pipeline.__new__(Pipeline)  # only the scene geometry is under test
    pipeline.output_size = (1280, 720)
    scene = pipeline._scene(Frame(np.full((480, 640, 3), 200, np.uint8), 0, 0.0))
    assert scene.shape == (720, 1280, 3)
    assert (scene[:, :160] == 0).all() and (scene[:, 1120:] == 0).all() and (scene[:, 160:1120] == 200).all()


def test_a_face_at_the_top_edge_gets_one_label_below_its_box():
    face = Face(np.array([500, 5, 700, 250], np.float32), 0.99, None, PROBS, 1)
    scene = np.zeros((720, 1280, 3), np.uint8)
    ANNOTATORS.get("labels")().annotate(scene, Analysis(0, 0.0, (1280, 720), (face,)))
    rows = np.flatnonzero(scene.any(axis=(1, 2)))
    assert rows.min() >= 250 and rows.max() < 290  # one label, just below the box; none clamped over the face
