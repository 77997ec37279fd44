"""The map modes. Each turns a batch of model inputs into logits and, per layer, maps of shape (N, C, h, w):
C = 1 for a class-agnostic map, C = number of classes for one map per class. A new mode is one small subclass.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn

from emocam.explain.hooks import capture

LayerMaps = dict[str, torch.Tensor]


class MapMode:
    """`class_layer` is the last conv; when it outputs one channel per class (`per_class_head`), its channels are
    kept apart in every mode, so the class strip has seven maps to show even in `activation` mode."""

    name: ClassVar[str]

    def __init__(self, model: nn.Module, layers: Sequence[tuple[str, nn.Module]], num_classes: int,
                 per_class_head: bool):
        self.model = model
        self.layers = list(layers)
        self.class_layer = self.layers[-1][0]
        self.num_classes = num_classes
        self.per_class_head = per_class_head

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, LayerMaps]:
        """One forward pass: (logits (N, K), maps per layer)."""
        with torch.no_grad(), capture(self.layers, self.keep) as store:
            logits = self.model(x)
        return logits.float(), dict(store)

    def keep(self, name: str, output: torch.Tensor) -> torch.Tensor:
        if name == self.class_layer and self.per_class_head:
            return output.float().relu()
        return output.float().relu().mean(1, keepdim=True)


class ActivationMode(MapMode):
    """The channel mean of each layer's rectified output: where the layer responds, whatever the class."""

    name = "activation"


class CamMode(MapMode):
    """Class activation maps: the class layer's raw per-class outputs, whose spatial mean is each class's logit
    (exact for mini-XCEPTION). Other layers carry their activation maps, which cost nothing more."""

    name = "cam"

    def keep(self, name: str, output: torch.Tensor) -> torch.Tensor:
        if name == self.class_layer:
            return output.float()
        return super().keep(name, output)


class GradCamMode(MapMode):
    """Grad-CAM for every layer and class: relu(sum_k mean(d logit_c / d A_k) * A_k).

    The input is replicated once per class and the sum of replica c's logit c is differentiated, so one forward
    and one backward pass give all classes' gradients (the replicas do not interact: BatchNorm is in eval mode).
    """

    name = "gradcam"

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, LayerMaps]:
        n, k = x.shape[0], self.num_classes
        # inference_mode(False): the caller may be inside inference mode, where nothing records a graph.
        with torch.inference_mode(False), torch.enable_grad(), capture(self.layers) as store:
            replicas = x.detach().repeat_interleave(k, dim=0).requires_grad_(True)
            logits = self.model(replicas).float().view(n, k, k)
            names = list(store)
            grads = torch.autograd.grad(logits.diagonal(dim1=1, dim2=2).sum(), [store[m] for m in names])
        maps = {}
        for name, grad in zip(names, grads):
            act = store[name].detach().float()
            weights = grad.float().mean(dim=(2, 3), keepdim=True)
            cam = (weights * act).sum(dim=1).relu()
            maps[name] = cam.view(n, k, *cam.shape[-2:])
        return logits.detach()[:, 0], maps


MODES: dict[str, type[MapMode]] = {m.name: m for m in (ActivationMode, CamMode, GradCamMode)}
