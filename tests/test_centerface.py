"""CenterFace (ONNX through OpenCV) and its frame-to-frame variant, on real images and video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from emocam.detect import DETECTORS
from emocam.detect.centerface import WEIGHTS, CenterFaceDetector, CenterFaceNet, CenterFaceOptions, decode
from emocam.detect.centerface_track import CenterFaceTrackDetector, CenterFaceTrackOptions
from emocam.evaluate.detection import box_iou
from emocam.nets.onnx_graph import OnnxGraph, graph_from_onnx
from emocam.weights import WeightStore
from media import assert_the_astronauts_face, video_frames

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def weights(models_dir) -> WeightStore:
    store = WeightStore(models_dir)
    if WEIGHTS not in store.manifest():
        pytest.skip(f"no {WEIGHTS} in {models_dir}: run `emocam models pull`")
    return store


@pytest.fixture(scope="module")
def detector(weights) -> CenterFaceDetector:
    return CenterFaceDetector(CenterFaceOptions(), CPU, weights)


def boxes_of(faces) -> np.ndarray:
    return np.array([f.box for f in faces], np.float64).reshape(-1, 4)


def read(data_dir, *parts) -> np.ndarray:
    return cv2.imread(str(data_dir.joinpath("eval", *parts)))


def test_decode_reads_centre_size_offset_and_landmarks():
    """One peak on the stride-4 grid: the box is centred on its cell plus offset, sized exp(size) * 4."""
    heat = np.zeros((10, 12), np.float32)
    size = np.zeros((2, 10, 12), np.float32)
    offset = np.zeros((2, 10, 12), np.float32)
    marks = np.zeros((10, 10, 12), np.float32)
    heat[5, 3] = 0.9
    heat[5, 4] = 0.6  # the same face one cell on: suppressed
    size[:, 5, 3:5] = np.log([[5.0], [3.0]])  # 20 px high, 12 px wide
    offset[:, 5, 3] = (0.25, -0.5)  # y, x in cells
    marks[0::2, 5, 3] = 0.5  # landmarks' y: half the box height down
    marks[1::2, 5, 3] = np.linspace(0, 1, 5)[:, None].ravel()  # x: left edge to right edge
    rows = decode(heat, size, offset, marks, 0.5, 0.3, (48, 40))
    assert rows.shape == (1, 15)
    cx, cy = (3 - 0.5 + 0.5) * 4, (5 + 0.25 + 0.5) * 4
    np.testing.assert_allclose(rows[0, :5], [cx - 6, cy - 10, cx + 6, cy + 10, 0.9], atol=1e-5)
    points = rows[0, 5:].reshape(5, 2)
    np.testing.assert_allclose(points[:, 0], np.linspace(cx - 6, cx + 6, 5), atol=1e-5)
    np.testing.assert_allclose(points[:, 1], cy, atol=1e-5)
    assert decode(heat, size, offset, marks, 0.95, 0.3, (48, 40)).shape == (0, 15)


def test_registered_with_strict_options():
    assert DETECTORS.get("centerface") is CenterFaceDetector
    assert DETECTORS.get("centerface-track") is CenterFaceTrackDetector
    with pytest.raises(ValueError):
        CenterFaceOptions(threshold=2)
    with pytest.raises(ValueError):
        CenterFaceTrackOptions(search_every=0)
    with pytest.raises(ValueError):
        CenterFaceOptions(trheshold=0.5)


def test_one_face_on_the_astronaut(detector, astronaut_bgr):
    assert_the_astronauts_face(detector.detect(astronaut_bgr), min_score=0.8)


def test_group_photo_no_faces_blank_and_bad_images(detector, data_dir):
    faces = detector.detect(read(data_dir, "group_photos", "pyfeat_multi_face.jpg"))
    assert len(faces) == 5
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert detector.detect(read(data_dir, "negatives", "fer_no-faces.jpg")) == []
    assert detector.detect(np.full((360, 640, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((30, 50, 3), np.uint8)) == []  # padded up to the network's multiple of 32
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(np.zeros((64, 64), np.uint8))
    assert set(detector.weights_sha256) == {WEIGHTS}


def test_first_frame_after_reset_is_a_full_search(weights, detector, data_dir):
    tracker = CenterFaceTrackDetector(CenterFaceTrackOptions(), CPU, weights)
    for name in (("group_photos", "pyfeat_multi_face.jpg"), ("boxes", "images", "wider_0_Parade_Parade_0_43.jpg")):
        image = read(data_dir, *name)
        tracker.reset()
        ours, theirs = tracker.detect(image), detector.detect(image)
        assert len(ours) == len(theirs) >= 5
        np.testing.assert_array_equal(boxes_of(ours), boxes_of(theirs))


def test_holds_the_faces_of_a_still_scene_between_searches(weights, data_dir):
    image = read(data_dir, "group_photos", "pyfeat_multi_face.jpg")
    image = cv2.resize(image, (640, round(640 * image.shape[0] / image.shape[1])))
    tracker = CenterFaceTrackDetector(CenterFaceTrackOptions(search_every=1000), CPU, weights)
    first = tracker.detect(image)
    assert len(first) == 5
    for _ in range(20):  # crops alone, no search
        later = tracker.detect(image)
        assert len(later) == 5
        assert (box_iou(boxes_of(first), boxes_of(later)).max(1) > 0.75).all()  # no drift, no swap


def test_on_real_video_finds_what_a_full_search_finds(weights, detector, data_dir):
    """A cartoon without faces, then a man at webcam distance who appears and moves: against a full search of
    every frame, the tracker finds >= 95 % of the faces and adds none, and a face that appears is found within
    one search period."""
    options = CenterFaceTrackOptions()
    tracker = CenterFaceTrackDetector(options, CPU, weights)
    expected = found = extra = 0
    first_full = first_ours = None
    for i, frame in enumerate(video_frames(data_dir / "eval" / "videos" / "pyfeat_noface_face.mov")):
        ours, theirs = boxes_of(tracker.detect(frame)), boxes_of(detector.detect(frame))
        hit = box_iou(theirs, ours).max(1) >= 0.5 if len(ours) else np.zeros(len(theirs), bool)
        expected += len(theirs)
        found += int(hit.sum())
        extra += len(ours) - int(hit.sum())
        first_full = i if first_full is None and len(theirs) else first_full
        first_ours = i if first_ours is None and len(ours) else first_ours
    assert expected > 50
    assert found / expected >= 0.95
    assert extra <= 0.02 * expected
    assert first_full is not None and first_ours - first_full < options.search_every


def test_a_new_frame_size_starts_over(weights, data_dir):
    image = read(data_dir, "group_photos", "facerec_two_people.jpg")
    tracker = CenterFaceTrackDetector(CenterFaceTrackOptions(search_every=1000), CPU, weights)
    assert len(tracker.detect(image)) == 2
    small = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2))
    faces = tracker.detect(small)
    assert len(faces) == 2
    assert (boxes_of(faces)[:, 2] <= small.shape[1]).all()


def test_the_torch_graph_computes_what_opencv_computes(weights, data_dir):
    """On a GPU the ONNX graph runs in torch instead of OpenCV: both read the same file, so on the CPU their four
    output maps must agree."""
    path = weights.path(WEIGHTS)
    image = cv2.resize(read(data_dir, "group_photos", "pyfeat_multi_face.jpg"), (320, 192))
    blob = cv2.dnn.blobFromImages([image, image[:, ::-1].copy()], 1.0, (320, 192), (0, 0, 0), swapRB=True)
    expected = CenterFaceNet(path, CPU).forward(blob)
    graph = OnnxGraph(graph_from_onnx(path.read_bytes())).eval()
    with torch.inference_mode():
        got = [t.numpy() for t in graph(torch.from_numpy(blob))]
    assert [g.shape for g in got] == [e.shape for e in expected] and expected[0].shape == (2, 1, 48, 80)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-4 * max(1.0, float(np.abs(e).max())))


def test_graphs_with_unknown_ops_are_refused():
    from onnx import TensorProto, helper

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])])
    with pytest.raises(ValueError, match="MaxPool is not supported"):
        graph_from_onnx(helper.make_model(graph).SerializeToString())
    with pytest.raises(ValueError, match="not an ONNX model"):
        graph_from_onnx(b"not a protobuf at all")
