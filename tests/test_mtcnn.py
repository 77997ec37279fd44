"""The MTCNN port against facenet-pytorch 2.6.0's own code (run from its wheel) and on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from emocam.config import load_config
from emocam.detect import DETECTORS
from emocam.detect.mtcnn import WEIGHTS, MTCNNDetector, MTCNNOptions
from emocam.errors import ConfigError
from emocam.nets.mtcnn import AreaResampler, _integral_torch, integral_image, nms, pyramid_scales
from emocam.weights import WeightStore
from media import assert_the_astronauts_face
from facenet_reference import WHEEL, load_facenet
from facenet_reference import nms as torchvision_nms

CPU = torch.device("cpu")
# Real photos for parity: faces of many sizes, crowds (33 faces), a negative. (folder, file)
PARITY_IMAGES = [
    ("group_photos", "deepface_couple.jpg"),
    ("group_photos", "facerec_two_people.jpg"),
    ("group_photos", "pyfeat_multi_face.jpg"),
    ("boxes/images", "dlib_2007_007763.jpg"),
    ("boxes/images", "wider_0_Parade_Parade_0_43.jpg"),
    ("boxes/images", "wider_0_Parade_marchingband_1_476.jpg"),
    ("negatives", "fer_no-faces.jpg"),
]


@pytest.fixture(scope="module")
def weights(mtcnn_weights) -> WeightStore:
    return mtcnn_weights


@pytest.fixture(scope="module")
def detector(weights) -> MTCNNDetector:
    torch.set_num_threads(2)
    return MTCNNDetector(MTCNNOptions(), CPU, weights)


@pytest.fixture(scope="module")
def facenet(models_dir, tmp_path_factory):
    wheel = models_dir / ".wheels" / WHEEL
    if not wheel.is_file():
        pytest.skip(f"{wheel} not found: run `emocam models pull`")
    return load_facenet(wheel, tmp_path_factory.mktemp("facenet"))


def read(data_dir, folder: str, name: str) -> np.ndarray:
    image = cv2.imread(str(data_dir / "eval" / folder / name))
    assert image is not None, name
    return image


def assert_same_faces(faces, facenet_mtcnn, image_bgr):
    """Our faces equal facenet's, matched one to one (equal scores of 1.0 leave their order open)."""
    boxes, probs, points = facenet_mtcnn.detect(np.ascontiguousarray(image_bgr[:, :, ::-1]), landmarks=True)
    if boxes is None:
        assert faces == []
        return
    assert len(faces) == len(boxes)
    ours = np.stack([np.concatenate([f.box, f.landmarks.ravel()]) for f in faces])
    theirs = np.concatenate([boxes, points.reshape(len(points), -1)], axis=1)
    match = [int(np.abs(ours - row).max(axis=1).argmin()) for row in theirs]
    assert sorted(match) == list(range(len(faces)))
    diff = np.abs(ours[match] - theirs)
    # Float noise in R-/O-net can flip a near-tie in NMS and move a box a little; a logic slip moves them all.
    assert diff.max() < 1.0 and np.median(diff) < 1e-3
    np.testing.assert_allclose([faces[i].score for i in match], probs.astype(np.float64), atol=1e-5)


def test_options_defaults_and_validation():
    opts = MTCNNOptions()
    assert (opts.min_face_size, opts.thresholds, opts.scale_factor) == (40, (0.6, 0.7, 0.7), 0.709)
    assert MTCNNOptions(thresholds=[0.5, 0.6, 0.9]).thresholds == (0.5, 0.6, 0.9)
    for bad in (
        {"min_face_size": 8},
        {"thresholds": [0.6, 0.7]},
        {"thresholds": [0.6, 0.7, 1.5]},
        {"scale_factor": 1.0},
        {"scale_factor": 0.0},
        {"factor": 0.7},
    ):
        with pytest.raises(ValidationError):
            MTCNNOptions(**bad)


def test_registered_and_configurable(tmp_path):
    assert DETECTORS.get("mtcnn") is MTCNNDetector
    empty = tmp_path / "config.toml"
    empty.write_text("")
    cfg = load_config(empty, ["detector.name=mtcnn", "detector.mtcnn.min_face_size=80"])
    assert cfg.detector.options() == MTCNNOptions(min_face_size=80)
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(empty, ["detector.mtcnn.min_size=80"])


