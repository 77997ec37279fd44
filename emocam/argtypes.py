"""argparse types shared by the commands."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """An int of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value
