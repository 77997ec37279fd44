"""Torch device and thread settings from the runtime config."""

from __future__ import annotations

import torch

from emocam.config import RuntimeConfig
from emocam.errors import EmoCamError


def select_device(cfg: RuntimeConfig) -> torch.device:
    torch.set_num_threads(cfg.torch_threads)
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise EmoCamError("runtime.device is 'cuda' but this torch build sees no CUDA GPU; set runtime.device = \"cpu\"")
    return torch.device(cfg.device)
