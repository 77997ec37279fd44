"""Logging through loguru: to stderr (stdout carries JSON) and optionally to a file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from loguru import logger

from emocam.config import LoggingConfig


def setup_logging(cfg: LoggingConfig, verbose: int = 0, quiet: bool = False, file: Path | None = None) -> None:
    """stderr at the configured level; `file` (the daemon's, resolved against the config file) at DEBUG."""
    import emocam.progress

    emocam.progress.QUIET = quiet
    logger.remove()
    level = "WARNING" if quiet else ("DEBUG" if verbose else cfg.level)
    # diagnose=False: loguru would print variable values in tracebacks, and those can hold secrets.
    logger.add(_Stderr(), level=level, format="<level>{level: <7}</level> {message}", colorize=None,
               diagnose=False)
    if file:
        file.parent.mkdir(parents=True, exist_ok=True)
        logger.add(file, level="DEBUG", rotation="20 MB", retention=5, enqueue=True, diagnose=False)
    # Third-party loggers stay quiet; obsws-python logs its password at INFO.
    logging.getLogger("obsws_python").setLevel(logging.CRITICAL)


class _Stderr:
    """sys.stderr as it is when a line is written, not when logging was set up: whoever swaps sys.stderr (a test
    harness capturing one test's output, then closing it) must not leave a background thread's next line
    writing into a closed stream."""

    def write(self, message: str) -> None:
        sys.stderr.write(message)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:  # loguru colours a terminal only
        return sys.stderr.isatty()
