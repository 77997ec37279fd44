"""emocam eval classifier|speed|detector: accuracy of the emotion classifier, the time a face costs it, AP@0.5 of
the face detector."""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2
import numpy as np
from loguru import logger

from emocam.argtypes import positive
from emocam.config import Config
from emocam.errors import EmoCamError
from emocam.imageio import UnreadableImage, read_bgr
from emocam.progress import progress
from emocam.types import EMOTIONS

MAX_LISTED = 20  # unreadable files named in the JSON; the count is always complete

CLASSIFIER_HELP = """\
Classify face crops listed in a CSV with a header `file,label` (e.g. eval/emotion/labels.csv) and compare
with the labels. Files are relative to the CSV's folder or to images/ beside it; a label is one of
  {emotions}.
Prints n, accuracy, macro-F1 (mean over the classes that occur or are predicted), per-class
precision/recall/F1/support and the confusion matrix (rows true class, columns predicted class).
images/s counts classifier time only (reading files excluded). Unreadable files are counted and skipped.

--filter-prefix keeps the rows whose file (as written in the CSV, or its file name) starts with the prefix:
the FER2013 PublicTest part of eval/emotion is --filter-prefix fer2013_PublicTest_ (the published
mini-XCEPTION accuracy, ~0.65, is on that split). It works with any CSV, unlike a dataset column."""

SPEED_HELP = """\
Time a face costs each classifier (CPU and wall milliseconds), called as the live path calls it for a
one-face frame: predict_crops with one crop (preprocess, forward pass, softmax), on the face crops of a
`file,label` CSV (--filter-prefix and --limit as for `eval classifier`; labels are not used).

For each --threads count, each classifier first runs --warmup faces; then in each of --rounds rounds every
classifier runs all faces, taking turns in an order that rotates from round to round, so that a slow spell of a
shared machine falls on all of them. Reported: the median round (and the fastest), in ms a face. CPU time is the
process's, all torch threads together; with several threads torch's workers spin while they wait, so compare
classifiers at the same thread count and look at 1 thread for the work itself. Nothing runs on a GPU here unless
runtime.device says so; the numbers are this machine's only."""

DETECTOR_HELP = """\
Detect faces in the images of a CSV with a header `file,x1,y1,x2,y2` (pixels, e.g. eval/boxes/boxes.csv)
and report AP at IoU 0.5 (PASCAL VOC all-point interpolation, detections of all images ranked by score),
recall and precision at all detections, counts, images/s (detector time only) and recall and AP by face width
(a width bin's AP ignores faces of other widths, and detections of other widths that find none of its faces).

Matching, per image, best score first: a detection takes the unmatched face it overlaps most if IoU >= 0.5
(true positive); otherwise, if it overlaps an --ignore box with IoU >= 0.5 it counts neither way; otherwise
it is a false positive (so is a second detection of one face). --min-size PX turns faces narrower than PX,
--min-height PX faces shorter than PX, into ignore boxes.

--as-height H scores each image as if it were a frame H pixels high (e.g. 1080 for a 1080p webcam): the image
and its boxes are scaled by H / image height, and --max-side then applies to that frame, as the live path
applies detector.max_side to a camera frame (the image is resized once, straight to the size detected on).
Boxes, --min-size, --min-height and the width bins are then in that frame's pixels: "webcam-distance faces,
at least 80 px tall in a 1080p frame" is --as-height 1080 --min-height 80 --max-side 640.

--where COLUMN=V1[,V2...] keeps as faces only the --boxes rows whose COLUMN holds one of the values or nothing
(a source without that attribute); the other rows become ignore boxes. With the WIDER attributes of
boxes_full.csv, sharp, unoccluded, typical-pose faces are --where blur=0 --where occlusion=0 --where pose=0.

Images: those named in --boxes and --ignore, plus every file of --images (default: images.csv beside
--boxes, when there is one). An image with no face row is evaluated too: whatever is found there is a
false positive. Unreadable images are counted and left out, their faces with them."""


