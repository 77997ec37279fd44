"""Forward hooks that exist only inside a `with` block, whatever happens in it."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

Keep = Callable[[str, torch.Tensor], torch.Tensor]


def _as_is(name: str, output: torch.Tensor) -> torch.Tensor:
    return output


@contextmanager
def capture(layers: Sequence[tuple[str, nn.Module]], keep: Keep = _as_is) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict that fills with keep(name, output) of each layer on every forward pass inside the block.

    `keep` runs inside the hook, so a reduction (e.g. a channel mean) happens before a later in-place op could
    change the tensor and without holding full activations. The hooks are removed on leaving the block, also on
    an exception: a long-running daemon must not pile them up.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name, module in layers:
            def hook(_module, _inputs, output, name=name):
                store[name] = keep(name, output)

            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def explain_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's conv layers, input to output: its own conv_layers() when it has one, else every nn.Conv2d."""
    own = getattr(model, "conv_layers", None)
    if callable(own):
        return list(own())
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
