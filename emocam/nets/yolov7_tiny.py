"""YOLOv7-tiny (WongKinYiu/yolov7, cfg/training/yolov7-tiny.yaml) for faces, with yolov7-face's optional landmarks.

The layers are built from the official layer table, in its order, so parameter names are the official ones
(model.0.conv.weight ... model.77.m.2.bias): a state dict taken from an official checkpoint loads as it is.
Backbone: strided 3x3 convs, ELAN-tiny blocks (two 1x1 branches, two stacked 3x3 on one of them, all four
concatenated, 1x1 fuse) with 2x2 max-pool downsampling. Neck: SPPCSPC-tiny (max-pools 5/9/13 on one branch,
cross-stage concat with the other), then a PAN (top-down with upsampling, bottom-up with strided convs).
Head: IDetect (implicit add before, implicit multiply after a 1x1 conv) at strides 8, 16 and 32, 3 anchors each.
Activation everywhere is LeakyReLU(0.1).

One deviation: `anchors` is kept in pixels, shape (3 scales, 3 anchors, 2); the official Detect keeps them in
grid units beside a pixel `anchor_grid` (see official_state_dict()).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

STRIDES = (8, 16, 32)
N_LANDMARKS = 5
# COCO anchors of the official configuration (pixels at 640); training replaces them with anchors of the data.
COCO_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


class Conv(nn.Module):
    """Conv (no bias) + BatchNorm + LeakyReLU(0.1); fuse() folds the BatchNorm into the conv for inference."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        # yolov7's initialize_weights() sets these BatchNorm constants.
        self.bn: nn.Module = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
        fused = fused.to(conv.weight.device)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn = fused, nn.Identity()


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class ImplicitA(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channels, 1, 1))
        nn.init.normal_(self.implicit, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.implicit


class ImplicitM(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=1.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.implicit


class IDetect(nn.Module):
    """Raw head outputs per scale, (batch, anchors, ny, nx, outputs) with outputs = x, y, w, h, obj, classes...,
    then 10 landmark values (5 points x, y) when landmarks are on."""

    def __init__(self, nc: int, channels: tuple[int, ...], anchors: torch.Tensor, landmarks: bool):
        super().__init__()
        self.nc = nc
        self.nl, self.na = anchors.shape[:2]
        self.no_det = 5 + nc
        self.n_lm = 2 * N_LANDMARKS if landmarks else 0
        self.register_buffer("anchors", anchors.float().clone())  # pixels
        self.register_buffer("stride", torch.tensor(STRIDES, dtype=torch.float32))
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no_det, 1) for c in channels)
        self.ia = nn.ModuleList(ImplicitA(c) for c in channels)
        self.im = nn.ModuleList(ImplicitM(self.na * self.no_det) for _ in channels)
        # yolov7-face predicts landmarks beside the box; a plain 1x1 conv per scale here.
        self.lm = nn.ModuleList(nn.Conv2d(c, self.na * self.n_lm, 1) for c in channels) if landmarks else None
        self._init_biases()

    @property
    def no(self) -> int:
        return self.no_det + self.n_lm

    @torch.no_grad()
    def _init_biases(self) -> None:
        # Start objectness at ~8 objects per 640x640 image and class scores at ~0.6/nc (yolov5's prior).
        for conv, s in zip(self.m, STRIDES):
            b = conv.bias.view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if self.nc > 1 else math.log(0.6 / 0.01)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, x in enumerate(xs):
            bs, _, ny, nx = x.shape
            y = self.im[i](self.m[i](self.ia[i](x))).view(bs, self.na, self.no_det, ny, nx)
            if self.lm is not None:
                y = torch.cat([y, self.lm[i](x).view(bs, self.na, self.n_lm, ny, nx)], 2)
            out.append(y.permute(0, 1, 3, 4, 2).contiguous())
        return out

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold ImplicitA into the conv bias and ImplicitM into weight and bias (exact for a 1x1 conv)."""
        for i, conv in enumerate(self.m):
            if isinstance(self.ia[i], nn.Identity):
                continue
            a, m = self.ia[i].implicit.view(-1), self.im[i].implicit.view(-1)
            conv.bias += conv.weight[:, :, 0, 0] @ a
            conv.weight *= m[:, None, None, None]
            conv.bias *= m
            self.ia[i], self.im[i] = nn.Identity(), nn.Identity()

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """(batch, candidates, outputs) with x1, y1, x2, y2 in input pixels, sigmoid scores, landmark pixels."""
        out = []
        for i, p in enumerate(raw):
            bs, na, ny, nx, _ = p.shape
            stride = self.stride[i]
            gy, gx = torch.meshgrid(torch.arange(ny, device=p.device), torch.arange(nx, device=p.device),
                                    indexing="ij")
            grid = torch.stack((gx, gy), -1).view(1, 1, ny, nx, 2).to(p.dtype)
            anchor = self.anchors[i].view(1, na, 1, 1, 2).to(p.dtype)
            s = p[..., : self.no_det].sigmoid()
            xy = (s[..., :2] * 2 - 0.5 + grid) * stride
            wh = (s[..., 2:4] * 2) ** 2 * anchor
            parts = [xy - wh / 2, xy + wh / 2, s[..., 4:]]
            if self.n_lm:
                centre = (grid + 0.5) * stride
                offsets = p[..., self.no_det :].view(bs, na, ny, nx, N_LANDMARKS, 2)
                lm = offsets * anchor[..., None, :] + centre[..., None, :]
                parts.append(lm.flatten(-2))
            out.append(torch.cat(parts, -1).view(bs, -1, self.no))
        return torch.cat(out, 1)


def _elan(c: int) -> list[tuple]:
    """ELAN-tiny: 1x1 c | 1x1 c -> 3x3 c -> 3x3 c, concatenated last-first, fused by a 1x1 to 2c channels."""
    return [(-1, "conv", (c, 1, 1)), (-2, "conv", (c, 1, 1)), (-1, "conv", (c, 3, 1)), (-1, "conv", (c, 3, 1)),
            ([-1, -2, -3, -4], "cat", ()), (-1, "conv", (2 * c, 1, 1))]


# (from, kind, args) per layer, indices as in yolov7-tiny.yaml (comments give the official layer numbers).
LAYERS: list[tuple] = [
    (-1, "conv", (32, 3, 2)),  # 0 P1/2
    (-1, "conv", (64, 3, 2)),  # 1 P2/4
    *_elan(32),  # 2-7
    (-1, "mp", ()),  # 8 P3/8
    *_elan(64),  # 9-14
    (-1, "mp", ()),  # 15 P4/16
    *_elan(128),  # 16-21
    (-1, "mp", ()),  # 22 P5/32
    *_elan(256),  # 23-28
    # SPPCSPC-tiny
    (-1, "conv", (256, 1, 1)), (-2, "conv", (256, 1, 1)),  # 29, 30
    (-1, "sp", (5,)), (-2, "sp", (9,)), (-3, "sp", (13,)),  # 31-33
    ([-1, -2, -3, -4], "cat", ()), (-1, "conv", (256, 1, 1)),  # 34, 35
    ([-1, -7], "cat", ()), (-1, "conv", (256, 1, 1)),  # 36, 37
    # PAN top-down
    (-1, "conv", (128, 1, 1)), (-1, "up", ()), (21, "conv", (128, 1, 1)), ([-1, -2], "cat", ()),  # 38-41
    *_elan(64),  # 42-47
    (-1, "conv", (64, 1, 1)), (-1, "up", ()), (14, "conv", (64, 1, 1)), ([-1, -2], "cat", ()),  # 48-51
    *_elan(32),  # 52-57 (P3 out)
    # PAN bottom-up
    (-1, "conv", (128, 3, 2)), ([-1, 47], "cat", ()),  # 58, 59
    *_elan(64),  # 60-65 (P4 out)
    (-1, "conv", (256, 3, 2)), ([-1, 37], "cat", ()),  # 66, 67
    *_elan(128),  # 68-73 (P5 out)
    (57, "conv", (128, 3, 1)), (65, "conv", (256, 3, 1)), (73, "conv", (512, 3, 1)),  # 74-76
]
DETECT_FROM = (74, 75, 76)


class YOLOv7Tiny(nn.Module):
    """forward(images) gives the raw per-scale head outputs (what the loss takes); predict() decodes them."""

    def __init__(self, nc: int = 1, landmarks: bool = False, anchors: torch.Tensor | None = None):
        super().__init__()
        if anchors is None:
            anchors = torch.tensor(COCO_ANCHORS, dtype=torch.float32).view(3, 3, 2)
        self.nc, self.landmarks = nc, landmarks
        layers, self.sources, channels = [], [], []
        for i, (src, kind, args) in enumerate(LAYERS):
            idx = [s if s >= 0 else i + s for s in (src if isinstance(src, list) else [src])]
            c_in = sum(channels[j] for j in idx) if i else 3  # RGB input
            if kind == "conv":
                layer, c_out = Conv(c_in, *args), args[0]
            elif kind == "mp":
                layer, c_out = nn.MaxPool2d(2, 2), c_in
            elif kind == "sp":
                layer, c_out = nn.MaxPool2d(args[0], 1, args[0] // 2), c_in
            elif kind == "up":
                layer, c_out = nn.Upsample(scale_factor=2, mode="nearest"), c_in
            else:
                layer, c_out = Concat(), c_in
            layers.append(layer)
            self.sources.append(idx if isinstance(src, list) else idx[0])
            channels.append(c_out)
        layers.append(IDetect(nc, tuple(channels[j] for j in DETECT_FROM), anchors, landmarks))
        self.sources.append(list(DETECT_FROM))
        self.model = nn.Sequential(*layers)  # named `model` so that keys match the official checkpoints
        self._keep = {j for s in self.sources for j in (s if isinstance(s, list) else [s])}

    @property
    def head(self) -> IDetect:
        return self.model[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        for i, (layer, src) in enumerate(zip(self.model, self.sources)):
            if isinstance(src, list):
                x = layer([saved[j] for j in src])
            else:
                x = layer(x if src == i - 1 else saved[src])
            if i in self._keep:
                saved[i] = x
        return x

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.decode(self(x))

    def fuse(self) -> "YOLOv7Tiny":
        for module in list(self.modules()):
            if isinstance(module, (Conv, IDetect)):
                module.fuse()
        return self


def build_from_state_dict(state: dict[str, torch.Tensor]) -> YOLOv7Tiny:
    """A model shaped like the weights (classes, landmarks, fused or not) with the weights loaded."""
    head = f"model.{len(LAYERS)}"
    key = f"{head}.m.0.weight"
    if key not in state or f"{head}.anchors" not in state:
        raise ValueError(f"not YOLOv7-tiny weights: no {key} / {head}.anchors")
    anchors = state[f"{head}.anchors"]
    na = anchors.shape[1]
    landmarks = f"{head}.lm.0.weight" in state
    model = YOLOv7Tiny(nc=state[key].shape[0] // na - 5, landmarks=landmarks, anchors=anchors)
    if "model.0.conv.bias" in state:  # fused weights: BatchNorm and implicit layers already folded in
        model.fuse()
    model.load_state_dict(state)
    return model


def weights_state_dict(obj: dict) -> dict[str, torch.Tensor]:
    """The inference weights in a checkpoint or weights file: EMA weights when there are any."""
    for key in ("state_dict", "ema", "model"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def official_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official yolov7-tiny state dict (anchors in grid units + anchor_grid in pixels) in this module's terms."""
    head = f"model.{len(LAYERS)}"
    out = {k: v.float() for k, v in state.items() if not k.startswith(f"{head}.anchor")}
    if f"{head}.anchor_grid" in state:
        grid = state[f"{head}.anchor_grid"]
        out[f"{head}.anchors"] = grid.float().reshape(grid.shape[0], -1, 2)
    else:
        out[f"{head}.anchors"] = state[f"{head}.anchors"].float() * torch.tensor(STRIDES)[:, None, None]
    out.setdefault(f"{head}.stride", torch.tensor(STRIDES, dtype=torch.float32))
    return out


class _Decoded(nn.Module):
    def __init__(self, model: YOLOv7Tiny):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)


def export_onnx(model: YOLOv7Tiny, path: Path, img_size: int = 640, opset: int = 17) -> Path:
    """Decoded predictions (batch, candidates, x1 y1 x2 y2 obj cls... [landmarks]) for an RGB 0-1 input of
    (batch, 3, H, W), H and W multiples of 32 (dynamic); NMS stays outside the graph."""
    path = Path(path)
    model = model.eval()
    dummy = torch.zeros(1, 3, img_size, img_size)
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(_Decoded(model), (dummy,), str(tmp), input_names=["images"], output_names=["predictions"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                    "predictions": {0: "batch", 1: "candidates"}},
                      opset_version=opset, dynamo=False)
    tmp.replace(path)
    return path