def register(sub, parents) -> None:
    p = sub.add_parser("eval", parents=parents, help="measure the classifier or the detector on labelled data",
                       description="Measure the emotion classifier (accuracy, macro-F1, confusion) or the face "
                                   "detector (AP@0.5, recall) on labelled data.")
    kinds = p.add_subparsers(dest="eval_kind", metavar="WHAT", required=True)

    c = kinds.add_parser("classifier", parents=parents, help="accuracy and confusion matrix on labelled face crops",
                         description=CLASSIFIER_HELP.format(emotions=", ".join(EMOTIONS)),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--labels", type=Path, required=True, metavar="CSV", help="CSV with columns file,label")
    c.add_argument("--classifier", help="classifier backend (default: classifier.name from config)")
    c.add_argument("--filter-prefix", metavar="P", help="only rows whose file starts with P (see above)")
    c.add_argument("--limit", type=positive, metavar="N", help="only the first N rows (after --filter-prefix)")
    c.add_argument("--plot", type=Path, metavar="PNG", help="draw the confusion matrix into this PNG")
    c.add_argument("--json", action="store_true", help="print one JSON object to stdout")

    s = kinds.add_parser("speed", parents=parents, help="CPU and wall ms a face for one or more classifiers",
                         description=SPEED_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--labels", type=Path, required=True, metavar="CSV", help="CSV with a file column (face crops)")
    s.add_argument("--classifiers", type=_names, metavar="A,B",
                   help="classifier backends, compared with the first (default: every registered one); NAME+mirror "
                        "times NAME with classifier.mirror on, e.g. mini-xception,repvgg-fer-int8+mirror")
    s.add_argument("--filter-prefix", metavar="P", help="only rows whose file starts with P")
    s.add_argument("--limit", type=positive, default=300, metavar="N",
                   help="faces timed (the first N rows, default %(default)s)")
    s.add_argument("--threads", type=_counts, default=[1, 2], metavar="N,M",
                   help="torch thread counts to time at (default: 1,2)")
    s.add_argument("--rounds", type=positive, default=7, metavar="R", help="rounds per thread count (default 7)")
    s.add_argument("--warmup", type=_count, default=50, metavar="N", help="untimed faces first (default 50)")
    s.add_argument("--json", action="store_true", help="print one JSON object to stdout")

    d = kinds.add_parser("detector", parents=parents, help="AP@0.5 and recall on images with face boxes",
                         description=DETECTOR_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--boxes", type=Path, required=True, metavar="CSV", help="CSV with columns file,x1,y1,x2,y2")
    d.add_argument("--ignore", type=Path, metavar="CSV", help="boxes (same columns) whose detections count neither way")
    d.add_argument("--images", type=Path, metavar="CSV",
                   help="CSV with a file column listing every image, faces or not (default: images.csv beside --boxes)")
    d.add_argument("--min-size", type=float, default=0.0, metavar="PX", help="faces narrower than PX count as ignore")
    d.add_argument("--min-height", type=float, default=0.0, metavar="PX",
                   help="faces shorter than PX count as ignore")
    d.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUES",
                   help="only --boxes rows with one of these values (or none) in COLUMN are faces (see above)")
    d.add_argument("--as-height", type=positive, metavar="H",
                   help="treat each image as a frame H pixels high, its boxes scaled with it (see above)")
    d.add_argument("--max-side", type=int, default=0, metavar="PX",
                   help="detect on a copy downscaled to at most PX on the longer side, as the live path does with "
                        "detector.max_side (default: full resolution)")
    d.add_argument("--detector", help="detector backend (default: detector.name from config)")
    d.add_argument("--weights", metavar="FILE",
                   help="weights file for a detector with a `weights` option (e.g. yolov7-tiny), instead of the "
                        "configured one")
    d.add_argument("--limit", type=positive, metavar="N", help="only the first N images")
    d.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    runner = {"classifier": run_classifier, "speed": run_speed, "detector": run_detector}[args.eval_kind]
    return runner(args, cfg)


def _labelled_rows(args: argparse.Namespace, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    """The CSV's rows after --filter-prefix and --limit, with their line numbers."""
    rows = _read_csv(args.labels, columns)
    if args.filter_prefix:
        rows = [(line, r) for line, r in rows
                if r["file"].startswith(args.filter_prefix) or Path(r["file"]).name.startswith(args.filter_prefix)]
    rows = rows[: args.limit]
    if not rows:
        raise EmoCamError(f"{args.labels}: no rows to evaluate" +
                          (f" whose file starts with {args.filter_prefix!r}" if args.filter_prefix else ""))
    return rows


# --- classifier ---------------------------------------------------------------------------------------------------

def run_classifier(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.backends import build_classifier
    from emocam.cli import print_json
    from emocam.evaluate.classification import classification_metrics

    rows = _labelled_rows(args, ("file", "label"))
    truth = [_label_index(args.labels, line, r["label"]) for line, r in rows]

    classifier = build_classifier(cfg, args.classifier)
    batch_size = cfg.classifier.batch_size
    y_true: list[int] = []
    y_pred: list[int] = []
    unreadable: list[str] = []
    pending: list[tuple[int, np.ndarray]] = []
    model_s = 0.0
    start = time.perf_counter()

    def flush() -> None:
        nonlocal model_s
        t = time.perf_counter()
        probs = classifier.predict_crops([crop for _, crop in pending])
        model_s += time.perf_counter() - t
        y_true.extend(label for label, _ in pending)
        y_pred.extend(int(i) for i in np.argmax(probs, axis=1))
        pending.clear()

    base = args.labels.parent
    for (_, row), label in progress(list(zip(rows, truth)), desc="eval classifier"):
        try:
            pending.append((label, read_bgr(_resolve(base, row["file"]))))
        except UnreadableImage as exc:
            _note_unreadable(unreadable, row["file"], exc)
            continue
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()

    metrics = classification_metrics(y_true, y_pred)
    report = {
        "classifier": classifier.name,
        "labels": str(args.labels),
        "filter_prefix": args.filter_prefix,
        **metrics.to_json(),
        "unreadable": len(unreadable),
        "unreadable_files": unreadable[:MAX_LISTED],
        "images_per_s": round(metrics.n / model_s, 1) if model_s > 0 else None,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if args.plot and metrics.n:
        from emocam.evaluate.plots import plot_confusion

        title = f"{classifier.name}: accuracy {metrics.accuracy:.3f}, macro-F1 {metrics.macro_f1:.3f}, n={metrics.n}"
        report["plot"] = str(plot_confusion(metrics.confusion, metrics.labels, args.plot, title))
    if args.json:
        print_json(report)
    else:
        print(_classifier_table(report))
    return 0 if metrics.n else 1


def _label_index(path: Path, line: int, label: str) -> int:
    try:
        return EMOTIONS.index((label or "").strip().lower())
    except ValueError:
        raise EmoCamError(f"{path}:{line}: unknown label {label!r}; expected one of {', '.join(EMOTIONS)}") from None


def _classifier_table(r: dict) -> str:
    rate = f", {r['images_per_s']} images/s" if r["images_per_s"] else ""
    lines = [f"{r['classifier']} on {r['labels']}: {r['n']} images ({r['unreadable']} unreadable){rate}",
             f"accuracy {_fmt(r['accuracy'])}   macro-F1 {_fmt(r['macro_f1'])}", "",
             f"{'class':<10}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}"]
    for name, c in r["per_class"].items():
        lines.append(f"{name:<10}{_fmt(c['precision']):>10}{_fmt(c['recall']):>8}{_fmt(c['f1']):>8}{c['support']:>9}")
    labels = r["confusion"]["labels"]
    lines += ["", "confusion (rows true, columns predicted)", " " * 10 + "".join(f"{n[:8]:>9}" for n in labels)]
    for name, row in zip(labels, r["confusion"]["matrix"]):
        lines.append(f"{name:<10}" + "".join(f"{v:>9}" for v in row))
    if r.get("plot"):
        lines += ["", f"plot: {r['plot']}"]
    return "\n".join(lines)


# --- speed --------------------------------------------------------------------------------------------------------

MIRRORED = "+mirror"  # eval speed --classifiers NAME+mirror: NAME with classifier.mirror on


def run_speed(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.backends import build_classifier
    from emocam.classify import CLASSIFIERS
    from emocam.cli import print_json
    from emocam.device import select_device
    from emocam.evaluate.speed import time_per_face

    names = args.classifiers or CLASSIFIERS.names()
    for name in names:  # an unknown name or an absent GPU fails before the faces are read
        CLASSIFIERS.get(name.removesuffix(MIRRORED))
    device = str(select_device(cfg.runtime))
    left_out: set[str] = set()

    def build(threads: int) -> dict:
        made_with = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"torch_threads": threads})})
        built = {}
        for name in names:
            try:
                built[name] = build_classifier(made_with, name.removesuffix(MIRRORED))
                built[name].mirror = built[name].mirror or name.endswith(MIRRORED)
            except EmoCamError as exc:  # of every registered one, time those that run here; a named one must
                if args.classifiers:
                    raise
                if name not in left_out:
                    logger.warning(f"{name} is left out: {exc}")
                left_out.add(name)
        return built

    crops, unreadable = [], []
    for _, row in _labelled_rows(args, ("file",)):
        try:
            crops.append(read_bgr(_resolve(args.labels.parent, row["file"])))
        except UnreadableImage as exc:
            _note_unreadable(unreadable, row["file"], exc)
    if not crops:
        raise EmoCamError(f"{args.labels}: none of the listed images could be read")
    times = time_per_face(build, crops, args.threads, args.rounds, args.warmup)
    if not times:
        raise EmoCamError("none of the classifiers can be built here (see the warnings above)")
    report = {"labels": str(args.labels), "filter_prefix": args.filter_prefix, "faces": len(crops),
              "unreadable": len(unreadable), "rounds": args.rounds, "device": device,
              "per_face": [t.to_json() for t in times]}
    if args.json:
        print_json(report)
    else:
        print(_speed_table(report))
    return 0


def _speed_table(r: dict) -> str:
    rows = r["per_face"]
    first = {t["threads"]: t for t in rows if t["classifier"] == rows[0]["classifier"]}
    lines = [f"ms a face, one face a call, {r['faces']} faces x {r['rounds']} rounds on {r['device']} "
             "(median round; fastest in brackets)",
             f"{'threads':>7}  {'classifier':<23}{'wall':>16}{'CPU':>16}  CPU / {rows[0]['classifier']}"]
    for t in rows:
        ratio = t["cpu_ms"] / first[t["threads"]]["cpu_ms"]
        lines.append(f"{t['threads']:>7}  {t['classifier']:<23}{t['wall_ms']:>8.3f} ({t['wall_ms_min']:.3f})"
                     f"{t['cpu_ms']:>8.3f} ({t['cpu_ms_min']:.3f})  {ratio:.2f}")
    return "\n".join(lines)


# --- detector -----------------------------------------------------------------------------------------------------

def run_detector(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.cli import print_json
    from emocam.evaluate.detection import IOU_THRESHOLD, ImageDetections, evaluate_detections

    faces, excluded = _read_boxes(args.boxes, _where(args.where))
    ignore = _read_boxes(args.ignore)[0] if args.ignore else {}
    for name, boxes in excluded.items():
        ignore[name] = np.concatenate([ignore.get(name, np.zeros((0, 4))), boxes])
    images_csv = args.images or (args.boxes.parent / "images.csv")
    listed = [r["file"] for _, r in _read_csv(images_csv, ("file",))] if args.images or images_csv.is_file() else []
    files = list(dict.fromkeys([*listed, *faces, *ignore]))[: args.limit]
    if not files:
        raise EmoCamError(f"{args.boxes}: no images to evaluate")

    detector = _build_detector(cfg, args.detector, args.weights)
    empty = np.zeros((0, 4))
    evaluated: list[ImageDetections] = []
    unreadable: list[str] = []
    model_s = 0.0
    start = time.perf_counter()
    for name in progress(files, desc="eval detector"):
        try:
            image = read_bgr(_resolve(args.boxes.parent, name))
        except UnreadableImage as exc:
            _note_unreadable(unreadable, name, exc)
            continue
        # Each still image is unrelated to the one before: a detector that follows faces must not carry them over.
        detector.reset()
        t = time.perf_counter()
        boxes, scores, scale = _detect(detector, image, args.max_side, args.as_height)
        model_s += time.perf_counter() - t
        evaluated.append(ImageDetections(faces.get(name, empty) * scale, ignore.get(name, empty) * scale, boxes,
                                         scores))

    metrics = evaluate_detections(evaluated, IOU_THRESHOLD, min_size=args.min_size, min_height=args.min_height)
    report = {
        "detector": detector.name,
        "boxes": str(args.boxes),
        "ignore": None if args.ignore is None else str(args.ignore),
        "images_csv": str(images_csv) if listed else None,
        "where": args.where or None,
        "as_height": args.as_height,
        "min_size": args.min_size,
        "min_height": args.min_height,
        "max_side": args.max_side or None,
        "iou_threshold": IOU_THRESHOLD,
        "images": len(evaluated),
        "unreadable": len(unreadable),
        "unreadable_files": unreadable[:MAX_LISTED],
        **metrics.to_json(),
        "images_per_s": round(len(evaluated) / model_s, 2) if model_s > 0 else None,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if args.json:
        print_json(report)
    else:
        print(_detector_table(report))
    return 0 if evaluated else 1


def _build_detector(cfg: Config, name: str | None, weights: str | None):
    from emocam.backends import build_detector

    if weights is None:
        return build_detector(cfg, name)
    from emocam.detect import DETECTORS
    from emocam.device import select_device
    from emocam.weights import WeightStore

    name = name or cfg.detector.name
    options = cfg.detector.options(name)
    if "weights" not in type(options).model_fields:
        raise EmoCamError(f"--weights: detector {name!r} has no weights option")
    options = options.model_copy(update={"weights": weights})
    return DETECTORS.get(name)(options, select_device(cfg.runtime), WeightStore(cfg.models_dir))


def _detect(detector, image: np.ndarray, max_side: int,
            as_height: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Boxes and scores in the pixels of the evaluated frame, and the scale from the image to that frame.

    The frame is the image, or with as_height the image scaled to as_height rows. With max_side the detector sees
    a copy of the frame downscaled to at most max_side on the longer side, as the live path does. The image is
    resized once, straight to the size detected on: a frame upscaled first would only add time."""
    h, w = image.shape[:2]
    scale = as_height / h if as_height else 1.0
    frame_h, frame_w = round(h * scale), round(w * scale)
    k = min(1.0, max_side / max(frame_h, frame_w)) if max_side else 1.0
    size = (round(frame_w * k), round(frame_h * k)) if k < 1.0 else (frame_w, frame_h)
    if size != (w, h):
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    found = detector.detect(image)
    boxes = np.array([f.box for f in found], dtype=np.float64).reshape(-1, 4) / k
    return boxes, np.array([f.score for f in found], dtype=np.float64), scale


def _where(conditions: list[str]) -> dict[str, set[str]]:
    allowed = {}
    for text in conditions:
        column, sep, values = text.partition("=")
        if not sep or not column.strip():
            raise EmoCamError(f"--where {text!r}: expected COLUMN=VALUE[,VALUE...], e.g. blur=0")
        allowed[column.strip()] = {v.strip() for v in values.split(",")}
    return allowed


def _read_boxes(path: Path, where: dict[str, set[str]] | None = None) -> tuple[dict[str, np.ndarray], ...]:
    """Boxes per file: those whose row passes `where` (empty or one of the values in each column), the others."""
    kept: dict[str, list[list[float]]] = {}
    dropped: dict[str, list[list[float]]] = {}
    for line, row in _read_csv(path, ("file", "x1", "y1", "x2", "y2", *(where or {}))):
        try:
            box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
        except (TypeError, ValueError):
            raise EmoCamError(f"{path}:{line}: x1,y1,x2,y2 must be numbers") from None
        passes = all((row[c] or "").strip() in values | {""} for c, values in (where or {}).items())
        (kept if passes else dropped).setdefault(row["file"], []).append(box)
    return tuple({name: np.array(b, dtype=np.float64) for name, b in d.items()} for d in (kept, dropped))


def _detector_table(r: dict) -> str:
    rate = f", {r['images_per_s']} images/s" if r["images_per_s"] else ""
    limits = [f"min-size {r['min_size']:g}px" if r["min_size"] else "",
              f"min-height {r['min_height']:g}px" if r["min_height"] else ""]
    settings = [f"as {r['as_height']}px high" if r["as_height"] else "",
                " ".join(x for x in limits if x) or "all faces",
                f"max-side {r['max_side']}px" if r["max_side"] else "full resolution"]
    lines = [f"{r['detector']} on {r['boxes']} ({', '.join(x for x in settings if x)}): "
             f"{r['images']} images ({r['unreadable']} unreadable){rate}",
             f"AP@{r['iou_threshold']:g} {_fmt(r['ap50'])}   recall {_fmt(r['recall'])}   "
             f"precision {_fmt(r['precision'])}",
             f"faces {r['n_gt']}   ignore boxes {r['n_ignore']}   detections {r['detections']} "
             f"(true {r['true_positives']}, false {r['false_positives']}, ignored {r['ignored_detections']})",
             "", f"{'face width':<12}{'faces':>7}{'found':>7}{'recall':>8}{'AP@0.5':>8}"]
    for b in r["by_size"]:
        lines.append(f"{b['width'] + ' px':<12}{b['n_gt']:>7}{b['found']:>7}{_fmt(b['recall']):>8}"
                     f"{_fmt(b['ap50']):>8}")
    return "\n".join(lines)


# --- shared -------------------------------------------------------------------------------------------------------

def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    """Rows with their line numbers (for messages); a missing file or column is the user's to fix."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise EmoCamError(f"{path}: no column {', '.join(missing)}; the first line must name the columns "
                                  f"({','.join(columns)})")
            return [(reader.line_num, row) for row in reader if row.get("file")]
    except FileNotFoundError:
        raise EmoCamError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EmoCamError(f"{path}: cannot read as CSV: {exc}") from None


def _resolve(base: Path, name: str) -> Path:
    """A file named in a CSV: relative to the CSV's folder, else to images/ beside it."""
    path = base / name
    if path.is_file():
        return path
    beside = base / "images" / name
    return beside if beside.is_file() else path


def _note_unreadable(unreadable: list[str], name: str, exc: Exception) -> None:
    unreadable.append(name)
    if len(unreadable) <= 5:
        logger.warning(str(exc))
    elif len(unreadable) == 6:
        logger.warning("more unreadable files; the report counts them all")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected one or more names, e.g. repvgg-fer,mini-xception")
    return list(dict.fromkeys(names))


def _counts(text: str) -> list[int]:
    try:
        return [positive(n) for n in text.split(",")]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError("expected counts of 1 or more, e.g. 1,2") from None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
