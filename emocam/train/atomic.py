"""Checkpoint and weight files written so that a kill mid-write leaves the previous file intact."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_atomic(path: Path, payload) -> Path:
    """torch.save through a .part file beside `path`, then one rename."""
    tmp = path.with_name(path.name + ".part")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path
