"""Emotion training data: what the sources say (samples), and all their faces in memory as one uint8 array.

Sources `emocam train classifier --data` accepts:
- an image folder: <root>/<emotion>/*.{jpg,png,...} with the seven EMOTIONS as folder names (fer2013/train's layout,
  and what `emocam dataset export --to imagefolder` writes);
- AffectNet's CSV (subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks, expression,
  valence, arousal): images relative to the CSV's folder, faces cut out by their box; expressions 7 (contempt) and
  8-10 (none, uncertain, no face) are dropped;
- EmoCam export sessions (a folder with manifest.jsonl, or a root holding such sessions): the reviewed labels,
  i.e. the emotion folder each patch is in now; and the CSV `emocam dataset export --to csv` writes (path,label).
- a `file,label` CSV like eval/emotion/labels.csv (files relative to the CSV's folder), used for validation.

Decoding tens of thousands of JPEGs each epoch would cost more than training a small net on them, so faces are
decoded once, resized to the model's input, and cached as .npy files keyed by the sample list.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emocam.errors import EmoCamError
from emocam.progress import progress
from emocam.types import EMOTIONS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# AffectNet expression code -> EMOTIONS index (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger).
AFFECTNET_CODES = {0: EMOTIONS.index("neutral"), 1: EMOTIONS.index("happy"), 2: EMOTIONS.index("sad"),
                   3: EMOTIONS.index("surprise"), 4: EMOTIONS.index("fear"), 5: EMOTIONS.index("disgust"),
                   6: EMOTIONS.index("angry")}
AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # index into EMOTIONS
    box: tuple[int, int, int, int] | None = None  # x, y, width, height of the face; None: the whole image


@dataclass(frozen=True)
class FaceArrays:
    images: np.ndarray  # (N, S, S) uint8 gray faces
    labels: np.ndarray  # (N,) int64 EMOTIONS indices

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(EMOTIONS))


def label_index(name: str) -> int | None:
    name = name.strip().lower()
    return EMOTIONS.index(name) if name in EMOTIONS else None


def image_folder_samples(root: Path) -> list[Sample]:
    """<root>/<emotion>/<image>; folders that are not one of the seven emotions are ignored."""
    samples = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        label = label_index(folder.name)
        if label is None:
            continue
        samples += [Sample(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return samples


def affectnet_samples(csv_path: Path, image_root: Path | None = None) -> list[Sample]:
    """Rows of an AffectNet CSV with one of the seven shared expressions; boxes as given (x, y, width, height)."""
    root = Path(image_root) if image_root else Path(csv_path).parent
    samples = []
    for line, row in _csv_rows(csv_path, AFFECTNET_COLUMNS):
        try:
            code = int(row["expression"])
            box = tuple(int(round(float(row[k]))) for k in ("face_x", "face_y", "face_width", "face_height"))
        except (ValueError, TypeError, OverflowError):  # not a number, a short row (None), inf
            raise EmoCamError(f"{csv_path}:{line}: expression and face box must be numbers") from None
        if code in AFFECTNET_CODES:
            samples.append(Sample(root / row["subDirectory_filePath"], AFFECTNET_CODES[code], box))  # type: ignore[arg-type]
    return samples


def labels_csv_samples(csv_path: Path, filter_prefix: str | None = None) -> list[Sample]:
    """A `file,label` CSV (eval/emotion/labels.csv) or `path,label` (emocam dataset export --to csv)."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    column = "file" if "file" in header else "path"
    samples = []
    for line, row in _csv_rows(csv_path, (column, "label")):
        name = row[column]
        if filter_prefix and not (name.startswith(filter_prefix) or Path(name).name.startswith(filter_prefix)):
            continue
        label = label_index(row["label"])
        if label is None:
            raise EmoCamError(f"{csv_path}:{line}: unknown label {row['label']!r}; labels: {', '.join(EMOTIONS)}")
        samples.append(Sample(csv_path.parent / name, label))
    return samples


