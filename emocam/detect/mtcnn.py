"""MTCNN with facenet-pytorch 2.6.0's weights and cascade: slower than BlazeFace, finds smaller and turned faces."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from emocam.detect import DETECTORS
from emocam.detect.base import Detector, Probability, check_bgr
from emocam.nets.mtcnn import ONet, PNet, RNet, detect_faces
from emocam.types import Face
from emocam.weights import WeightStore

WEIGHTS = {"pnet": "mtcnn_pnet", "rnet": "mtcnn_rnet", "onet": "mtcnn_onet"}


class MTCNNOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Smallest face searched for, in pixels of the image given to detect(). Cost grows about with
    # (1 / min_face_size)^2; below P-net's 12 px window the frame would have to be upsampled.
    min_face_size: int = Field(40, ge=12)
    # Score a window must reach in P-net, R-net and O-net (the last is the reported face score).
    thresholds: tuple[Probability, Probability, Probability] = (0.6, 0.7, 0.7)
    # Ratio between pyramid levels (facenet's `factor`); closer to 1 means more levels, slower and more thorough.
    scale_factor: float = Field(0.709, gt=0.0, lt=1.0)


@DETECTORS.register("mtcnn")
class MTCNNDetector(Detector):
    Options = MTCNNOptions

    def __init__(self, options: MTCNNOptions, device: torch.device, weights: WeightStore):
        super().__init__(options, device, weights)
        self.pnet = self._load(PNet(), WEIGHTS["pnet"])
        self.rnet = self._load(RNet(), WEIGHTS["rnet"])
        self.onet = self._load(ONet(), WEIGHTS["onet"])

    def _load(self, net: torch.nn.Module, name: str) -> torch.nn.Module:
        net.load_state_dict(self.weights.state_dict(name))
        return net.to(self.device).eval()

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {name: self.weights.sha256(name) for name in WEIGHTS.values()}

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        check_bgr(image_bgr)
        opts = self.options
        with torch.inference_mode():
            boxes, points = detect_faces(
                image_bgr, self.device, self.pnet, self.rnet, self.onet,
                opts.min_face_size, opts.thresholds, opts.scale_factor, bgr=True,
            )
        return to_faces(boxes, points)


def to_faces(boxes: torch.Tensor, points: torch.Tensor) -> list[Face]:
    """The cascade's (N, 5) boxes with scores and (N, 5, 2) landmarks as Faces."""
    boxes, points = boxes.cpu().numpy(), points.cpu().numpy()
    return [Face(box=box[:4].copy(), score=float(box[4]), landmarks=marks) for box, marks in zip(boxes, points)]
