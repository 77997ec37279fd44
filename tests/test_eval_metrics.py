"""Detection AP and classifier metrics on hand-worked cases, and against independent implementations."""

from __future__ import annotations

import numpy as np
import pytest

from emocam.evaluate.classification import classification_metrics, confusion_matrix
from emocam.evaluate.detection import (
    FP,
    IGNORED,
    TP,
    ImageDetections,
    box_iou,
    evaluate_detections,
    match_image,
    split_small,
    voc_ap,
)

A = [0, 0, 10, 10]
B = [100, 0, 120, 20]
NONE = np.zeros((0, 4))


def image(gt=(), ignore=(), dets=()):
    """dets: (box, score) pairs."""
    boxes = [box for box, _ in dets]
    scores = [score for _, score in dets]
    return ImageDetections(np.array(gt, float).reshape(-1, 4), np.array(ignore, float).reshape(-1, 4),
                           np.array(boxes, float).reshape(-1, 4), np.array(scores, float))


# --- IoU and the AP integral ---------------------------------------------------------------------------------------

def test_box_iou_by_hand():
    # [0,0,10,10] vs [5,0,15,10]: intersection 5*10 = 50, union 100 + 100 - 50 = 150.
    # [0,0,10,10] vs [0,0,10,20]: intersection 100, union 200 -> exactly 0.5. Disjoint -> 0.
    iou = box_iou([A], [[5, 0, 15, 10], [0, 0, 10, 20], B])
    np.testing.assert_allclose(iou, [[1 / 3, 0.5, 0.0]])
    assert box_iou(NONE, [A]).shape == (0, 1)


def test_voc_ap_integrates_the_precision_envelope():
    # Ranked list TP, FP, TP, TP with 4 faces: recall .25 .25 .5 .75, precision 1 .5 .667 .75.
    # Envelope (max precision at this recall or beyond): 1, .75, .75, .75.
    # AP = .25*1 + (.5-.25)*.75 + (.75-.5)*.75 = .25 + .1875 + .1875 = .625 (recall 1 is never reached).
    recall = np.array([0.25, 0.25, 0.5, 0.75])
    precision = np.array([1.0, 0.5, 2 / 3, 0.75])
    assert voc_ap(recall, precision) == pytest.approx(0.625)


def test_iou_of_exactly_one_half_is_a_match():
    outcome, found = match_image(image(gt=[A], dets=[([0, 0, 10, 20], 0.9)]))
    assert outcome.tolist() == [TP] and found.tolist() == [True]


# --- hand-worked AP cases ------------------------------------------------------------------------------------------

def test_perfect_detections_give_ap_one():
    m = evaluate_detections([image(gt=[A, B], dets=[(A, 0.9), (B, 0.8)]), image(gt=[A], dets=[(A, 0.7)])])
    assert (m.ap, m.recall, m.precision) == (1.0, 1.0, 1.0)
    assert (m.n_gt, m.n_detections, m.true_positives, m.false_positives) == (3, 3, 3, 0)


def test_false_positive_ranked_above_true_positive():
    # Ranked: FP (recall 0, precision 0), TP (recall 1, precision 1/2). Envelope at recall 1 is 1/2 -> AP 0.5.
    m = evaluate_detections([image(gt=[A], dets=[(B, 0.9), (A, 0.8)])])
    assert m.ap == pytest.approx(0.5)
    assert (m.recall, m.precision, m.false_positives) == (1.0, 0.5, 1)


def test_false_positive_ranked_below_true_positive_costs_nothing():
    # Ranked: TP (recall 1, precision 1), FP (recall 1, precision 1/2): envelope at recall 1 is 1 -> AP 1.
    m = evaluate_detections([image(gt=[A], dets=[(A, 0.9), (B, 0.8)])])
    assert m.ap == pytest.approx(1.0) and m.precision == 0.5


def test_missed_face_caps_ap_at_recall():
    # Two faces, one found at precision 1: AP = 0.5 * 1 = 0.5, recall 0.5.
    m = evaluate_detections([image(gt=[A, B], dets=[(A, 0.9)])])
    assert m.ap == pytest.approx(0.5) and m.recall == 0.5


