"""MTCNN that follows the faces it found, for live video: the same nets, a fraction of the work per frame.

A full MTCNN pass over a frame is mostly P-net sliding over every pyramid level. Faces in a video move a little
between frames, so this backend splits that search into pieces of about `search_budget` level pixels (whole small
levels, bands of rows of the big ones) and runs one piece per frame, round-robin: every face size is searched
once per cycle of a few frames at a constant cost per frame, with no frame paying for a whole pass. Faces already
found are re-checked on every frame by O-net alone on their last box (and a wider box, for fast moves), which
costs well under a millisecond and also re-centres the box. A tracked face whose O-net score falls below
`track_threshold` is dropped and comes back when the search finds it again.

After reset() (a new still image, a new video) and whenever the frame size changes, the first frame gets the whole
search, so a still image gets exactly the faces the plain `mtcnn` backend finds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field

from emocam.detect import DETECTORS
from emocam.detect.mtcnn import MTCNNDetector, MTCNNOptions, Probability
from emocam.nets.mtcnn import (
    CELL, NMS_ONET, STRIDE, AreaResampler, _square, nms, onet_stage, pnet_candidates, pnet_windows, pyramid_scales,
    rnet_stage,
)
from emocam.types import Face

# How much wider the second box is that each tracked face is re-checked in: O-net re-centres a face that moved
# by up to about a third of its size out of its old box when it sees the whole face.
WIDER = 1.3


class MTCNNTrackOptions(MTCNNOptions):
    # Smallest face searched for, in pixels of the image given to detect() (after detector.max_side): 24 at
    # 640x360 is an 72 px face in a 1080p frame.
    min_face_size: int = Field(24, ge=12)
    # P-net input pixels searched per frame: the cost of a frame. A 640x360 frame with min_face_size 24 has ~120k
    # level pixels in all, so 40000 searches all of it every 3-4 frames.
    search_budget: int = Field(40_000, ge=1_000)
    # O-net score a tracked face must keep to stay tracked (lower than the detection threshold: a face that was
    # found once is held through harder poses).
    track_threshold: Probability = 0.5


@dataclass(frozen=True)
class _Piece:
    scale: float
    rows: tuple[int, int] | None  # band of level rows; None = the whole level


@DETECTORS.register("mtcnn-track")
class MTCNNTrackDetector(MTCNNDetector):
    Options = MTCNNTrackOptions

    def __init__(self, options: MTCNNTrackOptions, device: torch.device, weights):
        super().__init__(options, device, weights)
        self.reset()

    def reset(self) -> None:
        self._tracked = torch.zeros(0, 5)
        self._shape: tuple[int, int] | None = None
        self._schedule: list[list[_Piece]] = []
        self._next = 0

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR image, got {image_bgr.dtype} {image_bgr.shape}")
        opts = self.options
        height, width = image_bgr.shape[:2]
        if (height, width) != self._shape:
            self.reset()
            self._shape = (height, width)
            self._schedule = plan_search(height, width, opts.min_face_size, opts.scale_factor, opts.search_budget)
            scales = pyramid_scales(height, width, opts.min_face_size, opts.scale_factor)
            pieces = [_Piece(scale, None) for scale in scales]
        else:
            pieces = self._schedule[self._next]
            self._next = (self._next + 1) % len(self._schedule)
        with torch.inference_mode():
            sampler = AreaResampler(image_bgr, self.device, bgr=True)
            found = [pnet_windows(sampler, self.pnet, p.scale, opts.thresholds[0], p.rows) for p in pieces]
            new = rnet_stage(pnet_candidates(found, self.device), sampler, self.rnet, opts.thresholds[1])
            new_boxes, new_points = onet_stage(new, sampler, self.onet, opts.thresholds[2])
            old_boxes, old_points = self._recheck(sampler)
            boxes = torch.cat([new_boxes, old_boxes])
            points = torch.cat([new_points, old_points])
            keep = nms(boxes, boxes[:, 4], NMS_ONET, mode="min")
            boxes, points = boxes[keep], points[keep]
        self._tracked = boxes.cpu()
        boxes, points = boxes.cpu().numpy(), points.cpu().numpy()
        return [Face(box=box[:4].copy(), score=float(box[4]), landmarks=marks) for box, marks in zip(boxes, points)]

    def _recheck(self, sampler: AreaResampler) -> tuple[torch.Tensor, torch.Tensor]:
        """O-net on each tracked face's last box and on a wider one around it; the better survives the NMS."""
        if not len(self._tracked):
            return torch.zeros(0, 5, device=self.device), torch.zeros(0, 5, 2, device=self.device)
        last = _square(self._tracked[:, :4].clone())
        centre = (last[:, :2] + last[:, 2:]) / 2
        half = (last[:, 2:3] - last[:, 0:1]) * (WIDER / 2)
        wider = torch.cat([centre - half, centre + half], dim=1)
        return onet_stage(torch.cat([last, wider]).to(self.device), sampler, self.onet, self.options.track_threshold)


def plan_search(height: int, width: int, min_face_size: float, factor: float, budget: int) -> list[list[_Piece]]:
    """Cut the pyramid into pieces of at most ~budget level pixels and deal them out to frames, biggest first.

    A level taller than the budget allows is cut into bands of rows that overlap by CELL - STRIDE rows, so that
    every 12x12 window lies inside one band; bands start on even rows, P-net's stride.
    """
    pieces: list[tuple[int, _Piece]] = []
    for scale in pyramid_scales(height, width, min_face_size, factor):
        level_h, level_w = int(height * scale + 1), int(width * scale + 1)
        band = max(CELL, (budget // level_w) // STRIDE * STRIDE)
        if band >= level_h:
            pieces.append((level_h * level_w, _Piece(scale, None)))
            continue
        step = band - (CELL - STRIDE)
        for first in range(0, level_h - CELL + 1, step):
            end = min(first + band, level_h)
            pieces.append(((end - first) * level_w, _Piece(scale, (first, end))))
    frames: list[list[_Piece]] = []
    loads: list[int] = []
    for area, piece in sorted(pieces, key=lambda p: -p[0]):
        # First fit: onto the first frame with room, else a new frame.
        for i, load in enumerate(loads):
            if load + area <= budget:
                frames[i].append(piece)
                loads[i] += area
                break
        else:
            frames.append([piece])
            loads.append(area)
    return frames
