"""The manifest of an export session: manifest.jsonl (the record) and manifest.csv (the same rows, flat).

A row is appended only after its PNG (and HOG row) is complete on disk, and flushed at once. After a kill the
JSONL may end in a torn line and the CSV may lag one row; `repair_session` fixes both.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from emocam.errors import EmoCamError
from emocam.types import EMOTIONS

JSONL = "manifest.jsonl"
CSV = "manifest.csv"

CSV_COLUMNS = (
    ["file", "aligned_file", "session", "source_session", "episode", "frame", "t", "time", "track",
     "box_x1", "box_y1", "box_x2", "box_y2", "crop_x1", "crop_y1", "crop_x2", "crop_y2", "score", "label"]
    + [f"p_{name}" for name in EMOTIONS]
    + ["landmarks", "detector", "detector_weights", "classifier", "classifier_weights", "hog_file", "hog_index"]
)


def csv_record(row: dict) -> list:
    """One JSONL row flattened into CSV_COLUMNS order (lists as JSON, weight hashes as name=sha;...)."""
    flat = dict(row)
    for key in ("box", "crop"):
        for corner, value in zip(("x1", "y1", "x2", "y2"), row[key]):
            flat[f"{key}_{corner}"] = value
    for name in EMOTIONS:
        flat[f"p_{name}"] = row["probabilities"][name]
    flat["landmarks"] = "" if row["landmarks"] is None else json.dumps(row["landmarks"], separators=(",", ":"))
    for key in ("detector_weights", "classifier_weights"):
        flat[key] = ";".join(f"{k}={v}" for k, v in sorted(row[key].items()))
    flat["aligned_file"] = row["aligned_file"] or ""
    return [flat[c] for c in CSV_COLUMNS]


def _csv_line(values: list) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


class ManifestWriter:
    """Appends rows to both files of one session; only the exporter's writer thread calls it. A row lands in both
    files or in neither: unbuffered appends, cut back to where they were when the disk fills up half way."""

    def __init__(self, session_dir: Path):
        self.jsonl_path = session_dir / JSONL
        self.csv_path = session_dir / CSV
        new_csv = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._jsonl: int | None = _open_append(self.jsonl_path)
        self._csv: int | None = _open_append(self.csv_path)
        if new_csv:
            self._append([(self._csv, _csv_line(CSV_COLUMNS))])

    def write(self, row: dict) -> None:
        self._append([(self._jsonl, json.dumps(row, separators=(",", ":")) + "\n"),
                      (self._csv, _csv_line(csv_record(row)))])

    @staticmethod
    def _append(lines: list[tuple[int, str]]) -> None:
        marks = [os.fstat(fd).st_size for fd, _ in lines]
        try:
            for fd, text in lines:
                data = text.encode("utf-8")
                while data:  # a full disk may take part of it
                    data = data[os.write(fd, data):]
        except OSError:
            for (fd, _), mark in zip(lines, marks):
                try:
                    os.ftruncate(fd, mark)
                except OSError:
                    pass  # the repair of an abandoned session cuts a torn last line too
            raise

    def close(self) -> None:
        for fd in (self._jsonl, self._csv):
            if fd is not None:
                os.close(fd)
        self._jsonl = self._csv = None


def _open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def read_manifest(session_dir: Path) -> list[dict]:
    """The complete rows of a session's manifest.jsonl (a torn last line, from a kill, is left out)."""
    path = Path(session_dir) / JSONL
    if not path.is_file():
        return []
    rows, _ = _parse(path.read_bytes(), path)
    return rows


def _parse(data: bytes, path: Path) -> tuple[list[dict], int]:
    """Rows and the byte length of the complete lines."""
    end = data.rfind(b"\n") + 1
    rows = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise EmoCamError(f"{path}: line {number} is not JSON (edited by hand?); fix or delete that line") from None
    return rows, end


def repair_session(session_dir: Path) -> dict:
    """Bring a session a killed exporter left behind back to "every row has its file and every file its row":
    drop a torn manifest line, delete *.part files and the exporter's patches no row names, trim HOG rows no row
    uses, and rewrite manifest.csv from manifest.jsonl. Only for sessions no exporter has open."""
    from emocam.export.hog import read_shape, truncate_rows

    session_dir = Path(session_dir)
    done = {"torn_lines": 0, "part_files": 0, "orphan_patches": 0, "hog_rows_trimmed": 0}
    jsonl = session_dir / JSONL
    rows: list[dict] = []
    if jsonl.exists():
        data = jsonl.read_bytes()
        rows, end = _parse(data, jsonl)
        if end < len(data):
            done["torn_lines"] = 1
            with open(jsonl, "r+b") as f:
                f.truncate(end)
    named = {Path(r["file"]).name for r in rows} | {Path(r["aligned_file"]).name for r in rows if r["aligned_file"]}
    # only what the exporter names ("<session>_<frame>_<track>.png"): a picture someone added by hand stays
    ours = re.compile(rf"{re.escape(session_dir.name)}_\d+_\w+\.png")
    for path in sorted(session_dir.rglob("*")):
        if path.name.endswith(".part"):
            path.unlink()
            done["part_files"] += 1
        elif path.suffix == ".png" and path.name not in named and ours.fullmatch(path.name):
            path.unlink()
            done["orphan_patches"] += 1
    used: dict[str, int] = {}
    for r in rows:
        used[r["hog_file"]] = max(used.get(r["hog_file"], 0), int(r["hog_index"]) + 1)
    for path in sorted((session_dir / "hog").glob("*.npy")) if (session_dir / "hog").is_dir() else []:
        keep = used.get(f"hog/{path.name}", 0)
        try:
            count = read_shape(path)[0]
        except (ValueError, OSError, SyntaxError):
            count = -1  # killed before its first header: nothing in it is referenced
        if keep == 0:
            path.unlink()
            done["hog_rows_trimmed"] += max(count, 0)
        elif count != keep or path.stat().st_size != _npy_size(path, keep):
            done["hog_rows_trimmed"] += max(0, count - keep)
            truncate_rows(path, keep)
    _rewrite_csv(session_dir, rows)
    return done


def _npy_size(path: Path, rows: int) -> int:
    from emocam.export.hog import DTYPE, HEADER_LEN, read_shape

    return HEADER_LEN + rows * read_shape(path)[1] * DTYPE.itemsize


def _rewrite_csv(session_dir: Path, rows: list[dict]) -> None:
    tmp = session_dir / (CSV + ".part")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(_csv_line(CSV_COLUMNS))
        for row in rows:
            f.write(_csv_line(csv_record(row)))
    os.replace(tmp, session_dir / CSV)
