"""Numbered export sessions (s0001, s0002, ...) that never overwrite each other, and the lock that tells a
session still being written from one a killed exporter left behind."""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from loguru import logger

from emocam.export.manifest import repair_session

SESSION_RE = re.compile(r"^s(\d{4,})$")
WRITING = ".writing"  # exists while an exporter writes the session; flock()ed by it; removed on a clean close
INFO = "export.json"


def session_numbers(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := SESSION_RE.match(p.name)))


class SessionLock:
    """Held for as long as a session is written; the kernel releases it when the process dies, however."""

    def __init__(self, session_dir: Path):
        self.path = session_dir / WRITING
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise

    def release(self) -> None:
        """A clean close: the session is complete and no longer needs repairs."""
        self.path.unlink(missing_ok=True)
        os.close(self._fd)


def new_session(root: Path) -> tuple[Path, SessionLock]:
    """Create the next numbered session after the highest one in `root` (numbering goes on across restarts)."""
    root.mkdir(parents=True, exist_ok=True)
    n = (session_numbers(root) or [0])[-1] + 1
    while True:
        path = root / f"s{n:04d}"
        try:
            path.mkdir()  # atomic: two exporters on one root get different numbers
        except FileExistsError:
            n += 1
            continue
        return path, SessionLock(path)


def repair_abandoned(root: Path) -> list[str]:
    """Repair every session of `root` whose exporter died without closing it (marker left, lock free)."""
    repaired = []
    for n in session_numbers(root):
        path = root / f"s{n:04d}"
        if not (path / WRITING).exists():
            continue
        try:
            lock = SessionLock(path)
        except OSError:
            continue  # another exporter is writing it right now
        try:
            done = repair_session(path)
        finally:
            lock.release()
        logger.warning(f"export session {path} was not closed cleanly (killed?); repaired: "
                       + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in done.items()))
        repaired.append(path.name)
    return repaired


def write_json_atomic(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def read_session_info(session_dir: Path) -> dict:
    path = Path(session_dir) / INFO
    return json.loads(path.read_text()) if path.is_file() else {}
