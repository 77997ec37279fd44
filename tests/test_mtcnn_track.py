"""The frame-to-frame MTCNN: its split search covers the pyramid, and on real video it finds what a full search finds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from emocam.detect import DETECTORS
from emocam.detect.mtcnn import MTCNNDetector, MTCNNOptions
from emocam.detect.mtcnn_track import MTCNNTrackDetector, MTCNNTrackOptions, plan_search
from emocam.evaluate.detection import box_iou
from emocam.nets.mtcnn import CELL, STRIDE, pyramid_scales
from emocam.weights import WeightStore
from media import video_frames

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def weights(mtcnn_weights) -> WeightStore:
    torch.set_num_threads(2)
    return mtcnn_weights


def boxes_of(faces) -> np.ndarray:
    return np.array([f.box for f in faces], np.float64).reshape(-1, 4)


@pytest.mark.parametrize("size", [(360, 640), (480, 640), (640, 360), (270, 480)])
@pytest.mark.parametrize("budget", [5_000, 10_000, 40_000, 400_000])
def test_search_plan_covers_every_window_at_about_the_budget(size, budget):
    height, width = size
    frames = plan_search(height, width, 24, 0.709, budget)
    scales = pyramid_scales(height, width, 24, 0.709)
    periods = []
    for scale in scales:
        level_h = int(height * scale + 1)
        visits = {}  # band -> frames it is searched on
        for f, frame in enumerate(frames):
            for piece in frame:
                if piece.scale == scale:
                    visits.setdefault(piece.rows or (0, level_h), []).append(f)
        assert visits, f"scale {scale} never searched"
        period = len(frames) // len(next(iter(visits.values())))
        for (first, end), on in visits.items():
            assert first % STRIDE == 0 and end - first >= CELL and end <= level_h
            assert on == list(range(on[0], len(frames), period)), "every band once per period, evenly"
        # P-net's windows start on even rows; each must lie inside one band.
        for row in range(0, level_h - CELL + 1, STRIDE):
            assert any(first <= row and row + CELL <= end for first, end in visits), (scale, row)
        periods.append(period)
    assert periods == sorted(periods, reverse=True)  # small levels (near faces) are searched most often
    total = sum(p.area for frame in frames for p in frame) / len(frames)
    assert total <= 2 * budget or periods[0] == 1  # bands overlap; a whole search may be cheaper than the budget
    assert max(sum(p.area for p in frame) for frame in frames) <= 2 * max(total, budget)


def test_registered_with_strict_options(weights):
    assert DETECTORS.get("mtcnn-track") is MTCNNTrackDetector
    with pytest.raises(ValueError):
        MTCNNTrackOptions(search_budget=10)
    with pytest.raises(ValueError):
        MTCNNTrackOptions(track_threshold=1.5)


def test_a_minimum_face_bigger_than_the_frame_finds_nothing_like_plain_mtcnn(weights):
    blank = np.zeros((360, 640, 3), np.uint8)  # what the daemon warms the detector up with
    tracker = MTCNNTrackDetector(MTCNNTrackOptions(min_face_size=400), CPU, weights)
    assert tracker.detect(blank) == tracker.detect(blank) == []
    assert MTCNNDetector(MTCNNOptions(min_face_size=400), CPU, weights).detect(blank) == []


def test_first_frame_after_reset_is_a_full_search(weights, data_dir):
    """A still image (or the first frame of a video) gets exactly the plain backend's faces."""
    tracker = MTCNNTrackDetector(MTCNNTrackOptions(min_face_size=20), CPU, weights)
    plain = MTCNNDetector(MTCNNOptions(min_face_size=20), CPU, weights)
    for name in ("group_photos/pyfeat_multi_face.jpg", "boxes/images/wider_0_Parade_Parade_0_43.jpg"):
        image = cv2.imread(str(data_dir / "eval" / name))
        tracker.reset()
        ours, theirs = tracker.detect(image), plain.detect(image)
        assert len(ours) == len(theirs) >= 5
        np.testing.assert_allclose(boxes_of(ours), boxes_of(theirs), atol=1e-3)


def test_holds_the_faces_of_a_still_scene_through_the_split_search(weights, data_dir):
    image = cv2.imread(str(data_dir / "eval" / "group_photos" / "pyfeat_multi_face.jpg"))
    image = cv2.resize(image, (640, round(640 * image.shape[0] / image.shape[1])))
    tracker = MTCNNTrackDetector(MTCNNTrackOptions(search_budget=5_000), CPU, weights)
    first = tracker.detect(image)
    assert len(first) == 5
    for _ in range(2 * len(tracker._plan) + 1):  # two whole cycles of the split search, and one more frame
        later = tracker.detect(image)
        assert len(later) == 5
        # O-net re-regresses each box every frame: they jitter by a few pixels but neither drift nor swap.
        assert (box_iou(boxes_of(first), boxes_of(later)).max(1) > 0.75).all()


def test_on_real_video_finds_what_a_full_search_finds(weights, data_dir):
    """A cartoon without faces, then a man at webcam distance who appears and moves: against a full MTCNN search
    of every frame, the tracker finds >= 95 % of the faces and adds none."""
    tracker = MTCNNTrackDetector(MTCNNTrackOptions(), CPU, weights)
    plain = MTCNNDetector(MTCNNOptions(), CPU, weights)
    expected = found = extra = 0
    for frame in video_frames(data_dir / "eval" / "videos" / "pyfeat_noface_face.mov"):
        ours, theirs = boxes_of(tracker.detect(frame)), boxes_of(plain.detect(frame))
        hit = box_iou(theirs, ours).max(1) >= 0.5 if len(ours) else np.zeros(len(theirs), bool)
        expected += len(theirs)
        found += int(hit.sum())
        extra += len(ours) - int(hit.sum())
    assert expected > 50
    assert found / expected >= 0.95
    assert extra <= 0.02 * expected


def test_a_new_frame_size_starts_over(weights, data_dir):
    image = cv2.imread(str(data_dir / "eval" / "group_photos" / "facerec_two_people.jpg"))
    tracker = MTCNNTrackDetector(MTCNNTrackOptions(min_face_size=20), CPU, weights)
    assert len(tracker.detect(image)) == 2
    small = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2))
    faces = tracker.detect(small)
    assert len(faces) == 2
    assert (boxes_of(faces)[:, 2] <= small.shape[1] + 5).all()
