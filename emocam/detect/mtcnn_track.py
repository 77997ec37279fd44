"""MTCNN that follows the faces it found, for live video: the same nets, a fraction of the work per frame.

A full MTCNN pass over a frame is mostly P-net sliding over every pyramid level. Faces in a video move a little
between frames, so this backend spreads that search over a cycle of frames, about `search_budget` level pixels a
frame: the small levels (near, big faces) come round every few frames, the big levels (far, small faces) less
often and in bands of rows (see plan_search). The cost per frame is about constant, no
frame pays for a whole pass; a near face is found within a few frames, a far one within a few dozen. Faces
already found are re-checked on every frame by O-net alone on a square a little wider than their last box (about
0.5 ms a face), which also re-centres the box; windows of the search that land on them go no further than R-net.
A tracked face whose O-net score falls below `track_threshold` is dropped and comes back when the search finds it
again.

After reset() (a new still image, a new video) and whenever the frame size changes, the first frame gets the whole
search, so a still image gets exactly the faces the plain `mtcnn` backend finds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field

from emocam.detect import DETECTORS
from emocam.detect.base import Probability, check_bgr
from emocam.detect.mtcnn import MTCNNDetector, MTCNNOptions, to_faces
from emocam.nets.mtcnn import (
    CELL, NMS_ONET, STRIDE, AreaResampler, nms, onet_stage, overlap, pnet_candidates, pnet_windows,
    pyramid_scales, rnet_stage, square,
)
from emocam.types import Face

# How much wider than its last box a tracked face is re-checked in, so that O-net still sees the whole face after
# it moved by a tenth of its size between analysed frames (faster moves are caught by the search a few frames on).
WIDER = 1.15


class MTCNNTrackOptions(MTCNNOptions):
    # P-net input pixels searched per frame: the cost of a frame. A 640x360 frame with min_face_size 40 has ~45k
    # level pixels in all; with 4000, faces over ~160 / 80 / 40 px tall (at 640x360) are searched for every
    # 4 / 8 / 16 frames (over ~315 px: every 2): a new face near the camera shows within a few frames, one at the
    # far end of the room within ~0.5 s at 30 analyses a second. ~4 ms a 1080p frame here (2 cores), resize
    # included, whatever min_face_size is.
    search_budget: int = Field(4_000, ge=1_000)
    # O-net score a tracked face must keep to stay tracked (lower than the detection threshold: a face that was
    # found once is held through harder poses).
    track_threshold: Probability = 0.5


@dataclass(frozen=True)
class Piece:
    """Part of the search: one pyramid level, or a band of its rows, searched once every `period` frames."""

    scale: float
    rows: tuple[int, int] | None  # (first row, end row) of the level; None = the whole level
    period: int
    area: int  # level pixels P-net reads


@DETECTORS.register("mtcnn-track")
class MTCNNTrackDetector(MTCNNDetector):
    Options = MTCNNTrackOptions

    def __init__(self, options: MTCNNTrackOptions, device: torch.device, weights):
        super().__init__(options, device, weights)
        self.reset()

    def reset(self) -> None:
        self._tracked = torch.zeros(0, 5)
        self._shape: tuple[int, int] | None = None
        self._plan: list[list[Piece]] = []
        self._frame = 0

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        check_bgr(image_bgr)
        opts = self.options
        height, width = image_bgr.shape[:2]
        if (height, width) != self._shape:
            self.reset()
            self._shape = (height, width)
            self._plan = plan_search(height, width, opts.min_face_size, opts.scale_factor, opts.search_budget)
            scales = pyramid_scales(height, width, opts.min_face_size, opts.scale_factor)
            pieces = [(scale, None) for scale in scales]
        else:
            self._frame += 1
            pieces = [(p.scale, p.rows) for p in self._plan[self._frame % len(self._plan)]]
        with torch.inference_mode():
            sampler = AreaResampler(image_bgr, self.device, bgr=True)
            old_boxes, old_points = self._recheck(sampler)
            found = [pnet_windows(sampler, self.pnet, scale, opts.thresholds[0], rows) for scale, rows in pieces]
            new = rnet_stage(pnet_candidates(found, self.device), sampler, self.rnet, opts.thresholds[1])
            if len(old_boxes) and len(new):
                # The search finds the tracked faces again; O-net has just re-checked those.
                new = new[~(overlap(new[:, :4], old_boxes[:, :4], "iou") > 0.3).any(1)]
            new_boxes, new_points = onet_stage(new, sampler, self.onet, opts.thresholds[2])
            boxes = torch.cat([new_boxes, old_boxes])
            points = torch.cat([new_points, old_points])
            keep = nms(boxes, boxes[:, 4], NMS_ONET, mode="min")
            boxes, points = boxes[keep], points[keep]
        self._tracked = boxes.cpu()
        return to_faces(boxes, points)

    def _recheck(self, sampler: AreaResampler) -> tuple[torch.Tensor, torch.Tensor]:
        """O-net on a slightly wider square around each tracked face's last box: its score says whether the face is
        still there, its box regression follows the face as it moves."""
        if not len(self._tracked):
            return torch.zeros(0, 5, device=self.device), torch.zeros(0, 5, 2, device=self.device)
        last = square(self._tracked[:, :4].clone())
        centre = (last[:, :2] + last[:, 2:]) / 2
        half = (last[:, 2:3] - last[:, 0:1]) * (WIDER / 2)
        wider = torch.cat([centre - half, centre + half], dim=1)
        return onet_stage(wider.to(self.device), sampler, self.onet, self.options.track_threshold)


def plan_search(height: int, width: int, min_face_size: float, factor: float, budget: int) -> list[list[Piece]]:
    """The search spread over a cycle of frames: the pieces each frame searches, about `budget` level pixels.

    A level is searched whole once every `period` frames, where the period grows with the square root of its area:
    the small levels, where near (big) faces are found, come round every frame or two, the big ones, for far faces,
    every 8-16 frames; periods are powers of two, so that they nest in one cycle. A level bigger than half the
    budget is cut into bands of whole rows of P-net windows (12 rows, starting every 2nd row), all of the same
    period. Pieces are then given the phase in their period that evens out the load of the cycle's frames; few
    pieces a frame matter too, as each P-net call has a fixed cost of ~0.2 ms.
    """
    levels = [(scale, int(height * scale + 1), int(width * scale + 1))
              for scale in pyramid_scales(height, width, min_face_size, factor)]
    if not levels:  # min_face_size beyond the frame's short side: nothing to search, as in plain mtcnn
        return [[]]
    roots = sum(math.sqrt(h * w) for _, h, w in levels)
    pieces = []
    for scale, level_h, level_w in levels:
        area = level_h * level_w
        period = 2 ** max(0, round(math.log2(max(1.0, math.sqrt(area) * roots / budget))))
        starts = list(range(0, level_h - CELL + 1, STRIDE))
        n = min(math.ceil(area / (budget / 2)), len(starts))
        if n <= 1:
            pieces.append(Piece(scale, None, period, area))
            continue
        for i in range(n):
            group = starts[i * len(starts) // n:(i + 1) * len(starts) // n]
            rows = (group[0], group[-1] + CELL)
            pieces.append(Piece(scale, rows, period, (rows[1] - rows[0]) * level_w))
    cycle = max(p.period for p in pieces)
    frames: list[list[Piece]] = [[] for _ in range(cycle)]
    load = [0] * cycle
    for piece in sorted(pieces, key=lambda p: -p.area):
        phase = min(range(piece.period), key=lambda f: max(load[f::piece.period]))
        for f in range(phase, cycle, piece.period):
            frames[f].append(piece)
            load[f] += piece.area
    return frames
