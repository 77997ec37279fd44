"""YOLOv7-tiny face detector: weights trained with `emocam train detector` (no pretrained face weights exist here).

Frames are letterboxed (longer side img_size, padded to a multiple of 32 with yolov7's grey), run through the
fused network, filtered by score and reduced by NMS. Weights: a file path, or a name in models/manifest.toml.
Official YOLOv7 checkpoints (whole pickled models) are read through a restricted unpickler that rebuilds tensors
only and never calls anything else the file names.
"""

from __future__ import annotations

import pickle
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from emocam.detect import DETECTORS
from emocam.detect.base import Detector, Probability, check_bgr
from emocam.errors import WeightsError
from emocam.nets.mtcnn import nms
from emocam.nets.yolov7_tiny import (
    N_LANDMARKS, YOLOv7Tiny, build_from_state_dict, official_state_dict, weights_state_dict,
)
from emocam.types import Face
from emocam.weights import WeightStore

DEFAULT_WEIGHTS = "yolov7_tiny_face"
PAD = 114
MAX_CANDIDATES = 30000  # best-scored boxes that go into NMS (yolov7's max_nms)

NO_WEIGHTS_HELP = (
    "no YOLOv7-tiny face weights are published for EmoCam: train them with "
    "`emocam train detector --data WIDER_FACE_DIR` (see `emocam train detector --help`), then pass "
    "`--weights out/detector/weights.pt` to `emocam eval detector`, or set detector.yolov7-tiny.weights to that "
    "file (or add it to models/manifest.toml as {name})"
)


class YOLOv7TinyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A weights file (.pt from `emocam train detector`, or an official YOLOv7 checkpoint), or a name in
    # models/manifest.toml.
    weights: str = DEFAULT_WEIGHTS
    # Faces scoring below this are dropped before NMS. Lower it (e.g. 0.01) to measure AP over the whole curve.
    conf_threshold: Probability = 0.25
    # A box goes when it overlaps a better one by more than this IoU.
    iou_threshold: Probability = 0.45
    # Longer side of the network input in pixels (the image is letterboxed to it); a multiple of 32.
    img_size: int = Field(640, ge=32, multiple_of=32)
    max_detections: int = Field(300, ge=1)


@DETECTORS.register("yolov7-tiny")
class YOLOv7TinyDetector(Detector):
    Options = YOLOv7TinyOptions

    def __init__(self, options: YOLOv7TinyOptions, device: torch.device, weights: WeightStore):
        super().__init__(options, device, weights)
        self.weights_path, self._sha256 = self._resolve(options.weights)
        try:
            model = build_from_state_dict(load_weights(self.weights_path))
        except (ValueError, RuntimeError, KeyError, RecursionError) as exc:  # another network's weights
            raise WeightsError(f"{self.weights_path}: not YOLOv7-tiny face weights ({str(exc).splitlines()[0][:200]}); "
                               "train some with `emocam train detector`") from None
        self.model = model.fuse().to(device).eval()

    def _resolve(self, ref: str) -> tuple[Path, str]:
        try:
            return self.weights.locate(ref)
        except WeightsError as exc:
            raise WeightsError(f"detector.yolov7-tiny.weights: {exc}; {NO_WEIGHTS_HELP.format(name=ref)}") from None

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {"yolov7_tiny": self._sha256}

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        check_bgr(image_bgr)
        opts = self.options
        x, scale, (left, top) = letterbox(image_bgr, opts.img_size)
        with torch.inference_mode():
            pred = self.model.predict(x.to(self.device))[0]
            faces = postprocess(pred, self.model, opts.conf_threshold, opts.iou_threshold, opts.max_detections)
            faces = faces.cpu().numpy()
        h, w = image_bgr.shape[:2]
        out = []
        for row in faces:
            box = ((row[:4] - (left, top, left, top)) / scale).clip(0, (w, h, w, h)).astype(np.float32)
            marks = None
            if self.model.landmarks:
                marks = ((row[5:].reshape(N_LANDMARKS, 2) - (left, top)) / scale).astype(np.float32)
            out.append(Face(box=box, score=float(row[4]), landmarks=marks))
        return out


def letterbox(image_bgr: np.ndarray, size: int, stride: int = 32) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """(1, 3, H, W) RGB 0-1 tensor: longer side scaled to size, each side padded to a multiple of the stride
    (centred, as yolov7's letterbox with auto=True); the scale and the (left, top) padding."""
    h, w = image_bgr.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image_bgr if (nw, nh) == (w, h) else cv2.resize(
        image_bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    pw, ph = (-nw) % stride, (-nh) % stride
    left, top = pw // 2, ph // 2
    padded = cv2.copyMakeBorder(resized, top, ph - top, left, pw - left, cv2.BORDER_CONSTANT, value=(PAD, PAD, PAD))
    x = torch.from_numpy(np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1))).float().div_(255)
    return x[None], nw / w, (left, top)