def test_nms_is_torchvisions_greedy_nms():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (600, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + rng.uniform(5, 60, (600, 2))], axis=1), dtype=torch.float32)
    # Coarse scores give many ties, which torchvision breaks by input order.
    scores = torch.tensor(rng.integers(0, 20, 600) / 20, dtype=torch.float32)
    for threshold in (0.3, 0.5, 0.7):
        expected = torchvision_nms(boxes, scores, threshold)
        assert torch.equal(nms(boxes, scores, threshold), expected)
        assert torch.equal(nms(boxes, scores, threshold, block=7), expected)


def test_nms_min_mode_is_facenets(facenet):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2)).astype(np.float32)], axis=1)
    scores = rng.permutation(300).astype(np.float32) / 300  # distinct: numpy's sort leaves tie order open
    expected = facenet.detect_face.nms_numpy(boxes, scores, 0.7, "Min")
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.7, mode="min", block=16)
    assert got.tolist() == expected.tolist()


def test_area_resampling_is_interpolate_area_exactly():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    reference = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    sampler = AreaResampler(np.ascontiguousarray(image[:, :, ::-1]), CPU, bgr=True)
    for size in ((30, 40), (98, 132), (150, 61)):
        assert torch.equal(sampler.resize(*size), F.interpolate(reference, size=size, mode="area"))
    y0, x0 = torch.tensor([0, 10, 50]), torch.tensor([0, 100, 7])
    y1, x1 = torch.tensor([97, 30, 53]), torch.tensor([131, 131, 60])
    for size in (24, 48):
        expected = [
            F.interpolate(reference[:, :, a:b, c:d], size=(size, size), mode="area") for a, b, c, d in zip(y0, y1, x0, x1)
        ]
        assert torch.equal(sampler.crops(y0, y1, x0, x1, size), torch.cat(expected))


def test_torch_integral_image_equals_opencvs():
    # CUDA devices take the torch path; it must give the same sums as OpenCV's.
    image = np.random.default_rng(3).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    expected = integral_image(image, CPU)
    assert torch.equal(_integral_torch(torch.from_numpy(image), expected.dtype), expected)


def test_pyramid_starts_at_min_face_and_stops_at_the_window():
    scales = pyramid_scales(360, 640, 40, 0.709)
    assert scales[0] == pytest.approx(12 / 40) and np.allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 360 * scales[-1] >= 12 > 360 * scales[-1] * 0.709
    assert pyramid_scales(20, 20, 40, 0.709) == []


def test_one_face_on_the_astronaut(detector, astronaut_bgr):
    assert_the_astronauts_face(detector.detect(astronaut_bgr), min_score=0.99)


def test_no_face_on_cartoon_creatures(detector, data_dir):
    assert detector.detect(read(data_dir, "negatives", "fer_no-faces.jpg")) == []


def test_blank_tiny_and_bad_images(detector):
    assert detector.detect(np.full((360, 640, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((30, 30, 3), np.uint8)) == []  # smaller than one min_face_size window
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(np.zeros((64, 64), np.uint8))


def test_faces_sorted_by_score_and_weights_named(detector, data_dir):
    faces = detector.detect(read(data_dir, "group_photos", "pyfeat_multi_face.jpg"))
    assert len(faces) == 5
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert set(detector.weights_sha256) == set(WEIGHTS.values())


def test_same_faces_as_facenet_on_the_astronaut(detector, facenet, astronaut_bgr):
    assert_same_faces(detector.detect(astronaut_bgr), facenet.MTCNN(min_face_size=40), astronaut_bgr)


@pytest.mark.parametrize("folder,name", PARITY_IMAGES)
def test_same_faces_as_facenet_on_photos(detector, facenet, data_dir, folder, name):
    image = read(data_dir, folder, name)
    assert_same_faces(detector.detect(image), facenet.MTCNN(min_face_size=40), image)


@pytest.mark.parametrize(
    "name,min_face_size,thresholds,factor",
    [
        ("dlib_2008_002079.jpg", 24, (0.5, 0.6, 0.8), 0.8),
        # Loose thresholds leave overlapping O-net boxes, so the final 'Min' NMS has work to do here.
        ("wider_0_Parade_Parade_0_873.jpg", 40, (0.5, 0.5, 0.5), 0.709),
    ],
)
def test_same_faces_as_facenet_with_other_options(weights, facenet, data_dir, name, min_face_size, thresholds, factor):
    opts = MTCNNOptions(min_face_size=min_face_size, thresholds=thresholds, scale_factor=factor)
    ours = MTCNNDetector(opts, CPU, weights)
    theirs = facenet.MTCNN(min_face_size=min_face_size, thresholds=list(thresholds), factor=factor)
    image = read(data_dir, "boxes/images", name)
    assert_same_faces(ours.detect(image), theirs, image)
