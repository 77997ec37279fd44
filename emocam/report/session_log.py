"""A recorded session's frames.jsonl as analysed faces on a time axis starting at the session's first frame."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emocam.errors import EmoCamError
from emocam.sinks.recorder import LOG_NAME, read_frame_log
from emocam.types import EMOTIONS

# Per-layer statistics: the explain stage writes faces[i]["explain"] = {"mode", "keys": [stat, ...], "layers":
# {name: [value per key]}} (or, with log_classes = "all", {name: [[value per key] per map]}). Plain
# faces[i]["layers"] or ["maps"] tables ({name: {stat: value}}, {name: value} or [{"name", stat}, ...]) are read
# too. A layer's magnitude is the first of MAGNITUDE_KEYS present.
LAYER_KEYS = ("layers", "maps")
MAGNITUDE_KEYS = ("mean", "mean_activation", "magnitude", "energy", "max")


@dataclass(frozen=True)
class FaceRecord:
    t: float  # seconds from the session's first recorded frame
    frame: int  # the analysed frame's index
    track: int | None
    label: str | None
    probs: np.ndarray | None
    area: float
    layers: dict[str, float] = field(default_factory=dict)


@dataclass
class SessionLog:
    path: Path
    frames: int  # published (recorded) frames
    duration: float
    analyses: list[tuple[int, float, list[FaceRecord]]]  # (frame, t, faces), each analysis once
    layer_key: str | None = None  # which statistic `layers` holds, when the log has any

    @property
    def faces(self) -> list[FaceRecord]:
        return [f for _, _, faces in self.analyses for f in faces]

    def tracks(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        out: dict[int, tuple[list, list]] = {}
        for f in self.faces:
            if f.track is not None and f.probs is not None:
                t, p = out.setdefault(f.track, ([], []))
                t.append(f.t)
                p.append(f.probs)
        return {k: (np.array(t), np.array(p)) for k, (t, p) in out.items()}

    def main_labels(self) -> list[tuple[float, str | None]]:
        """Per analysis: its time and the label of its largest face (None: no classified face)."""
        out = []
        for _, t, faces in self.analyses:
            labelled = [f for f in faces if f.label is not None]
            out.append((t, max(labelled, key=lambda f: f.area).label if labelled else None))
        return out


def load_session_log(session_dir: Path) -> SessionLog:
    path = Path(session_dir) / LOG_NAME
    if not path.is_file():
        raise EmoCamError(f"{session_dir}: no {LOG_NAME}; record the session (`emocam run --record`) to report on it")
    try:
        records = read_frame_log(path)
    except ValueError as exc:
        raise EmoCamError(str(exc)) from None
    if not records:
        raise EmoCamError(f"{path} is empty: the session recorded no frame")
    t0 = float(records[0]["captured"])
    seen: dict[int, tuple[int, float, list[FaceRecord]]] = {}
    layer_key = None
    for record in records:
        a = record.get("analysis")
        if not a or a["frame"] in seen:  # an analysis is drawn on several frames: count it once
            continue
        t = float(a["t"]) - t0
        faces = []
        for face in a["faces"]:
            layers, key = _layer_stats(face)
            layer_key = layer_key or key
            probs = face.get("probabilities")
            x1, y1, x2, y2 = face["box"]
            faces.append(FaceRecord(t, int(a["frame"]), face.get("track_id"), face.get("label"),
                                    None if probs is None else np.array([probs[n] for n in EMOTIONS], np.float32),
                                    max(0.0, (x2 - x1) * (y2 - y1)), layers))
        seen[a["frame"]] = (int(a["frame"]), t, faces)
    duration = float(records[-1]["captured"]) - t0
    return SessionLog(path, len(records), duration, sorted(seen.values(), key=lambda x: x[1]), layer_key)


def _layer_stats(face: dict) -> tuple[dict[str, float], str | None]:
    """{layer: magnitude} and the statistic used, from the face's log entry (see LAYER_KEYS)."""
    explain = face.get("explain")
    if isinstance(explain, dict) and isinstance(explain.get("layers"), dict) and explain.get("keys"):
        return _explain_stats(explain, face.get("label"))
    raw = next((face[k] for k in LAYER_KEYS if face.get(k)), None)
    if raw is None:
        return {}, None
    if isinstance(raw, list):
        raw = {str(item.get("name", item.get("layer", i))): item for i, item in enumerate(raw)
               if isinstance(item, dict)}
    out, used = {}, None
    for name, value in raw.items():
        if isinstance(value, (int, float)):
            out[str(name)], used = float(value), used or "value"
        elif isinstance(value, dict):
            key = next((k for k in MAGNITUDE_KEYS if isinstance(value.get(k), (int, float))), None)
            if key is not None:
                out[str(name)], used = float(value[key]), used or key
    return out, used


def _explain_stats(explain: dict, label: str | None) -> tuple[dict[str, float], str | None]:
    keys = list(explain["keys"])
    key = next((k for k in MAGNITUDE_KEYS if k in keys), None)
    if key is None:
        return {}, None
    j = keys.index(key)
    out = {}
    for name, row in explain["layers"].items():
        if row and isinstance(row[0], list):  # one row per map: the predicted class's map, or the layer's only one
            row = row[EMOTIONS.index(label)] if len(row) == len(EMOTIONS) and label in EMOTIONS else row[0]
        if row and row[j] is not None:
            out[str(name)] = float(row[j])
    mode = explain.get("mode")
    return out, f"{key} ({mode} maps)" if mode else key


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    label: str


def read_truth(path: Path) -> list[Interval]:
    """An expert's annotation: CSV start,end,label (seconds from session start; a header row is optional)."""
    try:
        lines = list(csv.reader(Path(path).read_text(encoding="utf-8").splitlines()))
    except OSError as exc:
        raise EmoCamError(f"{path}: {exc.strerror}") from None
    rows = [r for r in lines if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0]][:3] == ["start", "end", "label"]:
        rows = rows[1:]
    out = []
    for number, row in enumerate(rows, 1):
        try:
            start, end, label = float(row[0]), float(row[1]), row[2].strip().lower()
        except (IndexError, ValueError):
            raise EmoCamError(f"{path}: row {number} {row!r}: expected start,end,label (seconds, seconds, emotion)") \
                from None
        if label not in EMOTIONS:
            raise EmoCamError(f"{path}: row {number}: {label!r} is not one of {', '.join(EMOTIONS)}")
        if end <= start:
            raise EmoCamError(f"{path}: row {number}: end {end} is not after start {start}")
        out.append(Interval(start, end, label))
    if not out:
        raise EmoCamError(f"{path}: no annotation rows")
    ordered = sorted(out, key=lambda iv: iv.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.end:
            raise EmoCamError(f"{path}: {a.start}-{a.end} ({a.label}) and {b.start}-{b.end} ({b.label}) overlap")
    return out


def truth_at(intervals: list[Interval], t: float) -> str | None:
    for iv in intervals:
        if iv.start <= t < iv.end:
            return iv.label
    return None
