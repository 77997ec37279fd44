"""emocam classify IMAGE...: each image is already a face crop."""

from __future__ import annotations

import argparse

from emocam.config import Config
from emocam.imageio import read_each
from emocam.types import EMOTIONS


def register(sub, parents) -> None:
    p = sub.add_parser("classify", parents=parents, help="classify the emotion of face crops",
                       description="Each image is a face crop; it is converted to the classifier's input "
                                   "(mini-xception: grayscale, 64x64 INTER_LINEAR, x/255 then (x-0.5)*2).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or skimage:NAME (e.g. skimage:astronaut)")
    p.add_argument("--classifier", help="classifier backend (default: classifier.name from config)")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.backends import build_classifier
    from emocam.cli import print_json

    classifier = build_classifier(cfg, args.classifier)
    batch = cfg.classifier.batch_size
    results, failed, pending = [], [], []

    def flush() -> None:
        probs = classifier.predict_crops([img for _, img in pending])
        for (path, _), p in zip(pending, probs):
            record = {"file": str(path), "label": EMOTIONS[int(p.argmax())],
                      "probabilities": {n: round(float(v), 6) for n, v in zip(EMOTIONS, p)}}
            results.append(record)
            if not args.json:
                print(f"{path}: {record['label']} {float(p.max()):.3f}")
        pending.clear()

    for path, image in read_each(args.images, failed, "classify"):
        pending.append((path, image))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    if args.json:
        print_json({"classifier": classifier.name, "images": results, "failed": failed})
    return 1 if failed and not results else 0
