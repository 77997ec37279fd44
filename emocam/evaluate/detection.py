"""Face detection metrics: AP at IoU 0.5 (PASCAL VOC all-point interpolation) with ignore regions.

Pure numpy on per-image boxes, so any detector (or a file of saved detections) can be scored the same way.
Boxes are (N, 4) arrays of x1, y1, x2, y2 in continuous pixel coordinates (area = (x2 - x1) * (y2 - y1)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

IOU_THRESHOLD = 0.5
# Face-width bin edges in pixels for the recall breakdown: <10, 10-20, 20-40, 40-80, >=80.
SIZE_EDGES: tuple[float, ...] = (10, 20, 40, 80)

TP, FP, IGNORED = 1, 0, -1


@dataclass
class ImageDetections:
    """One image: its ground-truth faces, regions whose detections count neither way, and what a detector found."""

    gt: np.ndarray
    ignore: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.gt = _boxes(self.gt)
        self.ignore = _boxes(self.ignore)
        self.boxes = _boxes(self.boxes)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(self.scores) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")


@dataclass
class SizeBin:
    low: float
    high: float  # math.inf for the last bin
    n_gt: int
    found: int
    # AP of the faces in this bin: faces of other widths count as ignore regions, and so do detections of other
    # widths that find no face of this bin (COCO's treatment of its area ranges).
    ap: float | None = None

    @property
    def name(self) -> str:
        if self.low == 0:
            return f"<{self.high:g}"
        return f">={self.low:g}" if math.isinf(self.high) else f"{self.low:g}-{self.high:g}"

    @property
    def recall(self) -> float | None:
        return self.found / self.n_gt if self.n_gt else None


@dataclass
class DetectionMetrics:
    ap: float | None  # None when there is no ground truth to find
    recall: float | None  # at all detections
    precision: float | None  # at all detections, ignored ones left out
    n_gt: int
    n_ignore: int  # ignore regions, including ground truth turned into ignore by min_size or min_height
    n_detections: int
    true_positives: int
    false_positives: int
    ignored_detections: int
    by_size: list[SizeBin] = field(default_factory=list)
    # The ranked curve the AP integrates (non-ignored detections, best score first).
    curve_recall: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    curve_precision: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_json(self) -> dict:
        return {
            "ap50": _round(self.ap),
            "recall": _round(self.recall),
            "precision": _round(self.precision),
            "n_gt": self.n_gt,
            "n_ignore": self.n_ignore,
            "detections": self.n_detections,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "ignored_detections": self.ignored_detections,
            "by_size": [{"width": b.name, "n_gt": b.n_gt, "found": b.found, "recall": _round(b.recall),
                         "ap50": _round(b.ap)}
                        for b in self.by_size],
        }


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of two box arrays."""
    a, b = _boxes(a), _boxes(b)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_image(image: ImageDetections, iou_threshold: float = IOU_THRESHOLD,
                loose: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label each detection TP, FP or IGNORED and say which faces were found.

    Detections are taken best score first. Each takes the unmatched face it overlaps most (IoU >= threshold);
    only a detection that finds no such face may fall on an ignore region, which makes it neither true nor false.
    A second detection of an already found face is therefore a false positive, as in VOC.
    `loose` marks detections that are ignored, rather than false, when they find no face.
    """
    order = np.argsort(-image.scores, kind="stable")
    outcome = np.full(len(image.boxes), FP, dtype=np.int8)
    found = np.zeros(len(image.gt), dtype=bool)
    iou_gt = box_iou(image.boxes, image.gt)
    on_ignore = (box_iou(image.boxes, image.ignore) >= iou_threshold).any(axis=1)
    if loose is not None:
        on_ignore |= loose
    for d in order:
        overlap = np.where(found, -1.0, iou_gt[d])
        best = int(np.argmax(overlap)) if len(overlap) else -1
        if best >= 0 and overlap[best] >= iou_threshold:
            outcome[d] = TP
            found[best] = True
        elif on_ignore[d]:
            outcome[d] = IGNORED
    return outcome, found


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (precision made non-increasing in recall), summed where recall changes."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def split_small(gt: np.ndarray, ignore: np.ndarray, min_size: float,
                min_height: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth narrower than min_size or shorter than min_height pixels moves to the ignore regions."""
    gt, ignore = _boxes(gt), _boxes(ignore)
    small = ((gt[:, 2] - gt[:, 0]) < min_size) | ((gt[:, 3] - gt[:, 1]) < min_height)
    return gt[~small], np.concatenate([ignore, gt[small]])


def evaluate_detections(images: Sequence[ImageDetections], iou_threshold: float = IOU_THRESHOLD,
                        min_size: float = 0, size_edges: Sequence[float] = SIZE_EDGES,
                        min_height: float = 0) -> DetectionMetrics:
    """AP, recall and precision over all images, detections of all images ranked together by score.

    Faces narrower than min_size or shorter than min_height pixels count as ignore regions."""
    scores, outcomes, gt_widths, gt_found = [], [], [], []
    n_ignore = 0
    if min_size > 0 or min_height > 0:
        images = [ImageDetections(*split_small(im.gt, im.ignore, min_size, min_height), im.boxes, im.scores)
                  for im in images]
    for image in images:
        outcome, found = match_image(image, iou_threshold)
        scores.append(image.scores)
        outcomes.append(outcome)
        gt_widths.append(image.gt[:, 2] - image.gt[:, 0])
        gt_found.append(found)
        n_ignore += len(image.ignore)

    score = np.concatenate(scores) if scores else np.zeros(0)
    outcome = np.concatenate(outcomes) if outcomes else np.zeros(0, np.int8)
    widths = np.concatenate(gt_widths) if gt_widths else np.zeros(0)
    found = np.concatenate(gt_found) if gt_found else np.zeros(0, bool)
    n_gt = len(widths)

    counted = outcome != IGNORED
    ranked = outcome[counted][np.argsort(-score[counted], kind="stable")]
    tp = np.cumsum(ranked == TP)
    fp = np.cumsum(ranked == FP)
    n_tp, n_fp = (int(tp[-1]), int(fp[-1])) if len(ranked) else (0, 0)
    curve_recall = tp / n_gt if n_gt else np.zeros(len(ranked))
    curve_precision = tp / np.maximum(tp + fp, 1)

    edges = [0.0, *size_edges, math.inf]
    bins = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (widths >= low) & (widths < high)
        bins.append(SizeBin(low, high, int(inside.sum()), int(found[inside].sum()),
                            _ap_in_width_range(images, low, high, iou_threshold) if inside.any() else None))

    return DetectionMetrics(
        ap=voc_ap(curve_recall, curve_precision) if n_gt else None,
        recall=n_tp / n_gt if n_gt else None,
        precision=n_tp / (n_tp + n_fp) if n_tp + n_fp else None,
        n_gt=n_gt,
        n_ignore=n_ignore,
        n_detections=len(outcome),
        true_positives=n_tp,
        false_positives=n_fp,
        ignored_detections=int((~counted).sum()),
        by_size=bins,
        curve_recall=curve_recall,
        curve_precision=curve_precision,
    )


def _ap_in_width_range(images: Sequence[ImageDetections], low: float, high: float, iou_threshold: float) -> float:
    scores, outcomes, n_gt = [], [], 0
    for image in images:
        width = image.gt[:, 2] - image.gt[:, 0]
        inside = (width >= low) & (width < high)
        det_width = image.boxes[:, 2] - image.boxes[:, 0]
        loose = (det_width < low) | (det_width >= high)
        ranged = ImageDetections(image.gt[inside], np.concatenate([image.ignore, image.gt[~inside]]),
                                 image.boxes, image.scores)
        outcome, _ = match_image(ranged, iou_threshold, loose)
        scores.append(image.scores)
        outcomes.append(outcome)
        n_gt += int(inside.sum())
    score, outcome = np.concatenate(scores), np.concatenate(outcomes)
    counted = outcome != IGNORED
    ranked = outcome[counted][np.argsort(-score[counted], kind="stable")]
    tp, fp = np.cumsum(ranked == TP), np.cumsum(ranked == FP)
    return voc_ap(tp / n_gt, tp / np.maximum(tp + fp, 1))


def _boxes(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1, 4)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)