def test_detection_on_ignore_box_counts_neither_way():
    # The top detection lies on the ignore box: dropped, so the TP is ranked first -> AP 1.0.
    # Without the ignore box the same detections give FP then TP -> AP 0.5.
    dets = [(B, 0.9), (A, 0.8)]
    m = evaluate_detections([image(gt=[A], ignore=[B], dets=dets)])
    assert m.ap == pytest.approx(1.0)
    assert (m.ignored_detections, m.false_positives, m.n_ignore) == (1, 0, 1)
    assert evaluate_detections([image(gt=[A], dets=dets)]).ap == pytest.approx(0.5)


def test_double_detection_of_one_face_is_a_false_positive():
    # Faces A, B; detections A (.9), A shifted by 1 px (.8, IoU 90/110 = .82), B (.7): TP, FP, TP.
    # recall .5 .5 1, precision 1 .5 .667; envelope 1, .667, .667.
    # AP = .5*1 + .5*(2/3) = 0.8333.
    case = image(gt=[A, B], dets=[(A, 0.9), ([1, 0, 11, 10], 0.8), (B, 0.7)])
    assert match_image(case)[0].tolist() == [TP, FP, TP]
    m = evaluate_detections([case])
    assert m.ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert (m.true_positives, m.false_positives) == (2, 1)


def test_double_detection_on_an_ignore_box_is_ignored():
    # A second detection of a found face that also covers an ignore box is neither true nor false.
    outcome, _ = match_image(image(gt=[A], ignore=[A], dets=[(A, 0.9), (A, 0.8)]))
    assert outcome.tolist() == [TP, IGNORED]


def test_an_unmatched_face_wins_over_an_ignore_box():
    # The detection overlaps the ignore box more (IoU 1) than the face (IoU 100/150 = .67) but takes the face.
    outcome, found = match_image(image(gt=[[0, 0, 10, 15]], ignore=[A], dets=[(A, 0.9)]))
    assert outcome.tolist() == [TP] and found.all()


def test_detection_takes_the_best_overlapping_unmatched_face():
    # Two faces overlap one detection: [0,0,10,10] IoU 1 with the detection, [0,0,10,18] IoU 100/180 = .56.
    # The detection takes the first; a second detection equal to the second face then finds it.
    outcome, found = match_image(image(gt=[[0, 0, 10, 18], A], dets=[(A, 0.9), ([0, 0, 10, 18], 0.8)]))
    assert outcome.tolist() == [TP, TP] and found.tolist() == [True, True]


def test_min_size_turns_small_faces_into_ignore():
    # Faces 10 px (A) and 20 px (B) wide; one detection on each, the small one ranked first.
    # All faces: both found -> AP 1. Detections on B only -> AP .5 with all faces, 1.0 with min-size 15.
    both = image(gt=[A, B], dets=[(A, 0.9), (B, 0.8)])
    only_b = image(gt=[A, B], dets=[(B, 0.8)])
    assert evaluate_detections([both]).ap == pytest.approx(1.0)
    assert evaluate_detections([only_b]).ap == pytest.approx(0.5)
    m = evaluate_detections([only_b], min_size=15)
    assert m.ap == pytest.approx(1.0) and (m.n_gt, m.n_ignore) == (1, 1)
    m = evaluate_detections([both], min_size=15)
    assert m.ap == pytest.approx(1.0) and m.ignored_detections == 1 and m.false_positives == 0


def test_min_height_turns_short_faces_into_ignore():
    # A wide, short face (40x10) and a narrow, tall one (10x40): --min-height 20 ignores the first only, by height
    # alone (min_size, by width, would ignore the second); both together ignore both.
    wide, tall = [0, 0, 40, 10], [100, 0, 110, 40]
    case = image(gt=[wide, tall], dets=[(wide, 0.9), (tall, 0.8)])
    m = evaluate_detections([case], min_height=20)
    assert (m.n_gt, m.n_ignore, m.true_positives, m.ignored_detections) == (1, 1, 1, 1)
    assert [b.n_gt for b in m.by_size] == [0, 1, 0, 0, 0]  # the bins stay by width: the 10 px wide face
    m = evaluate_detections([case], min_size=20)
    assert [b.n_gt for b in m.by_size] == [0, 0, 0, 1, 0]
    assert evaluate_detections([case], min_size=20, min_height=20).n_gt == 0
    gt, ignore = split_small(np.array([wide, tall], float), np.array([B], float), 0, min_height=20)
    assert gt.tolist() == [tall] and ignore.tolist() == [B, wide]


