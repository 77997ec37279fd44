"""facenet-pytorch 2.6.0's own MTCNN, run from its wheel, as the reference for our port (tests only).

The package cannot be installed beside this torch: it pins an old torch and imports torchvision. Its MTCNN code
needs torchvision only for `ops.boxes.batched_nms` (the cascade) and `transforms.functional.to_tensor` (face
extraction, unused here), so both are stood in for while its modules load, and its package __init__ (which also
pulls InceptionResnetV1 and requests) is skipped. Nothing stays in sys.modules afterwards.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

WHEEL = "facenet_pytorch-2.6.0-py3-none-any.whl"
WHEEL_SHA256 = "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.nms on CPU, step for step: stable descending sort, areas w*h, suppress IoU > threshold."""
    b = boxes.detach().cpu().numpy().astype(np.float32)
    s = scores.detach().cpu().numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-s, kind="stable")
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        suppressed[rest[inter / (areas[i] + areas[rest] - inter) > iou_threshold]] = True
    return torch.as_tensor(np.array(keep, dtype=np.int64), device=boxes.device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's batched_nms (its coordinate-offset variant; the per-class loop it uses above 4000 numbers
    gives the same kept set and order)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def to_tensor(pic) -> torch.Tensor:
    """torchvision's to_tensor for the float32 HxWxC arrays facenet's extract_face passes."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(pic).transpose(2, 0, 1)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_facenet(wheel: Path, workdir: Path) -> types.SimpleNamespace:
    """From the verified wheel, unpacked into workdir: its MTCNN class and its detect_face module."""
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(workdir)
    package = workdir / "facenet_pytorch"

    stand_ins = {
        "torchvision": types.ModuleType("torchvision"),
        "torchvision.ops": types.ModuleType("torchvision.ops"),
        "torchvision.ops.boxes": types.ModuleType("torchvision.ops.boxes"),
        "torchvision.transforms": types.ModuleType("torchvision.transforms"),
        "torchvision.transforms.functional": types.ModuleType("torchvision.transforms.functional"),
    }
    stand_ins["torchvision.ops.boxes"].batched_nms = batched_nms
    stand_ins["torchvision.transforms.functional"].to_tensor = to_tensor
    for name, path in (("facenet_pytorch", package), ("facenet_pytorch.models", package / "models")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        stand_ins[name] = module

    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        return types.SimpleNamespace(
            MTCNN=importlib.import_module("facenet_pytorch.models.mtcnn").MTCNN,
            detect_face=importlib.import_module("facenet_pytorch.models.utils.detect_face"),
        )
    finally:
        for name in list(sys.modules):
            if name.startswith(("facenet_pytorch", "torchvision")):
                del sys.modules[name]
        sys.modules.update({name: mod for name, mod in saved.items() if mod is not None})
