"""What explaining costs: milliseconds per face for each mode on the analysis thread, and per frame for each
explain annotator on the publish thread (a cached frame, and a frame that brings a new analysis)."""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import cv2
import numpy as np

from emocam.explain.explainer import Explainer
from emocam.explain.options import ExplainConfig
from emocam.render.base import RenderInfo
from emocam.tracker import Tracker
from emocam.types import Analysis, Face

ANNOTATORS = ("heatmap", "layers", "classes", "histograms")


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and lazy imports
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 3)


def mode_costs(classifier, frame: np.ndarray, faces: list[Face], repeats: int = 20, rounds: int = 3) -> dict:
    """ms per face: plain classification (eager, and through the classifier's graph if it has one), then each
    mode's classify() + smooth() (the whole explain path of one analysis: hooks, maps, normalisation, statistics,
    smoothing). The modes take turns for `rounds` rounds and each keeps its best median, so a burst of load on a
    shared machine does not land on one mode only."""
    n = max(1, len(faces))
    tracked = [replace(f, track_id=i + 1) for i, f in enumerate(faces)]
    # The maps ride on the eager model's pass, so the baseline they add to is the eager classification; the graph
    # (a frozen CPU copy, or int8) is what classifying without maps costs.
    eager = copy.copy(classifier)
    eager.graph = None
    runs = {"classify_only": lambda: eager.classify(frame, faces)}
    if classifier.graph is not None:
        runs["classify_graph"] = lambda: classifier.classify(frame, faces)
    for mode in ("activation", "cam", "gradcam"):
        explainer = Explainer(classifier, ExplainConfig(mode=mode))
        runs[mode] = lambda e=explainer: e.smooth(e.classify(frame, tracked))
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            best[name] = min(best[name], _median_ms(fn, repeats))
    return {"faces": len(faces), **{name: round(v / n, 3) for name, v in best.items()}}


def explained_analysis(classifier, frame: np.ndarray, faces: list[Face], mode: str = "cam",
                       frames: int = 10) -> Analysis:
    """An analysis as the pipeline makes it (tracked, smoothed maps), after `frames` analyses of the same frame."""
    explainer, tracker = Explainer(classifier, ExplainConfig(mode=mode)), Tracker()
    analysed: list[Face] = []
    for i in range(frames):
        analysed = explainer.smooth(tracker.update(explainer.classify(frame, faces), i / 25))
    h, w = frame.shape[:2]
    return Analysis(frames - 1, (frames - 1) / 25, (w, h), tuple(analysed))


def render_costs(analysis: Analysis, background: np.ndarray, heights=(720, 1080), repeats: int = 60) -> dict:
    """Per annotator and output height: ms for a frame drawn with the analysis already prepared, and for a frame
    whose new analysis is drawn afresh (the heatmap does that for every analysis, ~20-30 a second; the insets at
    most refresh_hz = 10 times a second)."""
    from emocam.render import ANNOTATORS as REGISTRY

    info = RenderInfo({}, "timing", {})
    out: dict = {}
    for name in ANNOTATORS:
        out[name] = {}
        for height in heights:
            width = round(height * background.shape[1] / background.shape[0])
            scene0 = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
            annotator = REGISTRY.get(name)()
            scene = scene0.copy()
            annotator.annotate(scene, analysis, info)
            cached, fresh = [], []
            for _ in range(repeats):  # the same analysis again: only the paste or blend
                np.copyto(scene, scene0)
                started = time.perf_counter()
                annotator.annotate(scene, analysis, info)
                cached.append(time.perf_counter() - started)
            for i in range(repeats):  # a new analysis, a second later: every annotator draws it afresh
                new = replace(analysis, frame_index=analysis.frame_index + 1 + i, timestamp=analysis.timestamp + 1 + i)
                np.copyto(scene, scene0)
                started = time.perf_counter()
                annotator.annotate(scene, new, info)
                fresh.append(time.perf_counter() - started)
            out[name][f"{height}p"] = {"frame_ms": round(1000 * float(np.median(cached)), 3),
                                       "redraw_ms": round(1000 * float(np.median(fresh)), 3)}
    return out
