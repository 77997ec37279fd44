"""Classifier metrics from true and predicted class indices: accuracy, macro-F1, per-class scores, confusion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from emocam.types import EMOTIONS


@dataclass
class ClassificationMetrics:
    labels: tuple[str, ...]
    confusion: np.ndarray  # (C, C) counts, rows true class, columns predicted class
    precision: np.ndarray  # (C,) 0 where the class was never predicted
    recall: np.ndarray  # (C,) 0 where the class never occurs
    f1: np.ndarray  # (C,)
    support: np.ndarray  # (C,) true count per class

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float | None:
        return float(np.trace(self.confusion)) / self.n if self.n else None

    @property
    def macro_f1(self) -> float | None:
        """Mean F1 over the classes that occur or are predicted (a class absent from both says nothing)."""
        seen = (self.support > 0) | (self.confusion.sum(axis=0) > 0)
        return float(self.f1[seen].mean()) if seen.any() else None

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "accuracy": _round(self.accuracy),
            "macro_f1": _round(self.macro_f1),
            "per_class": {
                name: {"precision": _round(p), "recall": _round(r), "f1": _round(f), "support": int(s)}
                for name, p, r, f, s in zip(self.labels, self.precision, self.recall, self.f1, self.support)
            },
            "confusion": {"labels": list(self.labels), "matrix": self.confusion.tolist()},
        }


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= n_classes):
        raise ValueError(f"class indices must lie in [0, {n_classes})")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           labels: Sequence[str] = EMOTIONS) -> ClassificationMetrics:
    cm = confusion_matrix(y_true, y_pred, len(labels))
    hits = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_div(hits, predicted)
    recall = _safe_div(hits, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return ClassificationMetrics(tuple(labels), cm, precision, recall, f1, support)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=np.asarray(b) > 0)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)
