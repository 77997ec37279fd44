"""Pack what scripts/gpu_train_classifier.sh needs on a machine that has neither ../shared nor a package index:
the FER2013 training faces and PublicTest faces as one .tar.gz of the JPEG files as they are (gzip removes the
headers that every face repeats: 38 MiB against 52 as a zip) and, with --wheels, the wheels of EmoCam's pure-training dependencies that such a machine may lack.

    python scripts/pack_device.py [--data ../shared/data] [--per-class N] [--wheels] [--dest .device]

.device/ is git-ignored: the data is third-party and never committed.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from emocam.types import EMOTIONS

VALIDATION_PREFIX = "fer2013_PublicTest_"
# Imported by `emocam train classifier`; the GPU image has torch, numpy, OpenCV, scikit-image and onnx.
WHEELS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions", "loguru")


def pack_faces(data: Path, archive: Path, per_class: int | None) -> tuple[int, int]:
    train_root, eval_root = data / "fer2013" / "train", data / "eval" / "emotion"
    with open(eval_root / "labels.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if Path(r["file"]).name.startswith(VALIDATION_PREFIX)]
    if per_class:
        rows = [r for e in EMOTIONS for r in [r for r in rows if r["label"] == e][:per_class]]
    labels = io.StringIO()
    writer = csv.DictWriter(labels, ["file", "label"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({"file": r["file"], "label": r["label"]} for r in rows)
    n_train = 0
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        for emotion in EMOTIONS:
            files = sorted((train_root / emotion).iterdir())[:per_class]
            for f in files:
                tar.add(f, f"train/{emotion}/{f.name}")
            n_train += len(files)
        for r in rows:
            tar.add(eval_root / r["file"], f"eval/{r['file']}")
        info = tarfile.TarInfo("eval/labels.csv")
        info.size = len(labels.getvalue().encode())
        tar.addfile(info, io.BytesIO(labels.getvalue().encode()))
    return n_train, len(rows)


def download_wheels(dest: Path) -> None:
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in WHEELS]
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *pins],
                   check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EMOCAM_DATA", "../shared/data")))
    p.add_argument("--per-class", type=int, help="only this many faces of each emotion (a smoke run)")
    p.add_argument("--wheels", action="store_true", help="also download the dependency wheels (Python 3.12)")
    p.add_argument("--dest", type=Path, default=Path(".device"))
    args = p.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    archive = args.dest / "faces.tar.gz"
    n_train, n_val = pack_faces(args.data, archive, args.per_class)
    print(f"{archive}: {n_train} training and {n_val} validation faces, {archive.stat().st_size / 2**20:.1f} MiB")
    if args.wheels:
        download_wheels(args.dest / "whl")
        print(f"{args.dest / 'whl'}: {', '.join(sorted(f.name for f in (args.dest / 'whl').iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
