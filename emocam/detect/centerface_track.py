"""CenterFace that follows the faces it found, for live video: a full search every few frames, cheap checks between.

A full CenterFace pass over a 640x360 frame costs ~18-25 ms here; between two of them a face moves by a fraction of
its size. So the whole frame is searched once every `search_every` frames (twice as often while no face is tracked),
and on every frame each face already found is looked for again in a square crop around its last box (twice its
size, scaled to 96x96: ~1 ms a face; the crops go through the network in one batch). A crop keeps the face tracked
while CenterFace still scores it over `track_threshold` there, and gives its new box and landmarks. A face that
enters the frame shows at the next full search (within `search_every` / 2 frames when nobody was there); a face
missing from its crop (it left, turned away or moved further than the crop reaches) makes that frame search the
whole frame at once.

After reset() (a new still image, a new video) and whenever the frame size changes, the first frame gets the full
search, so a still image gets exactly the faces the plain `centerface` backend finds.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pydantic import Field

from emocam.detect import DETECTORS
from emocam.detect.base import Probability, check_bgr
from emocam.detect.centerface import CenterFaceDetector, CenterFaceOptions, merge, to_faces
from emocam.types import Face

CROP = 96  # side of the re-check crops given to the network (a multiple of 32)
CONTEXT = 2.0  # crop side / the face's longer side: room for the motion between frames, and context for the net


class CenterFaceTrackOptions(CenterFaceOptions):
    # Frames from one full search to the next: how long a new face can go unseen (12: 0.4 s at 30 analyses a
    # second). The search's cost is spread over these frames: ~25 ms / 12 ~= 2 ms a frame at 640x360 here. While no
    # face is tracked there are no crops to check, so the search comes twice as often for the same cost a frame.
    search_every: int = Field(12, ge=1)
    # Score a face must keep in its crop to stay tracked (below `threshold`: a face found once is held through
    # harder poses and blur).
    track_threshold: Probability = 0.25


@DETECTORS.register("centerface-track")
class CenterFaceTrackDetector(CenterFaceDetector):
    Options = CenterFaceTrackOptions

    def __init__(self, options: CenterFaceTrackOptions, device: torch.device, weights):
        super().__init__(options, device, weights)
        self.reset()

    def reset(self) -> None:
        self._tracked = np.zeros((0, 15), np.float32)
        self._shape: tuple[int, int] | None = None
        self._since_search = 0  # frames since the last full search

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        check_bgr(image_bgr)
        opts = self.options
        if image_bgr.shape[:2] != self._shape:
            self.reset()
            self._shape = image_bgr.shape[:2]
            due = True
        else:
            self._since_search += 1
            period = opts.search_every if len(self._tracked) else max(1, opts.search_every // 2)
            due = self._since_search >= period
        rows = self._recheck(image_bgr)
        if due or len(rows) < len(self._tracked):  # a face lost in its crop may have moved fast: look everywhere
            self._since_search = 0
            found = self.net.detect([image_bgr], opts.threshold, opts.nms_iou)[0]
            rows = merge(np.concatenate([rows, found]), opts.nms_iou)
        self._tracked = rows
        return to_faces(rows)

    def _recheck(self, image_bgr: np.ndarray) -> np.ndarray:
        """Each tracked face looked for in a crop around its last box; (N, 15) rows of the faces still there."""
        if not len(self._tracked):
            return self._tracked
        crops, origins, scales = [], [], []
        for x1, y1, x2, y2 in self._tracked[:, :4]:
            side = max(x2 - x1, y2 - y1, 1.0) * CONTEXT
            left, top = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
            k = CROP / side
            # One affine warp cuts, scales and pads (outside the frame: black) the crop.
            warp = np.float32([[k, 0, -left * k], [0, k, -top * k]])
            crops.append(cv2.warpAffine(image_bgr, warp, (CROP, CROP), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT))
            origins.append((left, top))
            scales.append(1 / k)
        found = self.net.detect(crops, self.options.track_threshold, self.options.nms_iou)
        kept = []
        h, w = image_bgr.shape[:2]
        for rows, (left, top), scale in zip(found, origins, scales):
            if not len(rows):
                continue
            # The face is the detection nearest the crop's centre, where the last box was (a neighbour may show
            # at the crop's edge).
            off_centre = np.abs((rows[:, 0:2] + rows[:, 2:4]) / 2 - CROP / 2).max(1)
            nearest = int(np.argmin(off_centre))
            if off_centre[nearest] > CROP / 4:
                continue
            best = rows[nearest].copy()
            best[:4] = (best[:4] * scale + (left, top, left, top)).clip(0, (w, h, w, h))  # crop -> frame pixels
            best[5:] = best[5:] * scale + (left, top) * 5
            kept.append(best)
        return merge(np.array(kept, np.float32).reshape(-1, 15), self.options.nms_iou)

