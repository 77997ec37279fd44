"""emocam explain: per-layer maps of faces in images as figures and statistics; also the faithfulness check and
the cost measurements of the explain modes and overlays."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from loguru import logger

from emocam.config import Config
from emocam.errors import EmoCamError

MODES = ("activation", "cam", "gradcam")


def register(sub, parents) -> None:
    p = sub.add_parser(
        "explain", parents=parents, help="show what the classifier looks at in images (figures + JSON)",
        description="For every face in each image: a figure with a row per conv layer and columns for the face and "
                    "the 7 classes (maps over the model's input, colour bar), and the statistics the live session "
                    "log gets (here for every class). --faithfulness and --timings measure the maps instead.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, or skimage:NAME (e.g. skimage:astronaut)")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder for the figures (created)")
    p.add_argument("--mode", choices=MODES, help="map mode (default: explain.mode from config)")
    p.add_argument("--crops", action="store_true", help="each image is a face crop: no detection")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.add_argument("--faithfulness", type=Path, metavar="LABELS_CSV",
                   help="mask the top 20%% of each mode's map on the FER2013 PublicTest faces a labels.csv lists "
                        "(e.g. ../shared/data/eval/emotion/labels.csv) against random masks")
    p.add_argument("--limit", type=int, metavar="N", help="with --faithfulness: the first N faces only")
    p.add_argument("--share", type=float, default=0.2, help="with --faithfulness: share of pixels masked")
    p.add_argument("--timings", action="store_true",
                   help="ms per face for each mode and ms per frame for each explain overlay at 720p and 1080p, "
                        "on IMAGE (default skimage:astronaut) scaled to 1080p")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.backends import build_classifier
    from emocam.cli import print_json

    classifier = build_classifier(cfg)
    if args.timings:
        result = _timings(args, cfg, classifier)
    elif args.faithfulness:
        result = _faithfulness(args, classifier)
    else:
        return _figures(args, cfg, classifier)
    if args.json:
        print_json(result)
    return 0


def _figures(args, cfg: Config, classifier) -> int:
    from emocam.analyzer import FrameAnalyzer
    from emocam.backends import build_detector
    from emocam.cli import print_json
    from emocam.explain.explainer import Explainer
    from emocam.explain.figure import explain_figure
    from emocam.imageio import read_each, unique_name
    from emocam.types import Face

    if not args.images:
        raise EmoCamError("name at least one IMAGE (or use --faithfulness / --timings)")
    if args.out is None:
        raise EmoCamError("--out DIR is needed for the figures")
    mode = args.mode or cfg.explain.mode
    explainer = Explainer(classifier, cfg.explain.model_copy(update={"mode": mode, "log_classes": "all"}))
    analyzer = None if args.crops else FrameAnalyzer(build_detector(cfg), classifier, cfg.detector.max_side)
    args.out.mkdir(parents=True, exist_ok=True)
    results, failed, used = [], [], set()
    for path, frame in read_each(args.images, failed, "explain"):
        explainer.reset()  # every image on its own scale, whatever came before
        if args.crops:
            h, w = frame.shape[:2]
            faces = explainer.explain([frame], [Face(np.array([0, 0, w, h], np.float32), 1.0)], [(0, 0, w, h)])
        else:
            analyzer.detector.reset()
            faces = explainer.classify(frame, analyzer.detect(frame))
            if not faces:
                logger.warning(f"{path}: no face found (use --crops if the image is a face crop)")
        records = []
        for i, face in enumerate(faces, 1):
            figure = args.out / unique_name(f"{_stem(path)}_face{i}.png", used)
            title = f"{path} face {i}: {face.label} {float(face.probs.max()):.2f}  ({mode}, {classifier.name})"
            explain_figure(face, figure, title)
            records.append({**face.to_json(), "window": list(face.explanation.window), "figure": str(figure)})
            if not args.json:
                print(f"{path} face {i}: {face.label} {float(face.probs.max()):.3f} -> {figure}")
        results.append({"file": str(path), "faces": records})
    if args.json:
        print_json({"classifier": classifier.name, "mode": mode, "layers": list(explainer.layers),
                    "images": results, "failed": failed})
    return 1 if failed and not results else 0


def _stem(path: str) -> str:
    from emocam.imageio import BUILTIN_PREFIX

    path = str(path)
    return re.sub(r"[^\w.-]+", "_", Path(path.removeprefix(BUILTIN_PREFIX)).stem) or "image"


def _faithfulness(args, classifier) -> dict:
    from emocam.explain.faithfulness import faithfulness, fer_public_test

    if not args.faithfulness.is_file():
        raise EmoCamError(f"--faithfulness {args.faithfulness}: no such labels.csv")
    files = fer_public_test(args.faithfulness, args.limit)
    if not files:
        raise EmoCamError(f"{args.faithfulness}: lists no FER2013 PublicTest image")
    modes = (args.mode,) if args.mode else MODES
    result = faithfulness(classifier, files, modes, share=args.share)
    if not args.json:
        print(f"{result['images']} faces; mean drop of the predicted class's probability when masking "
              f"{args.share:.0%} of the input: the map's top / random pixels / random blobs of the map's size / the "
              f"top of another face's map. Reference, top of a 4x4 occlusion map: {result['occlusion_reference']:.3f}")
        for mode, layers in result["modes"].items():
            print(f"\n{mode}")
            print(f"  {'layer':18s} {'top':>7s} {'random':>7s} {'blobs':>7s} {'other':>7s}  top>random")
            for name, r in layers.items():
                print(f"  {name:18s} {r['top']:7.3f} {r['random']:7.3f} {r['blobs']:7.3f} {r['other']:7.3f}  "
                      f"{r['top_beats_random']:.0%}")
    return result


def _timings(args, cfg: Config, classifier) -> dict:
    import cv2

    from emocam.analyzer import FrameAnalyzer
    from emocam.backends import build_detector
    from emocam.explain.timing import explained_analysis, mode_costs, render_costs
    from emocam.imageio import read_bgr

    image = read_bgr(args.images[0] if args.images else "skimage:astronaut")
    h, w = image.shape[:2]
    frame = np.zeros((1080, 1920, 3), np.uint8)  # the picture at 1080 px high, centred on a 1080p frame
    scaled = cv2.resize(image, (min(1920, round(w * 1080 / h)), 1080), interpolation=cv2.INTER_LINEAR)
    x = (1920 - scaled.shape[1]) // 2
    frame[:, x:x + scaled.shape[1]] = scaled
    faces = FrameAnalyzer(build_detector(cfg), classifier, cfg.detector.max_side).detect(frame)
    if not faces:
        raise EmoCamError("--timings: no face found in the picture")
    faces = faces[:1]
    result = {"face_px": round(faces[0].width), "ms_per_face": mode_costs(classifier, frame, faces),
              "ms_per_frame": {}}
    for mode in MODES:
        analysis = explained_analysis(classifier, frame, faces, mode)
        result["ms_per_frame"][mode] = render_costs(analysis, frame)
    if not args.json:
        print(f"one face of {result['face_px']} px in a 1080p frame")
        print("ms per face: " + ", ".join(f"{k} {v}" for k, v in result["ms_per_face"].items() if k != "faces"))
        for mode, table in result["ms_per_frame"].items():
            for name, by_height in table.items():
                cells = "  ".join(f"{hgt}: {v['frame_ms']:.2f} ms/frame, {v['redraw_ms']:.2f} ms/redraw"
                                  for hgt, v in by_height.items())
                print(f"{mode:10s} {name:10s} {cells}")
    return result
