"""`emocam train quantize`: measure a RepVGG-Plus classifier's activation ranges on training faces, so that the
repvgg-fer-int8 backend can run it in 8-bit integers (emocam/nets/quantize.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from emocam.errors import EmoCamError
from emocam.nets import quantize
from emocam.train.atomic import save_atomic
from emocam.train.classifier import validation_scores
from emocam.train.emotion_data import find_samples, labels_csv_samples, load_faces
from emocam.weights import sha256_file

HELP = """\
--weights names repvgg-fer's weights as classifier.repvgg-fer.weights does (a name in models/manifest.toml or a
deploy.pt of `emocam train classifier`). --faces training faces of --data (any layout `train classifier` reads),
drawn with a fixed seed and without augmentation, go through the network once while each layer's activation range
is recorded; OUT stores those ranges and the sha256 of the weights (~150 KB: a histogram per layer). Use it with
  --set classifier.name=repvgg-fer-int8 --set classifier.repvgg-fer-int8.calibration=OUT
(and classifier.repvgg-fer-int8.weights = the same weights). --val-labels scores the float and the int8 network
on labelled faces (e.g. ../shared/data/eval/emotion/labels.csv with --val-filter-prefix fer2013_PublicTest_)."""


def register(sub, parents) -> None:
    p = sub.add_parser("quantize", parents=parents, help="calibrate a RepVGG-Plus classifier for int8 inference",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, metavar="PATH", help="training faces (as for train classifier)")
    p.add_argument("--weights", default="repvgg_fer", metavar="NAME|FILE", help="default %(default)s")
    p.add_argument("--arch", metavar="VARIANT",
                   help="the variant of weights whose tensors fit two (as classifier.repvgg-fer.arch)")
    p.add_argument("--faces", type=int, default=2048, metavar="N", help="calibration faces (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the calibration file to write")
    p.add_argument("--val-labels", type=Path, metavar="CSV", help="file,label CSV to score both networks on")
    p.add_argument("--val-filter-prefix", metavar="P", help="only validation rows whose file name starts with P")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg=None) -> int:
    from emocam.classify.repvgg import RepVGGClassifier, RepVGGOptions
    from emocam.cli import print_json
    from emocam.config import load_config
    from emocam.weights import WeightStore

    if args.out.exists():
        raise EmoCamError(f"{args.out} exists: pick another --out")
    if args.faces < 1 or (args.threads is not None and args.threads < 1):
        raise EmoCamError("--faces and --threads: at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if quantize.engine() is None:
        raise EmoCamError("this torch or CPU has no x86 int8 kernels or no FX quantization: int8 inference is not "
                          "available here")
    cfg = cfg or load_config()
    classifier = RepVGGClassifier(RepVGGOptions(weights=args.weights, arch=args.arch), torch.device("cpu"),
                                  WeightStore(cfg.models_dir))
    samples = find_samples(args.data)
    chosen = np.sort(np.random.default_rng(0).permutation(len(samples))[:args.faces])
    faces = load_faces([samples[i] for i in chosen], classifier.size, desc="decode calibration faces")
    prepared = quantize.prepare(classifier.model, classifier.size)
    doc = {"format": quantize.FORMAT, "arch": classifier.arch, "weights_sha256": classifier.weights_sha256[
        args.weights], "faces": len(faces), "observers": quantize.calibrate(prepared, faces.images)}
    report = {"out": str(args.out), "weights": args.weights, "arch": doc["arch"], "faces": len(faces)}
    if args.val_labels:
        val = load_faces(labels_csv_samples(args.val_labels, args.val_filter_prefix), classifier.size,
                         desc="decode validation faces")
        if not len(val):
            raise EmoCamError(f"--val-labels {args.val_labels}: no faces selected (check --val-filter-prefix)")
        int8 = quantize.convert(prepared, classifier.size)
        report["val"] = {"faces": len(val), "float": validation_scores(classifier.model, val),
                         "int8": validation_scores(int8, val)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(args.out, doc)
    report["sha256"] = sha256_file(args.out)
    print_json(report)
    return 0
