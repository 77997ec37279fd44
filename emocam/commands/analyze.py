"""emocam analyze IMAGE...: faces, boxes, landmarks and emotions in whole pictures."""

from __future__ import annotations

import argparse
from pathlib import Path

from loguru import logger

from emocam.config import Config
from emocam.imageio import read_each, unique_name, write_png

DEFAULT_ANNOTATORS = ("boxes", "labels", "bars")


def register(sub, parents) -> None:
    p = sub.add_parser("analyze", parents=parents, help="detect faces and classify their emotions in images",
                       description="Detect faces and classify their emotions. Prints one record per image "
                                   "(JSON with --json); --out writes annotated PNGs.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or skimage:NAME (e.g. skimage:astronaut)")
    p.add_argument("--detector", help="detector backend (default: detector.name from config)")
    p.add_argument("--classifier", help="classifier backend (default: classifier.name from config)")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.add_argument("--out", type=Path, metavar="DIR", help="write <stem>_annotated.png per image here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.analyzer import FrameAnalyzer
    from emocam.backends import build_classifier, build_detector
    from emocam.cli import print_json
    from emocam.render import ANNOTATORS

    analyzer = FrameAnalyzer(build_detector(cfg, args.detector), build_classifier(cfg, args.classifier),
                             cfg.detector.max_side)
    annotators = [ANNOTATORS.get(name)() for name in DEFAULT_ANNOTATORS] if args.out else []
    results, failed, used = [], [], set()
    for path, image in read_each(args.images, failed, "analyze"):
        analyzer.detector.reset()  # unrelated images: nothing carries over from the last one
        analysis = analyzer.analyze(image)
        record = {"file": str(path), "width": analysis.size[0], "height": analysis.size[1],
                  "faces": [f.to_json() for f in analysis.faces]}
        if args.out:
            scene = image.copy()
            for annotator in annotators:
                annotator.annotate(scene, analysis)
            out = args.out / unique_name(f"{Path(str(path).replace(':', '_')).stem}_annotated.png", used)
            write_png(out, scene)
            record["annotated"] = str(out)
        results.append(record)
        if not args.json:
            print(_describe(record))
    if args.json:
        print_json({"detector": analyzer.detector.name, "classifier": analyzer.classifier.name,
                    "images": results, "failed": failed})
    if failed:
        logger.warning(f"{len(failed)} of {len(args.images)} images could not be read")
    return 1 if failed and not results else 0


def _describe(record: dict) -> str:
    faces = record["faces"]
    parts = [f"{record['file']}: {len(faces)} face(s)"]
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        label = face.get("label", "?")
        prob = face.get("probabilities", {}).get(label, 0.0)
        parts.append(f"  [{x1},{y1},{x2},{y2}] score {face['score']:.3f} -> {label} {prob:.2f}")
    if "annotated" in record:
        parts.append(f"  wrote {record['annotated']}")
    return "\n".join(parts)
