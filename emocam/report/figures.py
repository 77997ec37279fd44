"""PNG figures for session reports and dataset summaries, drawn off-screen (Figure + Agg, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emocam.imageio import save_figure
from emocam.types import EMOTIONS

# The overlay colours (render/colors.py, BGR) as matplotlib RGB, so figures and video agree.
EMOTION_RGB = {"angry": "#dc2828", "disgust": "#288c28", "fear": "#a03ca0", "happy": "#ffc800",
               "sad": "#2878c8", "surprise": "#00dcdc", "neutral": "#a0a0a0"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def class_distribution(counts: dict[str, int], path: Path, title: str, ylabel: str,
                       second: dict[str, int] | None = None, second_label: str = "") -> Path:
    """Bars per emotion; `second` (e.g. episodes, far fewer) as hatched bars beside them on their own axis."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(7.5, 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(EMOTIONS))
    width = 0.4 if second else 0.7
    bars = ax.bar(x - (width / 2 if second else 0), [counts.get(n, 0) for n in EMOTIONS], width,
                  color=[EMOTION_RGB[n] for n in EMOTIONS], edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel(ylabel)
    if second:
        right = ax.twinx()
        more = right.bar(x + width / 2, [second.get(n, 0) for n in EMOTIONS], width, color="white",
                         edgecolor="black", hatch="//", linewidth=0.5)
        right.bar_label(more, fontsize=8)
        right.set_ylabel(f"{second_label} (hatched)")
        right.set_ylim(0, max(1, max(second.values(), default=0)) * 1.15)
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(1, max(counts.values(), default=0)) * 1.15)
    ax.set_xticks(x, EMOTIONS)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def hog_histograms(per_class: dict[str, list[float]], orientations: int, path: Path, title: str) -> Path:
    """Mean HOG orientation histogram per class (share of gradient energy per orientation bin, 0-180 degrees)."""
    from emocam.export.hog import bin_centers_deg

    labels = [n for n in EMOTIONS if n in per_class]
    fig = _figure(max(6.0, 2.2 * len(labels) + 0.6), 2.8)
    centers = bin_centers_deg(orientations)
    top = max(max(v) for v in per_class.values()) * 1.1 if per_class else 1.0
    for k, name in enumerate(labels, 1):
        ax = fig.add_subplot(1, len(labels), k)
        ax.bar(centers, per_class[name], width=180 / orientations * 0.9, color=EMOTION_RGB[name],
               edgecolor="black", linewidth=0.4)
        ax.set_xlim(0, 180)
        ax.set_ylim(0, top)
        ax.set_xticks([0, 90, 180])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("orientation (deg)", fontsize=7)
        ax.tick_params(labelsize=7)
        if k > 1:
            ax.set_yticklabels([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def timeline(tracks: dict[int, tuple[np.ndarray, np.ndarray]], path: Path, duration: float,
             gap_s: float = 1.0) -> Path:
    """Per track: the seven (smoothed) probabilities over time, and the top class as a colour strip above.
    Lines break where the face was away for more than `gap_s`."""
    n = max(1, len(tracks))
    fig = _figure(10, 1.0 + 2.2 * n)
    for k, (track, (t, probs)) in enumerate(sorted(tracks.items()), 1):
        ax = fig.add_subplot(n, 1, k)
        breaks = np.flatnonzero(np.diff(t) > gap_s) + 1
        t_plot = np.insert(t.astype(float), breaks, np.nan)
        p_plot = np.insert(probs.astype(float), breaks, np.nan, axis=0)
        for j, name in enumerate(EMOTIONS):
            ax.plot(t_plot, p_plot[:, j], color=EMOTION_RGB[name], linewidth=1.2, label=name)
        step = float(np.median(np.diff(t))) if len(t) > 1 else 0.1
        top = probs.argmax(axis=1)
        # One bar per run of the same top class (and no gap): few rectangles even for hours of video.
        starts = np.flatnonzero(np.r_[True, (np.diff(top) != 0) | (np.diff(t) > gap_s)])
        ends = np.r_[starts[1:], len(t)]
        for a, b in zip(starts, ends):
            ax.broken_barh([(t[a], t[b - 1] - t[a] + step)], (1.03, 0.07), color=EMOTION_RGB[EMOTIONS[top[a]]],
                           clip_on=False)
        ax.set_xlim(0, max(duration, float(t[-1]) + step))
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {track}")
        if k == n:
            ax.set_xlabel("seconds from session start")
        handles = ax.get_legend_handles_labels()
    fig.legend(*handles, ncol=7, fontsize=8, loc="upper center", frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (1.0 + 2.2 * n)), h_pad=2.0)
    return save_figure(fig, path)


def layer_magnitude(names: list[str], values: list[np.ndarray], path: Path, key: str) -> Path:
    """Per layer: median activation magnitude over all analysed faces, with the 10-90 percentile range."""
    fig = _figure(max(6.0, 0.5 * len(names) + 2), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    median = np.array([np.median(v) for v in values])
    low = np.array([np.percentile(v, 10) for v in values])
    high = np.array([np.percentile(v, 90) for v in values])
    ax.fill_between(x, low, high, color="#9ecae1", label="10-90 %")
    ax.plot(x, median, "o-", color="#08519c", label="median")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(f"activation {key}")
    ax.set_title("activation magnitude per layer (all faces, all analysed frames)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def class_activation_histograms(per_class: dict[str, np.ndarray], layer: str, path: Path, key: str) -> Path:
    """One histogram per predicted class of a layer's activation magnitude, on shared bins."""
    labels = [n for n in EMOTIONS if n in per_class and len(per_class[n])]
    everything = np.concatenate([per_class[n] for n in labels])
    bins = np.linspace(float(everything.min()), float(everything.max()) + 1e-9, 21)
    fig = _figure(max(5.0, 2.2 * len(labels) + 0.6), 2.8)
    for k, name in enumerate(labels, 1):
        ax = fig.add_subplot(1, len(labels), k)
        ax.hist(per_class[name], bins=bins, color=EMOTION_RGB[name], edgecolor="black", linewidth=0.4)
        ax.set_title(f"{name} (n={len(per_class[name])})", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"layer {layer}: activation {key} per predicted class", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
