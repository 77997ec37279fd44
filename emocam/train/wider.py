"""Face box annotations for detector training: WIDER FACE ground-truth files and YOLO txt label folders.

WIDER FACE (wider_face_split/wider_face_{train,val}_bbx_gt.txt), per image:
    <image path relative to WIDER_<split>/images>
    <number of faces>
    x y w h blur expression illumination invalid occlusion pose     (one line per face, pixels)
An image without faces still has one all-zero face line after its "0". The flattened copy in the shared data
names images like wider_0_Parade_Parade_0_125.jpg and keeps them in images/ beside the file.

YOLO txt (images/ + labels/ with the same relative names, .txt): one line per face,
    class cx cy w h [x1 y1 ... x5 y5 | x1 y1 v1 ... x5 y5 v5]
normalised to the image size; landmarks as in yolov7-face, a negative coordinate meaning "not labelled".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emocam.errors import EmoCamError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


@dataclass
class WiderImage:
    name: str  # as written in the file
    boxes: np.ndarray  # (N, 4) float32 x, y, w, h in pixels
    attributes: np.ndarray  # (N, 6) int, WIDER_ATTRIBUTES order

    @property
    def invalid(self) -> np.ndarray:
        return self.attributes[:, WIDER_ATTRIBUTES.index("invalid")].astype(bool)


@dataclass
class LabelledImage:
    """One training image. Boxes x1, y1, x2, y2 and landmarks (N, 5, 2, NaN where unlabelled) are in pixels, or
    in fractions of the image size when `normalised` (YOLO labels; the size is known once the image is read)."""

    path: Path
    boxes: np.ndarray
    landmarks: np.ndarray | None = None
    normalised: bool = False


def parse_wider_gt(path: Path) -> list[WiderImage]:
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    images: list[WiderImage] = []
    i = 0

    def fail(msg: str) -> EmoCamError:
        return EmoCamError(f"{path}:{i + 1}: {msg} (expected WIDER FACE's *_bbx_gt.txt layout)")

    while i < len(lines):
        name = lines[i]
        if not name:
            i += 1
            continue
        i += 1
        try:
            n = int(lines[i])
        except (IndexError, ValueError):
            raise fail("expected a face count after the image name") from None
        i += 1
        rows = []
        for _ in range(max(n, 1)):  # a 0-face image still carries one all-zero line
            try:
                rows.append([int(v) for v in lines[i].split()[:10]])
            except (IndexError, ValueError):
                raise fail("expected 10 integers per face line") from None
            if len(rows[-1]) != 10:
                raise fail("expected 10 integers per face line")
            i += 1
        table = np.array(rows[:n], dtype=np.int64).reshape(-1, 10)
        images.append(WiderImage(name, table[:, :4].astype(np.float32), table[:, 4:]))
    return images


def parse_yolo_labels(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Boxes (N, 4) normalised x1, y1, x2, y2 and landmarks (N, 5, 2) or None when no line carries any."""
    boxes, marks = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            v = [float(x) for x in values]
        except ValueError:
            raise EmoCamError(f"{path}:{n}: expected numbers: class cx cy w h [landmarks]") from None
        if len(v) not in (5, 15, 20):
            raise EmoCamError(f"{path}:{n}: {len(v)} values; expected 5 (class cx cy w h), 15 (+ 5 points x y) "
                              "or 20 (+ 5 points x y visibility)")
        cx, cy, w, h = v[1:5]
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        points = np.full((5, 2), np.nan, dtype=np.float32)
        if len(v) > 5:
            step = 2 if len(v) == 15 else 3
            for k in range(5):
                x, y = v[5 + k * step], v[6 + k * step]
                visible = step == 2 or v[7 + k * step] > 0  # yolov7-face writes an unlabelled point as 0 0 0
                if x >= 0 and y >= 0 and visible:
                    points[k] = (x, y)
        marks.append(points)
    if not boxes:
        return np.zeros((0, 4), np.float32), None
    landmarks = np.stack(marks)
    return np.array(boxes, dtype=np.float32), None if np.isnan(landmarks).all() else landmarks


def wider_training_images(gt_file: Path, images_root: Path, keep_invalid: bool = False) -> list[LabelledImage]:
    """Faces of a WIDER gt file as training images; invalid faces and empty boxes left out."""
    out = []
    for entry in parse_wider_gt(gt_file):
        keep = (entry.boxes[:, 2] > 0) & (entry.boxes[:, 3] > 0)
        if not keep_invalid:
            keep &= ~entry.invalid
        xywh = entry.boxes[keep]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        out.append(LabelledImage(images_root / entry.name, boxes))
    return out


def yolo_training_images(root: Path) -> list[LabelledImage]:
    images_dir, labels_dir = root / "images", root / "labels"
    out = []
    for image in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        label = (labels_dir / image.relative_to(images_dir)).with_suffix(".txt")
        if label.is_file():
            boxes, marks = parse_yolo_labels(label)
        else:  # an image without a label file is a negative, as in yolov5/yolov7
            boxes, marks = np.zeros((0, 4), np.float32), None
        out.append(LabelledImage(image, boxes, marks, normalised=True))
    return out


LAYOUTS_HELP = (
    "expected one of: a WIDER FACE folder (wider_face_split/wider_face_train_bbx_gt.txt + WIDER_train/images/), "
    "a folder with a *_bbx_gt.txt and images/ (flattened names, like eval/boxes), a *_bbx_gt.txt file, "
    "or a YOLO folder (images/ + labels/*.txt with `class cx cy w h` normalised)"
)


def find_training_images(path: Path, split: str = "train") -> tuple[list[LabelledImage], str]:
    """The training images under `path` and a description of the layout found."""
    path = Path(path)
    if path.is_file() and path.name.endswith("_bbx_gt.txt"):
        gt_split = "val" if "_val_" in path.name else "test" if "_test_" in path.name else "train"
        for root in (path.parent / "images", path.parent.parent / f"WIDER_{gt_split}" / "images"):
            if root.is_dir():
                return wider_training_images(path, root), f"WIDER gt {path.name}, images {root}"
        raise EmoCamError(f"{path}: no images/ beside it and no ../WIDER_{gt_split}/images")
    if not path.is_dir():
        raise EmoCamError(f"{path}: no such file or folder; {LAYOUTS_HELP}")
    official = path / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    if official.is_file():
        root = path / f"WIDER_{split}" / "images"
        if not root.is_dir():
            raise EmoCamError(f"{path}: found {official.name} but no WIDER_{split}/images/")
        return wider_training_images(official, root), f"WIDER FACE {split} split in {path}"
    flat = sorted(path.glob("*_bbx_gt.txt"), key=lambda p: (f"_{split}_" not in p.name, p.name))
    if flat and (path / "images").is_dir():
        return wider_training_images(flat[0], path / "images"), f"WIDER gt {flat[0].name}, images {path / 'images'}"
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return yolo_training_images(path), f"YOLO labels in {path}"
    raise EmoCamError(f"{path}: no detector training data found; {LAYOUTS_HELP}")
