"""Export folders as datasets. The folders are the truth: a reviewer relabels a patch by moving it to another
emotion folder and rejects it by deleting it; the manifest still knows what the model said and where its HOG row is.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emocam.errors import EmoCamError
from emocam.export.hog import load_rows, orientation_histogram
from emocam.export.manifest import JSONL, read_manifest
from emocam.export.options import HogOptions
from emocam.export.sessions import read_session_info
from emocam.types import EMOTIONS


@dataclass(frozen=True)
class Item:
    path: Path
    label: str  # the folder it is in now
    session: str
    row: dict | None  # its manifest row; None for a file the exporter did not write

    @property
    def relabelled(self) -> bool:
        return self.row is not None and self.row["label"] != self.label


@dataclass
class Session:
    path: Path
    info: dict
    rows: list[dict]
    items: list[Item]

    @property
    def hog_options(self) -> HogOptions | None:
        opts = self.info.get("options", {}).get("hog")
        return HogOptions.model_validate(opts) if opts else None

    @property
    def removed(self) -> int:
        """Manifest rows whose patch is gone from every emotion folder (rejected in review)."""
        present = {i.path.name for i in self.items}
        return sum(1 for r in self.rows if Path(r["file"]).name not in present)


def find_sessions(folder: Path) -> list[Session]:
    """The export sessions in `folder`: the folder itself when it has a manifest, else its subfolders that do."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmoCamError(f"{folder}: no such folder")
    paths = [folder] if (folder / JSONL).is_file() else sorted(p for p in folder.iterdir() if (p / JSONL).is_file())
    if not paths:
        raise EmoCamError(f"{folder}: no export session (a folder with {JSONL}) in it or directly below it")
    return [_load(p) for p in paths]


def _load(path: Path) -> Session:
    rows = read_manifest(path)
    by_name = {Path(r["file"]).name: r for r in rows}
    items = []
    for label in EMOTIONS:
        for png in sorted((path / label).glob("*.png")):
            items.append(Item(png, label, path.name, by_name.get(png.name)))
    return Session(path, read_session_info(path), rows, items)


def hog_vectors(session: Session, items: list[Item]) -> np.ndarray:
    """The stored HOG vectors of these items (those with a manifest row), in order."""
    vectors, cache = [], {}
    for item in items:
        if item.row is None:
            continue
        rel = item.row["hog_file"]
        if rel not in cache:
            cache[rel] = load_rows(session.path / rel)
        vectors.append(np.asarray(cache[rel][int(item.row["hog_index"])]))
    return np.array(vectors, np.float32)


def summarize(sessions: list[Session]) -> dict:
    items = [i for s in sessions for i in s.items]
    patches = Counter(i.label for i in items)
    episodes: dict[str, set] = {name: set() for name in EMOTIONS}
    for item in items:
        if item.row is not None:
            episodes[item.label].add((item.session, item.row["episode"]))
    hist: dict[str, list[float]] = {}
    hog_opts = None
    for label in EMOTIONS:
        per_session = []
        for s in sessions:
            opts = s.hog_options
            if opts is None or (hog_opts is not None and opts != hog_opts):
                continue  # histograms with other bins or sizes do not average
            hog_opts = opts
            vectors = hog_vectors(s, [i for i in s.items if i.label == label])
            if len(vectors):
                per_session.append(orientation_histogram(vectors, opts))
        if per_session:
            hist[label] = [round(float(v), 5) for v in np.concatenate(per_session).mean(axis=0)]
    total = len(items)
    return {
        "sessions": [s.path.name for s in sessions],
        "patches": total,
        "per_class": {name: {"patches": patches.get(name, 0), "episodes": len(episodes[name]),
                             "share": round(patches.get(name, 0) / total, 4) if total else 0.0}
                      for name in EMOTIONS},
        # one episode relabelled in part counts in each of its classes above, once here
        "episodes": len(set().union(*episodes.values())),
        "relabelled": sum(i.relabelled for i in items),
        "removed": sum(s.removed for s in sessions),
        "unlisted": sum(i.row is None for i in items),
        "hog": None if hog_opts is None else {"orientations": hog_opts.orientations, "per_class_histogram": hist},
    }


def export_imagefolder(sessions: list[Session], out: Path) -> int:
    """OUT/<label>/<name>.png: the layout of fer2013/train and `emocam train classifier`. Never overwrites."""
    items = [i for s in sessions for i in s.items]
    targets = [(i.path, out / i.label / i.path.name) for i in items]
    _refuse_existing([t for _, t in targets])
    for src, dst in targets:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return len(targets)


def export_csv(sessions: list[Session], out: Path) -> int:
    """One row per patch: absolute path, the reviewed label, and what the model said."""
    _refuse_existing([out])
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "model_label", "session", "episode", "frame", "track"])
        for s in sessions:
            for i in s.items:
                r = i.row or {}
                w.writerow([str(i.path.resolve()), i.label, r.get("label", ""), i.session, r.get("episode", ""),
                            r.get("frame", ""), r.get("track", "")])
                n += 1
    tmp.replace(out)
    return n


def _refuse_existing(paths: list[Path]) -> None:
    clash = next((p for p in paths if p.exists()), None)
    if clash is not None:
        raise EmoCamError(f"{clash} exists; dataset export never overwrites: pick an empty --out")
    if len({p for p in paths}) != len(paths):
        raise EmoCamError("two patches would get the same name in --out (the same session exported twice?)")