def postprocess(pred: torch.Tensor, model: YOLOv7Tiny, conf: float, iou: float, max_det: int) -> torch.Tensor:
    """(K, 5 [+ 10]) rows x1, y1, x2, y2, score [, landmarks] of one image's decoded predictions, best first.

    Score is objectness times the best class probability for several classes; for one class it is the objectness
    alone (yolov7 skips the class loss for one class, so that output is never trained)."""
    head = model.head
    score = pred[:, 4] if model.nc == 1 else pred[:, 4] * pred[:, 5 : head.no_det].max(1).values
    keep = score > conf
    pred, score = pred[keep], score[keep]
    if len(score) > MAX_CANDIDATES:
        top = score.topk(MAX_CANDIDATES).indices
        pred, score = pred[top], score[top]
    kept = nms(pred[:, :4], score, iou)[:max_det]
    rows = [pred[kept, :4], score[kept, None]]
    if head.n_lm:
        rows.append(pred[kept, head.no_det :])
    return torch.cat(rows, 1)


# --- weight files ---------------------------------------------------------------------------------------------------

def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file of this project, or in an official YOLOv7 checkpoint."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # whole pickled model objects: an official checkpoint
        return official_state_dict(load_official_checkpoint(path))
    except (OSError, RuntimeError, EOFError) as exc:
        raise WeightsError(f"{path}: cannot read these weights ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: not a YOLOv7-tiny weights file")
    return weights_state_dict(obj)


class _Opaque:
    """Stands in for any class or function a checkpoint names: takes arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return _Opaque()


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())


def _rebuild_parameter(data, requires_grad=False, hooks=None, *args):
    return data


class _Sealed:
    """A callable a checkpoint may name but not change: pickle's BUILD would otherwise set attributes on a plain
    function (its __name__, torch's dump_patches...), for the rest of the process."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError("a checkpoint tried to change a function it names")

    def __setstate__(self, state):
        raise pickle.UnpicklingError("a checkpoint tried to change a function it names")


class _RestrictedUnpickler(pickle.Unpickler):
    # Only these globals are real; torch.load itself resolves the *Storage types before asking here.
    SAFE = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _Sealed(_rebuild_tensor),
        ("torch._utils", "_rebuild_parameter"): _Sealed(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _Sealed(_rebuild_parameter),
        ("torch", "Size"): torch.Size,
    }

    def find_class(self, module: str, name: str):
        found = self.SAFE.get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (_Opaque,), {"__module__": f"opaque.{module}"})


_RESTRICTED = types.ModuleType("emocam_restricted_pickle")
_RESTRICTED.Unpickler = _RestrictedUnpickler
_RESTRICTED.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
_RESTRICTED.__name__ = "emocam_restricted_pickle"


def load_official_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the model in a YOLOv7 checkpoint ({'model': Model, 'ema': ...}), by their
    module paths, read without running any code the file refers to."""
    if not zipfile.is_zipfile(path):
        # torch's legacy (pre-1.6) format has records of its own that act on what the pickle names (it writes
        # source diffs next to a "module"); YOLOv7's checkpoints are all zip files
        raise WeightsError(f"{path}: not a zip checkpoint (torch >= 1.6); re-save it with torch.save in a recent "
                           "torch, or use a weights file of this project")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RESTRICTED)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise WeightsError(f"{path}: cannot read this checkpoint ({exc.__class__.__name__}: {exc})") from None
    root = None
    if isinstance(ckpt, dict):
        root = ckpt.get("ema") if isinstance(ckpt.get("ema"), _Opaque) else ckpt.get("model")
    if not isinstance(root, _Opaque) or not isinstance(root.state, dict):
        raise WeightsError(f"{path}: no pickled model under 'model' or 'ema'; not a YOLOv7 checkpoint")
    state: dict[str, torch.Tensor] = {}
    _collect(root, "", state)
    if not state:
        raise WeightsError(f"{path}: the pickled model holds no tensors")
    return state


def _collect(module: _Opaque, prefix: str, out: dict[str, torch.Tensor]) -> None:
    attrs = module.state if isinstance(module.state, dict) else {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (attrs.get(kind) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
    for name, child in (attrs.get("_modules") or {}).items():
        if isinstance(child, _Opaque):
            _collect(child, f"{prefix}{name}.", out)
