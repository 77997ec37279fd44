"""HOG: the append-only .npy per episode, orientation histograms, and the live HOG inset annotator."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from emocam.export.hog import (HEADER_LEN, append_rows, bin_centers_deg, feature_length, hog_features, hog_input,
                               orientation_histogram, read_shape, truncate_rows)
from emocam.export.options import HogOptions
from emocam.render import ANNOTATORS
from emocam.render.base import RenderInfo
from emocam.types import Analysis, Face

ROOT = Path(__file__).resolve().parents[1]


def test_npy_is_valid_after_every_append(tmp_path):
    path = tmp_path / "episode.npy"
    rng = np.random.default_rng(1)
    rows = rng.random((5, 36), dtype=np.float32)
    for i in range(5):
        assert append_rows(path, rows[i:i + 1]) == i
        np.testing.assert_array_equal(np.load(path), rows[:i + 1])
        np.testing.assert_array_equal(np.load(path, mmap_mode="r"), rows[:i + 1])
    assert path.stat().st_size == HEADER_LEN + rows.nbytes  # the header never grows


def test_a_row_appended_but_not_counted_is_invisible_and_overwritten(tmp_path):
    path = tmp_path / "episode.npy"
    append_rows(path, np.ones((2, 8)))
    with open(path, "ab") as f:  # a kill between writing the data and updating the row count
        f.write(np.full(5, 7, np.float32).tobytes())
    assert np.load(path).shape == (2, 8)
    assert append_rows(path, np.zeros((1, 8))) == 2
    np.testing.assert_array_equal(np.load(path), np.r_[np.ones((2, 8)), np.zeros((1, 8))])
    truncate_rows(path, 1)
    assert read_shape(path) == (1, 8) and np.load(path).shape == (1, 8)


def test_header_has_room_for_huge_row_counts(tmp_path):
    from emocam.export.hog import _header

    assert len(_header(0, 1764)) == len(_header(10 ** 19, 1764)) == HEADER_LEN


def test_hog_features_are_skimage_hog_of_the_resized_gray_patch(astronaut_bgr):
    import cv2
    from skimage.feature import hog

    opts = HogOptions(size=64, orientations=9, pixels_per_cell=8, cells_per_block=2)
    patch = astronaut_bgr[40:200, 160:290]
    gray = cv2.resize(cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY), (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(hog_input(patch, opts), gray)
    expected = hog(gray, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys")
    vector = hog_features(patch, opts)
    assert vector.dtype == np.float32 and len(vector) == feature_length(opts) == 1764
    np.testing.assert_array_equal(vector, expected.astype(np.float32))


def test_orientation_histogram_sums_every_block_cell_per_bin(astronaut_bgr):
    from skimage.feature import hog

    opts = HogOptions(size=48, orientations=6, pixels_per_cell=6, cells_per_block=3)
    patch = astronaut_bgr[40:200, 160:290]
    blocks = hog(hog_input(patch, opts), orientations=6, pixels_per_cell=(6, 6), cells_per_block=(3, 3),
                 block_norm="L2-Hys", feature_vector=False)  # (rows, cols, 3, 3, 6)
    per_bin = blocks.sum(axis=(0, 1, 2, 3))
    hist = orientation_histogram(hog_features(patch, opts)[None], opts)
    np.testing.assert_allclose(hist[0], per_bin / per_bin.sum(), rtol=1e-5)
    assert np.allclose(bin_centers_deg(6), [15, 45, 75, 105, 135, 165])
    # A picture of vertical stripes has horizontal gradients only: all energy in the bin around 0/180 degrees.
    stripes = np.tile(np.repeat(np.array([0, 255], np.uint8), 4), (48, 6))
    hist = orientation_histogram(hog_features(stripes, opts)[None], opts)[0]
    assert hist[0] + hist[-1] > 0.95


# ---- live inset ----------------------------------------------------------------------------------------------

def face_at(box, track=1) -> Face:
    probs = np.eye(7, dtype=np.float32)[3]
    return Face(np.array(box, np.float32), 0.99, None, probs, track)


def test_hog_inset_is_drawn_in_its_corner_from_the_main_face(astronaut_bgr):
    import cv2

    hog = ANNOTATORS.get("hog")(ANNOTATORS.get("hog").Options(corner="bottom-left", size=120))
    scene = np.full((720, 1280, 3), 128, np.uint8)
    scene[200:530, 700:1036] = cv2.resize(astronaut_bgr[0:330, 100:436], (336, 330))
    analysis = Analysis(5, 1.0, (1280, 720), (face_at((780, 260, 870, 380), 1), face_at((10, 10, 30, 30), 2)))
    before = scene.copy()
    hog.annotate(scene, analysis)
    changed = np.argwhere(np.any(scene != before, axis=2))
    (y1, x1), (y2, x2) = changed.min(axis=0), changed.max(axis=0)
    assert x1 == 10 and y2 == 709  # 10 px from the bottom-left corner at 720p
    assert y2 - y1 + 1 == 120 + 8 and x2 - x1 + 1 == 2 * 120 + 12
    # The tiny face (track 2) is not the main one; selecting it by track makes it so.
    first = scene[y1:y2, x1:x1 + 128].copy()
    other = before.copy()
    hog.annotate(other, analysis, RenderInfo(selection={"track": 2}))
    assert not np.array_equal(other[y1:y2, x1:x1 + 128], first)


def test_hog_inset_is_computed_once_per_analysis_and_cheap_between(astronaut_bgr):
    import cv2

    hog = ANNOTATORS.get("hog")()
    scene = np.full((1080, 1920, 3), 128, np.uint8)
    scene[300:795, 1000:1504] = cv2.resize(astronaut_bgr[0:330, 100:436], (504, 495))
    analysis = Analysis(5, 1.0, (1920, 1080), (face_at((1120, 390, 1260, 570)),))
    frames = [scene.copy() for _ in range(30)]
    started = time.perf_counter()
    hog.annotate(frames[0], analysis)
    first_ms = 1000 * (time.perf_counter() - started)
    started = time.perf_counter()
    for frame in frames[1:]:
        hog.annotate(frame, analysis)
    cached_ms = 1000 * (time.perf_counter() - started) / 29
    print(f"hog inset at 1080p: {first_ms:.2f} ms on a new analysis (HOG {hog.compute_ms:.2f} ms), "
          f"{cached_ms:.3f} ms per frame in between")
    assert all(np.array_equal(f, frames[0]) for f in frames[1:])  # the same inset, pasted
    assert cached_ms < 1.0 and hog.compute_ms < 50
    hog.annotate(scene, Analysis(6, 1.1, (1920, 1080), analysis.faces))  # a new analysis: computed again
    assert hog._key[0] == 6


def test_hog_preset_loads():
    from emocam.presets import load_presets

    preset = load_presets(ROOT / "overlays")["hog"]
    assert preset.annotator_names[0] == "hog" and "boxes" in preset.annotator_names