def test_empty_images():
    # An image without faces or detections changes nothing; a detection on an image without faces is a FP
    # ranked first here -> FP, TP -> AP 0.5.
    base = image(gt=[A], dets=[(A, 0.8)])
    assert evaluate_detections([base, image()]).ap == pytest.approx(1.0)
    assert evaluate_detections([base, image(dets=[(A, 0.95)])]).ap == pytest.approx(0.5)
    nothing = evaluate_detections([image(), image(dets=[(A, 0.5)])])
    assert (nothing.ap, nothing.recall, nothing.n_gt, nothing.false_positives) == (None, None, 0, 1)
    assert evaluate_detections([]).ap is None


def test_no_detections_give_zero():
    m = evaluate_detections([image(gt=[A, B])])
    assert (m.ap, m.recall, m.precision) == (0.0, 0.0, None)


def test_recall_by_face_width():
    # Widths 5, 15, 30, 60, 100 (one per bin <10, 10-20, 20-40, 40-80, >=80); found: the 30 and 100 px ones.
    faces = [[0, 0, w, w] for w in (5, 15, 30, 60, 100)]
    shifted = [[x1 + 1000 * i, y1, x2 + 1000 * i, y2] for i, (x1, y1, x2, y2) in enumerate(faces)]
    m = evaluate_detections([image(gt=shifted, dets=[(shifted[2], 0.9), (shifted[4], 0.8)])])
    assert [b.name for b in m.by_size] == ["<10", "10-20", "20-40", "40-80", ">=80"]
    assert [b.n_gt for b in m.by_size] == [1, 1, 1, 1, 1]
    assert [b.recall for b in m.by_size] == [0.0, 0.0, 1.0, 0.0, 1.0]
    # With min-size 20 the two small ones become ignore: their bins are empty, recall None.
    m = evaluate_detections([image(gt=shifted, dets=[(shifted[2], 0.9)])], min_size=20)
    assert [b.recall for b in m.by_size] == [None, None, 1.0, 0.0, 0.0]


def test_json_shape():
    js = evaluate_detections([image(gt=[A], dets=[(A, 0.9)])]).to_json()
    assert js["ap50"] == 1.0 and js["by_size"][0] == {"width": "<10", "n_gt": 0, "found": 0, "recall": None,
                                                         "ap50": None}


# --- against an independent VOC implementation ---------------------------------------------------------------------

