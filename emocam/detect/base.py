"""What every face detector backend provides."""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from emocam.types import Face
from emocam.weights import WeightStore


# A score threshold in a backend's options.
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def check_bgr(image: np.ndarray) -> None:
    """What every detect() accepts; anything else is a caller's bug, said plainly."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {image.dtype} {image.shape}")


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Detector:
    """A backend file subclasses this, registers itself with @DETECTORS.register(name) and may declare Options."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel, device: torch.device, weights: WeightStore):
        self.options = options
        self.device = device
        self.weights = weights

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 BGR image, boxes in that image's pixels, best score first."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what earlier frames showed: the next image is unrelated to the last (a new still image, a video
        seek, a camera reconnect). Detectors that follow faces from frame to frame override this."""

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {}
