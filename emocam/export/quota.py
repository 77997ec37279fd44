"""Disk limits for the export: the export root's total size and the free space left on its disk."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

MB = 1024 * 1024


def folder_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


class Quota:
    """`exceeded()` says why export must pause, or None. The root's size is counted once and then kept up to
    date from what the exporter writes; while paused it is counted again now and then (files may be deleted)."""

    def __init__(self, root: Path, max_bytes: int | None, min_free_bytes: int, recount_s: float = 5.0):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.recount_s = recount_s
        self.used = folder_bytes(self.root) if max_bytes is not None else 0
        self._counted_at = time.monotonic()

    def add(self, n: int) -> None:
        self.used += n

    def exceeded(self, paused: bool = False) -> str | None:
        if self.max_bytes is not None:
            if paused and time.monotonic() - self._counted_at >= self.recount_s:
                self.used, self._counted_at = folder_bytes(self.root), time.monotonic()
            if self.used >= self.max_bytes:
                return f"{self.root} holds {self.used / MB:.1f} MB, the limit is {self.max_bytes / MB:.1f} MB " \
                       "(export.max_mb)"
        if self.min_free_bytes:
            free = shutil.disk_usage(self.root).free
            if free < self.min_free_bytes:
                return f"only {free / MB:.0f} MB free on the disk of {self.root}, export keeps " \
                       f"{self.min_free_bytes / MB:.0f} MB free (export.min_free_mb)"
        return None