def random_case(rng: np.random.Generator, n_images: int) -> list[ImageDetections]:
    """Faces in separate 100 px grid cells (so no detection can reach IoU 0.5 with two faces, where VOC's rule of
    taking the best face even when already matched would differ from ours); detections near faces, duplicates,
    and strays, with distinct random scores."""
    images = []
    for i in range(n_images):
        cells = rng.permutation(16)[: rng.integers(1 if i == 0 else 0, 6)]  # at least one face in all
        gt = []
        for c in cells:
            x, y = 100 * (c % 4), 100 * (c // 4)
            w, h = rng.uniform(15, 80, 2)
            x1, y1 = x + rng.uniform(0, 95 - w), y + rng.uniform(0, 95 - h)
            gt.append([x1, y1, x1 + w, y1 + h])
        dets = []
        for x1, y1, x2, y2 in gt:
            for _ in range(rng.choice([0, 1, 1, 2])):  # missed, found, or found twice
                w, h = x2 - x1, y2 - y1
                jx, jy, s = rng.normal(0, 0.15 * w), rng.normal(0, 0.15 * h), rng.uniform(0.8, 1.25)
                dets.append([x1 + jx, y1 + jy, x1 + jx + s * w, y1 + jy + s * h])
        for _ in range(rng.integers(0, 3)):
            x1, y1 = rng.uniform(0, 350, 2)
            w = rng.uniform(10, 60)
            dets.append([x1, y1, x1 + w, y1 + w])
        images.append(ImageDetections(np.array(gt).reshape(-1, 4), NONE, np.array(dets).reshape(-1, 4),
                                      rng.uniform(0, 1, len(dets))))
    return images


@pytest.mark.parametrize("seed", range(8))
def test_ap_matches_object_detection_metrics(seed):
    metrics = pytest.importorskip("podm.metrics", reason="pip install object-detection-metrics (test extra)")
    rng = np.random.default_rng(seed)
    images = random_case(rng, n_images=int(rng.integers(1, 12)))
    golds, preds = [], []
    for i, im in enumerate(images):
        golds += [metrics.BoundingBox.of_bbox(i, "face", *b) for b in im.gt]
        preds += [metrics.BoundingBox.of_bbox(i, "face", *b, score=s) for b, s in zip(im.boxes, im.scores)]
    ref = metrics.get_pascal_voc_metrics(golds, preds, 0.5)["face"]
    ours = evaluate_detections(images)
    assert ours.ap == pytest.approx(ref.ap, abs=1e-12)
    assert (ours.true_positives, ours.false_positives, ours.n_gt) == (ref.tp, ref.fp, ref.num_groundtruth)


# --- classification ------------------------------------------------------------------------------------------------

def test_classification_by_hand():
    # true 0 0 1 2, predicted 0 1 1 1 (3 classes).
    # confusion rows true: [1 1 0], [0 1 0], [0 1 0]; accuracy 2/4.
    # precision: c0 1/1, c1 1/3, c2 never predicted -> 0. recall: c0 1/2, c1 1/1, c2 0/1.
    # F1: c0 2*1*.5/1.5 = 2/3, c1 2*(1/3)/(4/3) = 1/2, c2 0; macro over the 3 classes = (2/3 + 1/2) / 3.
    m = classification_metrics([0, 0, 1, 2], [0, 1, 1, 1], labels=("a", "b", "c"))
    assert m.confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert m.accuracy == 0.5
    np.testing.assert_allclose(m.precision, [1, 1 / 3, 0])
    np.testing.assert_allclose(m.recall, [0.5, 1, 0])
    np.testing.assert_allclose(m.f1, [2 / 3, 0.5, 0])
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.5) / 3)
    assert m.support.tolist() == [2, 1, 1]


def test_macro_f1_leaves_out_classes_absent_from_truth_and_predictions():
    # 7 emotions, only angry (0) and happy (3) occur and are predicted perfectly: macro-F1 1, not 2/7.
    m = classification_metrics([0, 3, 3], [0, 3, 3])
    assert m.macro_f1 == 1.0 and m.accuracy == 1.0
    js = m.to_json()
    assert js["per_class"]["disgust"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert js["confusion"]["labels"][3] == "happy" and js["confusion"]["matrix"][3][3] == 2


def test_empty_and_invalid_input():
    m = classification_metrics([], [])
    assert (m.n, m.accuracy, m.macro_f1) == (0, None, None)
    with pytest.raises(ValueError):
        confusion_matrix([0, 7], [0, 1], 7)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 7)


@pytest.mark.parametrize("seed", range(4))
def test_classification_matches_sklearn(seed):
    skm = pytest.importorskip("sklearn.metrics", reason="pip install scikit-learn (test extra)")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y_true = rng.choice(7, n, p=[0.3, 0.02, 0.1, 0.3, 0.1, 0.08, 0.1])
    y_pred = np.where(rng.uniform(size=n) < 0.6, y_true, rng.integers(0, 7, n))
    m = classification_metrics(y_true, y_pred)
    labels = list(range(7))
    np.testing.assert_array_equal(m.confusion, skm.confusion_matrix(y_true, y_pred, labels=labels))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(m.precision, p)
    np.testing.assert_allclose(m.recall, r)
    np.testing.assert_allclose(m.f1, f)
    np.testing.assert_array_equal(m.support, s)
    assert m.accuracy == pytest.approx(skm.accuracy_score(y_true, y_pred))
    # sklearn's default label set (those in truth or predictions) is the set our macro-F1 averages over.
    assert m.macro_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_confusion_plot_is_a_png(tmp_path):
    import cv2

    from emocam.evaluate.plots import plot_confusion

    cm = confusion_matrix([0, 1, 2, 3, 4, 5, 6, 6], [0, 1, 2, 3, 4, 5, 6, 0], 7)
    out = plot_confusion(cm, ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
                         tmp_path / "sub" / "cm.png", title="test")
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 300
    assert not list(tmp_path.glob("sub/*.part"))
