"""Time a face costs each classifier backend, called as the live path calls it for a one-face frame.

Each backend's predict_crops([crop]) runs on every crop in turn (preprocess, forward pass, softmax). The backends
take turns within each round, in an order that rotates from round to round, so that a slow spell of a shared
machine (these are virtual CPUs) falls on all of them rather than on whichever ran then; the median round is
reported. CPU time is the process's (all torch threads): with 2 threads torch's workers spin while they wait,
so CPU time can be nearly twice the wall time, and a backend's cheapest thread count is part of the answer.

The backends are built afresh for each thread count, with torch set to it, as a daemon with that
runtime.torch_threads builds them: frozen graphs pack their weights for the thread count they are made with
(repvgg-fer-int8 made with 2 threads and run with 1 costs ~1.8x its CPU a face).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from emocam.progress import progress


@dataclass(frozen=True)
class FaceTime:
    classifier: str
    threads: int
    wall_ms: float  # median over rounds of (round's wall time / faces)
    cpu_ms: float
    wall_ms_min: float
    cpu_ms_min: float

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def time_per_face(build: Callable[[int], dict], crops: list[np.ndarray], threads: list[int], rounds: int,
                  warmup: int = 50) -> list[FaceTime]:
    """Per thread count and backend, the time one face costs (see the module's text). build(n) gives the
    backends by name, made with n torch threads."""
    if not crops:
        raise ValueError("no crops to time")
    before = torch.get_num_threads()
    out: list[FaceTime] = []
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            classifiers = build(n_threads)
            torch.set_num_threads(n_threads)  # whatever building did (select_device sets the configured count)
            names = list(classifiers)
            if not names:
                continue
            for classifier in classifiers.values():  # lazy set-up and caches, outside the measurement
                for crop in crops[:warmup]:
                    classifier.predict_crops([crop])
            wall: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, list[float]] = {name: [] for name in names}
            for r in progress(range(rounds), rounds, f"timing, {n_threads} thread(s)"):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    predict = classifiers[name].predict_crops
                    t, c = time.perf_counter(), time.process_time()
                    for crop in crops:
                        predict([crop])
                    wall[name].append((time.perf_counter() - t) * 1e3 / len(crops))
                    cpu[name].append((time.process_time() - c) * 1e3 / len(crops))
            out += [FaceTime(name, n_threads, statistics.median(wall[name]), statistics.median(cpu[name]),
                             min(wall[name]), min(cpu[name])) for name in names]
    finally:
        torch.set_num_threads(before)
    return out
