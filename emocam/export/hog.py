"""HOG features of face patches (scikit-image), their orientation histograms, and an append-only .npy per episode.

The .npy is valid after every append: rows go to the end of the file first, then the row count in the fixed-size
header is rewritten in place (one small write at offset 0). A process killed at any moment leaves a file that
np.load reads with the rows counted so far; at worst one appended row is not counted yet.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from emocam.export.options import HogOptions

DTYPE = np.dtype("<f4")
HEADER_LEN = 128  # magic (6) + version (2) + length (2) + the padded dict: room for a 20-digit row count
_MAGIC = b"\x93NUMPY\x01\x00"


def hog_input(patch_bgr: np.ndarray, opts: HogOptions) -> np.ndarray:
    """The gray size x size image that hog() sees."""
    gray = patch_bgr if patch_bgr.ndim == 2 else cv2.cvtColor(patch_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, (opts.size, opts.size), interpolation=cv2.INTER_AREA)


def hog_kwargs(opts: HogOptions) -> dict:
    return {"orientations": opts.orientations, "pixels_per_cell": (opts.pixels_per_cell,) * 2,
            "cells_per_block": (opts.cells_per_block,) * 2, "block_norm": "L2-Hys"}


def hog_features(patch_bgr: np.ndarray, opts: HogOptions) -> np.ndarray:
    from skimage.feature import hog

    return hog(hog_input(patch_bgr, opts), feature_vector=True, **hog_kwargs(opts)).astype(DTYPE)


def feature_length(opts: HogOptions) -> int:
    blocks = opts.size // opts.pixels_per_cell - opts.cells_per_block + 1
    return blocks * blocks * opts.cells_per_block ** 2 * opts.orientations


def orientation_histogram(vectors: np.ndarray, opts: HogOptions) -> np.ndarray:
    """(N, orientations) share of gradient energy per orientation bin (0-180 degrees), from (N, D) HOG vectors."""
    vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, feature_length(opts))
    per_bin = vectors.reshape(len(vectors), -1, opts.orientations).sum(axis=1)
    total = per_bin.sum(axis=1, keepdims=True)
    return np.divide(per_bin, total, out=np.zeros_like(per_bin), where=total > 0)


def bin_centers_deg(orientations: int) -> np.ndarray:
    return (np.arange(orientations) + 0.5) * 180.0 / orientations


def _header(rows: int, width: int) -> bytes:
    text = "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }" % (DTYPE.str, rows, width)
    room = HEADER_LEN - len(_MAGIC) - 2
    if len(text) + 1 > room:
        raise ValueError(f"HOG array header for {rows} x {width} does not fit {HEADER_LEN} bytes")
    return _MAGIC + room.to_bytes(2, "little") + (text.ljust(room - 1) + "\n").encode("latin1")


def append_rows(path: Path, rows: np.ndarray) -> int:
    """Append (N, D) float32 rows to the .npy at `path` (created when missing); returns the index of the first."""
    rows = np.ascontiguousarray(rows, dtype=DTYPE).reshape(-1, np.shape(rows)[-1])
    width = rows.shape[1]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_LEN:  # new, or created by a process killed before its header was written
            os.ftruncate(fd, 0)
            os.pwrite(fd, _header(0, width), 0)
            count = 0
        else:
            count, stored_width = read_shape(path)
            if stored_width != width:
                raise ValueError(f"{path} holds {stored_width}-long vectors, not {width}")
        offset = HEADER_LEN + count * width * DTYPE.itemsize
        os.pwrite(fd, rows.tobytes(), offset)  # overwrites a row a killed process appended but never counted
        os.pwrite(fd, _header(count + len(rows), width), 0)
        return count
    finally:
        os.close(fd)


def read_shape(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(HEADER_LEN)
    if not head.startswith(_MAGIC):
        raise ValueError(f"{path} is not a .npy file")
    import ast

    shape = ast.literal_eval(head[10:].decode("latin1"))["shape"]
    return int(shape[0]), int(shape[1])


def truncate_rows(path: Path, rows: int) -> None:
    """Keep the first `rows` rows (repair after a crash)."""
    count, width = read_shape(path)
    rows = min(rows, count)
    with open(path, "r+b") as f:
        f.write(_header(rows, width))
        f.truncate(HEADER_LEN + rows * width * DTYPE.itemsize)


def load_rows(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")
