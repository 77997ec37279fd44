"""Logging set-up: a line goes to sys.stderr as it is when the line is written."""

from __future__ import annotations

import io
import sys

from loguru import logger

from emocam.config import LoggingConfig
from emocam.log import setup_logging


def test_a_line_goes_to_the_stderr_of_its_moment_not_to_a_closed_one(monkeypatch):
    # a test harness captures one test's stderr and closes it afterwards; a daemon thread may log later
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging(LoggingConfig())
    logger.info("during the first")
    written = first.getvalue()
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logger.info("after it")
    assert "during the first" in written
    assert "after it" in second.getvalue() and "Logging error" not in second.getvalue()
