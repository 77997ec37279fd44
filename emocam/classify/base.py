"""What every emotion classifier backend provides."""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import ClassVar, Literal

import numpy as np
import torch
from loguru import logger
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
    # How use_cpu_graph() freezes this backend's model: "freeze" folds batch norm into the convolutions and runs
    # without Python between ops (what a net of many small ops needs); "onednn" also gives the convolutions
    # oneDNN's packed weights (what a stack of plain 3x3 convs needs: at one face a call torch's eager
    # convolutions take a slow generic path for maps this small). None: no graph.
    cpu_graph_kind: ClassVar[Literal["freeze", "onednn"] | None] = None
    model: torch.nn.Module
    # Reduced precision for forward passes (torch.float16 on CUDA when runtime.half); None = float32.
    precision: torch.dtype | None = None
    # The frozen graph predict_crops runs instead of `model` (see use_cpu_graph); explain maps always come from
    # `model`, whose layers they hook.
    graph: torch.jit.ScriptModule | None = None
    # Test-time mirroring: each face's logits averaged with those of its mirror image. Faces are roughly
    # symmetric but a network is not, and the two views' errors partly cancel (repvgg-fer: +1 point on PublicTest)
    # for twice the work a face. Explain maps stay those of the face as it is.
    mirror: bool = False

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
        x = self.preprocess(crops_bgr).to(self.device)
        n = len(x)
        if self.mirror:
            x = torch.cat([x, x.flip(3)])  # one pass for both views: cheaper than two calls
        if self.graph is not None:
            logits = self.graph(x.contiguous())
        else:
            with self.autocast():
                logits = self.model(x)
        logits = logits.float()
        if self.mirror:
            logits = (logits[:n] + logits[n:]) / 2
        return torch.softmax(logits, dim=1).cpu().numpy()

    def use_cpu_graph(self) -> None:
        """Classify through a frozen TorchScript graph of the model (float32, CPU): the same probabilities within
        float rounding for less CPU a face (`emocam eval speed`). Where this torch cannot make one, a warning
        says so and the eager model goes on classifying."""
        if self.cpu_graph_kind is None or self.device.type != "cpu" or self.precision is not None:
            return
        try:
            example = self.preprocess([np.zeros((64, 64), np.uint8)]).contiguous()
            with warnings.catch_warnings(), torch.inference_mode():
                # torch 2.13 marks torch.jit deprecated in favour of torch.compile and torch.export, which need a
                # C++ compiler at run time or give no packed weights; freezing still works, and is run once here.
                warnings.simplefilter("ignore", DeprecationWarning)
                # The tracer warns where a net computes from its input's shape (mini-XCEPTION's "same" padding):
                # the input is always preprocess()'s fixed size, so the traced constants hold.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                graph = torch.jit.freeze(torch.jit.trace(copy.deepcopy(self.model).eval(), example))
                if self.cpu_graph_kind == "onednn":
                    graph = torch.jit.optimize_for_inference(graph)
                graph(example)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the eager model, which is correct, only slower
            logger.warning(f"classifier {self.name}: no frozen CPU graph ({type(exc).__name__}: {exc}); the eager "
                           "model classifies, at more CPU a face")
            return
        self.graph = graph

    def classify(self, frame_bgr: np.ndarray, faces: list[Face]) -> list[Face]:
        probs = self.predict_crops([self.crop(frame_bgr, f) for f in faces])
        return [f.with_probs(p) for f, p in zip(faces, probs)]

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {}
