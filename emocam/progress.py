"""Progress for long work, on stderr, so stdout stays clean for JSON."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

QUIET = False  # set by `-q` (emocam.log.setup_logging)
LOG_EVERY_S = 30.0  # not a terminal (CI, nohup, a log file): a whole line this often instead of a redrawn one


def progress(items: Iterable[T], total: int | None = None, desc: str = "", every_s: float = 0.5) -> Iterator[T]:
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]
    stream = sys.stderr
    if QUIET:
        yield from items
        return
    live = stream.isatty()
    end, every_s = ("\r", every_s) if live else ("\n", max(every_s, LOG_EVERY_S))
    start = last = time.monotonic()
    n = 0
    redrawn = False  # a \r line is on the terminal: end it even when the work stops half way
    try:
        for n, item in enumerate(items, 1):
            yield item
            now = time.monotonic()
            if now - last >= every_s:
                last = now
                _line(stream, desc, n, total, now - start, end=end)
                redrawn = live
        if n:
            _line(stream, desc, n, total, time.monotonic() - start, end="\n")
            redrawn = False
    finally:
        if redrawn:
            stream.write("\n")
            stream.flush()


def _line(stream, desc: str, n: int, total: int | None, elapsed: float, end: str) -> None:
    rate = n / elapsed if elapsed > 0 else 0.0
    if total:
        eta = (total - n) / rate if rate else 0.0
        text = f"{desc} {n}/{total} ({100 * n / total:.0f}%) {rate:.1f}/s eta {eta:.0f}s"
    else:
        text = f"{desc} {n} {rate:.1f}/s"
    stream.write((text.ljust(60) if end == "\r" else text) + end)
    stream.flush()
