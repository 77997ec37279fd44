"""RepVGG-Plus emotion classifier trained by `emocam train classifier` (deploy weights: one 3x3 conv per block).

Input: 48x48 gray, float32 in [-1, 1] (x/255, then (x-0.5)*2), as in training (emocam.nets.repvgg_plus.normalise_u8).
Crop: fer's window (the box made square by growing its short side, plus 10 px each side, the frame padded with the
mean of its last two rows), scaled to 48x48. FER2013's faces were cut by a face detector with some room around the
face; the shipped model is trained on them, fer's recipe was made to show fer's FER2013 model faces framed that
way, and sharing the window keeps this backend's explain maps and mini-xception's on the same frame region.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from emocam.classify import CLASSIFIERS
from emocam.classify.base import Classifier
from emocam.classify.mini_xception import fer_clamped_window, fer_gray_crop
from emocam.errors import WeightsError
from emocam.nets.repvgg_plus import VARIANTS, load_deployed, matching_variants, normalise_u8
from emocam.train.emotion_data import resize_face
from emocam.types import Face
from emocam.weights import names_a_file


class RepVGGOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A name in models/manifest.toml (its entry's `arch` names the variant), or a deploy.pt written by
    # `emocam train classifier` (the variant is recognised from the tensors' shapes).
    weights: str = "repvgg_fer"
    # The variant of a weights file whose tensors fit several (e.g. repvggplus-fer-m and repvggplus-face64-m);
    # unset, the one `emocam train classifier` recorded in the best.pt beside it.
    arch: str | None = None


@CLASSIFIERS.register("repvgg-fer")
class RepVGGClassifier(Classifier):
    Options = RepVGGOptions
    cpu_graph_kind = "onednn"

    def __init__(self, options: RepVGGOptions, device: torch.device, weights):
        super().__init__(options, device, weights)
        if names_a_file(options.weights):
            arch, state, self._sha256 = self._from_file(options.weights, options.arch, weights)
        else:
            entry = weights.entry(options.weights)
            arch = entry.get("arch")
            if arch not in VARIANTS:
                raise WeightsError(f"weights {options.weights!r}: the manifest entry needs arch = one of "
                                   f"{', '.join(VARIANTS)} (has {arch!r})")
            state, self._sha256 = weights.state_dict(options.weights), weights.sha256(options.weights)
        self.arch, self.config = arch, VARIANTS[arch]
        if self.config.in_channels != 1:
            raise WeightsError(f"weights {options.weights!r}: {arch} takes RGB input; this backend feeds gray faces")
        self.size = self.config.input_size
        self.model = load_deployed(arch, state, device)

    @staticmethod
    def _from_file(ref: str, arch: str | None, weights) -> tuple[str, dict[str, torch.Tensor], str]:
        where = f"classifier.repvgg-fer.weights = {ref!r}"
        try:
            path, sha256 = weights.locate(ref)
        except WeightsError as exc:
            raise WeightsError(f"{where}: {exc}; give a deploy.pt from `emocam train classifier` or a name in "
                               "models/manifest.toml") from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
            raise WeightsError(f"{where}: not a torch weights file ({type(exc).__name__})") from None
        fits = matching_variants(state) if isinstance(state, dict) else []
        if not fits:
            hint = " (this is a training checkpoint: use deploy.pt beside it)" if isinstance(state, dict) and (
                "model" in state or any(k.endswith(".bn.weight") for k in state)) else ""
            raise WeightsError(f"{where}: not the deploy weights of a RepVGG-Plus variant{hint}")
        if arch is None and len(fits) > 1:  # the best.pt training wrote beside the file may say which
            arch = trained_arch(path)
            if arch not in fits:
                raise WeightsError(f"{where}: these weights fit {' and '.join(fits)}; set "
                                   "classifier.repvgg-fer.arch to the one they were trained as")
        if arch is not None and arch not in fits:
            raise WeightsError(f"{where}: these are {' or '.join(fits)} weights, not {arch} "
                               "(classifier.repvgg-fer.arch)")
        return arch or fits[0], state, sha256

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
        return {self.options.weights: self._sha256}


def trained_arch(deploy: Path) -> str | None:
    """The variant a deploy.pt was trained as, from the best.pt `emocam train classifier` writes beside it. Needed
    where the weights' shapes fit several variants (fer-m and face64-m differ only in input size and stride)."""
    best = Path(deploy).expanduser().with_name("best.pt")
    if not best.is_file():
        return None
    try:
        arch = torch.load(best, map_location="cpu", weights_only=True).get("arch")
    except Exception:  # noqa: BLE001 - an unreadable neighbour just leaves the variant to the weights' shapes
        return None
    return arch if arch in VARIANTS else None
