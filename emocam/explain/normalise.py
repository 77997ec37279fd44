"""A stable scale for maps in video: per layer, running percentiles instead of each frame's own min and max,
which would stretch noise on a flat map to full contrast and make the overlay flicker."""

from __future__ import annotations

import numpy as np


class RunningRange:
    """Per layer, an exponential moving average of the p_low / p_high percentiles of its maps, frame by frame.

    `update` is the weight of a new frame (0.05: about a second to adapt at 20 analyses per second). The first
    frame of a layer sets its range. Maps are mapped to [0, 1] by that range and clipped.
    """

    def __init__(self, low: float = 1.0, high: float = 99.0, update: float = 0.05):
        self.low, self.high, self.update = low, high, update
        self.ranges: dict[str, tuple[float, float]] = {}

    def observe(self, layer: str, values: np.ndarray) -> tuple[float, float]:
        lo, hi = (float(v) for v in np.percentile(values, (self.low, self.high)))
        old = self.ranges.get(layer)
        if old is not None:
            a = self.update
            lo, hi = old[0] + a * (lo - old[0]), old[1] + a * (hi - old[1])
        self.ranges[layer] = (lo, hi)
        return lo, hi

    def normalise(self, layer: str, maps: np.ndarray) -> np.ndarray:
        """Observe this frame's maps of a layer (all faces and classes together) and return them scaled."""
        lo, hi = self.observe(layer, maps)
        span = hi - lo
        if span <= 1e-12 * max(1.0, abs(hi)):
            return np.zeros_like(maps, dtype=np.float32)  # a flat layer shows nothing rather than its noise
        return np.clip((maps - lo) * (1.0 / span), 0.0, 1.0).astype(np.float32, copy=False)


class TrackSmoother:
    """Per tracked face, an exponential moving average of its normalised maps (`alpha`: weight of a new one)."""

    def __init__(self, alpha: float = 0.5):
        self.alpha = alpha
        self._state: dict[int, dict[str, np.ndarray]] = {}

    def smooth(self, track_id: int, maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        old = self._state.get(track_id, {})
        out = {}
        for layer, new in maps.items():
            prev = old.get(layer)
            out[layer] = new if prev is None or prev.shape != new.shape else prev + self.alpha * (new - prev)
        self._state[track_id] = out
        return out

    def keep_only(self, track_ids: set[int]) -> None:
        """Forget faces the tracker dropped (memory stays bounded over a long session)."""
        for tid in [t for t in self._state if t not in track_ids]:
            del self._state[tid]
