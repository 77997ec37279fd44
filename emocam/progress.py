"""Progress for long work, on stderr, so stdout stays clean for JSON."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", every_s: float = 0.5) -> Iterator[T]:
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]
    stream = sys.stderr
    start = last = time.monotonic()
    n = 0
    for n, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            _line(stream, desc, n, total, now - start, end="\r")
    if n:
        _line(stream, desc, n, total, time.monotonic() - start, end="\n")


def _line(stream, desc: str, n: int, total: int | None, elapsed: float, end: str) -> None:
    rate = n / elapsed if elapsed > 0 else 0.0
    if total:
        eta = (total - n) / rate if rate else 0.0
        text = f"{desc} {n}/{total} ({100 * n / total:.0f}%) {rate:.1f}/s eta {eta:.0f}s"
    else:
        text = f"{desc} {n} {rate:.1f}/s"
    stream.write(text.ljust(60) + end)
    stream.flush()