def export_samples(folder: Path) -> list[Sample]:
    """Reviewed patches of EmoCam export sessions: the label is the emotion folder a patch is in now. A patch is
    the face box plus a margin, not square; the face is cut from it with the square window the classifiers crop
    live (fer's: the box squared, 10 px around), so that training sees faces framed as inference does."""
    from emocam.export.dataset import find_sessions

    return [Sample(item.path, EMOTIONS.index(item.label), _live_window(item.row))
            for s in find_sessions(folder) for item in s.items]


def _live_window(row: dict | None) -> tuple[int, int, int, int] | None:
    """fer's window around the row's face box, as x, y, width, height in its patch; None for a picture the
    exporter did not write (used whole)."""
    from emocam.classify.mini_xception import fer_crop_window

    if row is None or not row.get("box") or not row.get("crop"):
        return None
    x1, y1, x2, y2 = fer_crop_window(np.asarray(row["box"], np.float32))
    return x1 - int(row["crop"][0]), y1 - int(row["crop"][1]), x2 - x1, y2 - y1


def find_samples(data: Path) -> list[Sample]:
    """The samples of --data, whatever of the supported layouts it is."""
    data = Path(data)
    if data.is_file() and data.suffix.lower() == ".csv":
        with open(data, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        samples = affectnet_samples(data) if "subDirectory_filePath" in header else labels_csv_samples(data)
    elif data.is_dir() and ((data / "manifest.jsonl").is_file()
                            or any((p / "manifest.jsonl").is_file() for p in data.iterdir() if p.is_dir())):
        samples = export_samples(data)
    elif data.is_dir():
        samples = image_folder_samples(data)
    else:
        raise EmoCamError(f"{data}: neither a folder nor a .csv file")
    if not samples:
        raise EmoCamError(f"{data}: no labelled faces found (expected <emotion>/<image> folders, an AffectNet "
                          f"CSV, a file,label CSV or EmoCam export sessions)")
    return samples


def face_crop(gray: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The face of a gray image: its box made square by growing the short side (zero padding outside)."""
    if box is None:
        return gray
    x, y, w, h = box
    side = max(w, h, 1)
    x, y = x - (side - w) // 2, y - (side - h) // 2
    out = np.zeros((side, side), np.uint8)
    sx1, sy1 = max(x, 0), max(y, 0)
    sx2, sy2 = min(x + side, gray.shape[1]), min(y + side, gray.shape[0])
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y:sy2 - y, sx1 - x:sx2 - x] = gray[sy1:sy2, sx1:sx2]
    return out


def resize_face(gray: np.ndarray, size: int) -> np.ndarray:
    if gray.shape == (size, size):
        return gray
    shrink = gray.shape[0] > size or gray.shape[1] > size
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def decode(sample: Sample, size: int) -> np.ndarray:
    gray = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise EmoCamError(f"{sample.path}: cannot read this image")
    return resize_face(face_crop(gray, sample.box), size)


def load_faces(samples: list[Sample], size: int, cache_dir: Path | None = None, desc: str = "decode") -> FaceArrays:
    """All faces as (N, size, size) uint8, from the cache when the same samples were decoded before."""
    labels = np.array([s.label for s in samples], np.int64)
    cache = None
    if cache_dir is not None:
        # each file's size and modification time too: an image replaced under the same name is decoded again
        key = hashlib.sha256(json.dumps([size] + [[*_identity(s.path), s.label, s.box] for s in samples]).encode())
        cache = Path(cache_dir) / f"faces-{size}-{len(samples)}-{key.hexdigest()[:16]}.npy"
        if cache.is_file():
            images = np.load(cache)
            if images.shape == (len(samples), size, size):
                return FaceArrays(images, labels)
    images = np.empty((len(samples), size, size), np.uint8)
    for i, sample in enumerate(progress(samples, len(samples), desc)):
        images[i] = decode(sample, size)
    if cache is not None:
        save_npy(cache, images)
    return FaceArrays(images, labels)


def _identity(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except OSError:
        return str(path.resolve()), -1, -1  # decode() says what is wrong with it
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save through a temporary file and a rename: a killed run leaves no half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _csv_rows(path: Path, columns: tuple[str, ...]):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise EmoCamError(f"{path}: missing column(s) {', '.join(missing)}")
            for line, row in enumerate(reader, 2):
                yield line, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EmoCamError(f"{path}: {exc}") from None
