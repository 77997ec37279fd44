"""What every emotion classifier backend provides."""

from __future__ import annotations

import contextlib
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from emocam.types import Face
from emocam.weights import WeightStore


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Classifier:
    """A backend file subclasses this, registers itself with @CLASSIFIERS.register(name) and may declare Options.

    `model` is the torch module (explain hooks attach to its convolutions); `preprocess` turns face crops into
    the model's input batch; `crop` cuts a face out of a full frame the way the model was trained to see it.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    model: torch.nn.Module
    # Reduced precision for forward passes (torch.float16 on CUDA when runtime.half); None = float32.
    precision: torch.dtype | None = None

    def __init__(self, options: BaseModel, device: torch.device, weights: WeightStore):
        self.options = options
        self.device = device
        self.weights = weights

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context every forward pass of this model (classification or maps) runs in."""
        if self.precision is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision)

    def crop(self, frame_bgr: np.ndarray, face: Face) -> np.ndarray:
        raise NotImplementedError

    def crop_window(self, face: Face, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) in frame pixels that crop() shows the model (may reach outside the frame): where the
        model's input, and so every explain map, lies in the frame. This default suits a crop of the box itself."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
        return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)

    def preprocess(self, crops_bgr: list[np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def predict_crops(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        """(N, 7) probabilities in EMOTIONS order for already-cut face crops."""
        if not crops_bgr:
            return np.zeros((0, 7), np.float32)
        with self.autocast():
            logits = self.model(self.preprocess(crops_bgr).to(self.device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def classify(self, frame_bgr: np.ndarray, faces: list[Face]) -> list[Face]:
        probs = self.predict_crops([self.crop(frame_bgr, f) for f in faces])
        return [f.with_probs(p) for f, p in zip(faces, probs)]

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {}
