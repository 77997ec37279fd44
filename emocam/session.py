"""Per-run session folders that never overwrite each other."""

from __future__ import annotations

import time
from pathlib import Path


def new_session_dir(root: Path, now: float | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    for n in range(1, 1000):
        path = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()  # atomic: two daemons started in the same second get different folders
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new session folder in {root}")
