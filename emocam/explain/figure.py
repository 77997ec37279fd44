"""The offline figure of one face: a row per layer; columns: the face the model saw, then the seven classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emocam.explain.maps import FaceMaps, upsample
from emocam.imageio import save_figure
from emocam.types import EMOTIONS, Face

CELL_IN = 1.15  # inches per map


def explain_figure(face: Face, path: Path, title: str) -> Path:
    """Write the figure as PNG (atomically) and return its path. Maps are on their layer's scale (0..1), shown
    over the model's input picture; a class-agnostic layer fills the first class column only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fm: FaceMaps = face.explanation
    rows, cols = len(fm.layers), 1 + len(EMOTIONS)
    side = 64
    gray = fm.crop if fm.crop is not None else np.zeros((side, side), np.uint8)
    probs = face.probs if face.probs is not None else np.zeros(len(EMOTIONS), np.float32)
    predicted = int(np.argmax(probs))

    left, right, top, bottom, gap = 1.1, 1.0, 0.85, 0.1, 0.06  # inches
    width = left + cols * CELL_IN + (cols - 1) * gap + right
    height = top + rows * CELL_IN + (rows - 1) * gap + bottom
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={"wspace": gap / CELL_IN, "hspace": gap / CELL_IN})
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height)
    for r, name in enumerate(fm.layers):
        stack = fm.maps[r]
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title("face" if c == 0 else f"{EMOTIONS[c - 1]}\n{float(probs[c - 1]):.2f}", fontsize=8,
                             fontweight="bold" if c - 1 == predicted else "normal")
            if c == 0:
                ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
                ax.set_ylabel(f"{name}\n{stack.shape[-2]}x{stack.shape[-1]}", fontsize=7, rotation=0,
                              ha="right", va="center")
                continue
            if stack.shape[0] == 1 and c > 1:
                ax.axis("off")
                if c == 2:
                    ax.text(0.02, 0.5, "class-agnostic:\nsame map for\nevery class", fontsize=7, va="center",
                            transform=ax.transAxes)
                continue
            m = upsample(stack[c - 1] if stack.shape[0] > 1 else stack[0], (side, side))
            ax.imshow(gray, cmap="gray", vmin=0, vmax=255, extent=(0, side, side, 0))
            ax.imshow(m, cmap="jet", vmin=0, vmax=1, alpha=0.6, extent=(0, side, side, 0))
    bar_ax = fig.add_axes((1 - (right - 0.15) / width, 0.25, 0.15 / width, 0.5))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), cax=bar_ax)
    bar.set_label("map on its layer's scale (running p1..p99 -> 0..1), drawn at 60 % over the face", fontsize=8)
    fig.suptitle(title, fontsize=10, y=1 - 0.15 / height, va="top")
    return save_figure(fig, path)
