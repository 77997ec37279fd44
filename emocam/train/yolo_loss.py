"""YOLOv7-tiny's training loss and anchors computed from the data.

Loss (yolov7's ComputeLoss terms): CIoU box loss, objectness BCE against the (detached) IoU of each assigned
prediction, class BCE (skipped for one class, as yolov7 does), and for yolov7-face style landmarks a smooth-L1 on
landmark offsets (in anchor units from the cell centre), only where a face has landmarks.

Label assignment is the ratio-based rule of yolov5/yolov7's ComputeLoss, not the SimOTA-based ComputeLossOTA that
yolov7's own recipe uses: a face goes to every anchor whose width and height ratios to it are within anchor_t (4),
in its own cell and the two neighbouring cells nearest its centre (so up to 3 cells x 3 anchors per scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from emocam.nets.yolov7_tiny import N_LANDMARKS, YOLOv7Tiny

# Objectness weight of the P3, P4 and P5 outputs (yolov7's balance for three levels).
BALANCE = (4.0, 1.0, 0.4)


@dataclass
class LossWeights:
    """hyp.scratch.tiny.yaml; box/obj/cls are scaled by train.py for the image size and classes (see scaled())."""

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    landmarks: float = 0.5  # not in yolov7; yolov7-face weighs its keypoint loss on the order of the box loss
    anchor_t: float = 4.0

    def scaled(self, nc: int, img_size: int, n_levels: int = 3) -> "LossWeights":
        k = 3 / n_levels
        return LossWeights(self.box * k, self.obj * (img_size / 640) ** 2 * k, self.cls * nc / 80 * k,
                           self.landmarks * k, self.anchor_t)


def bbox_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matching rows of two (N, 4) cx, cy, w, h arrays."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    wh = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter + eps
    iou = inter / union
    enclose = torch.maximum(a2, b2) - torch.minimum(a1, b1)
    diagonal = (enclose ** 2).sum(1) + eps
    centre = ((a[:, :2] - b[:, :2]) ** 2).sum(1)
    v = (4 / math.pi ** 2) * (torch.atan(b[:, 2] / (b[:, 3] + eps)) - torch.atan(a[:, 2] / (a[:, 3] + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre / diagonal + v * alpha)


class YoloLoss:
    """loss(raw outputs, targets) -> (total * batch size, per-term tensor box, obj, cls, landmarks).

    targets: (N, 6 [+ 10]) rows of image index, class, cx, cy, w, h (fractions of the input size)
    [+ 5 landmark x, y as fractions, NaN where not labelled].
    """

    def __init__(self, model: YOLOv7Tiny, img_size: int, weights: LossWeights | None = None):
        self.head = model.head
        self.nc = model.nc
        self.w = (weights or LossWeights()).scaled(model.nc, img_size, self.head.nl)

    def __call__(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = raw[0].device
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        llm = torch.zeros((), device=device)
        head = self.head
        for i, p in enumerate(raw):
            b, a, gj, gi, tbox, tcls, tlm, anchors = self._assign(i, p, targets)
            tobj = torch.zeros(p.shape[:4], device=device, dtype=p.dtype)
            if len(b):
                ps = p[b, a, gj, gi]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors
                iou = bbox_ciou(torch.cat([pxy, pwh], 1), tbox)
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    t = torch.zeros_like(ps[:, 5 : 5 + self.nc])
                    t[torch.arange(len(tcls)), tcls] = 1.0
                    lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5 : 5 + self.nc], t)
                if head.n_lm and tlm is not None:
                    known = ~torch.isnan(tlm)
                    if known.any():
                        plm = ps[:, head.no_det :].view(-1, N_LANDMARKS, 2)
                        llm = llm + F.smooth_l1_loss(plm[known], tlm[known])
            lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * BALANCE[i]
        terms = torch.stack([lbox * self.w.box, lobj * self.w.obj, lcls * self.w.cls, llm * self.w.landmarks])
        return terms.sum() * raw[0].shape[0], terms.detach()

    def _assign(self, i: int, p: torch.Tensor, targets: torch.Tensor):
        """Predictions responsible for each face at level i, with the box (and landmark) targets in grid units."""
        head = self.head
        device = p.device
        ny, nx = p.shape[2:4]
        anchors = head.anchors[i] / head.stride[i]  # (na, 2) in grid cells
        gain = torch.tensor([nx, ny], device=device, dtype=torch.float32)
        nt = len(targets)
        if nt == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty, empty, empty, None, None, None, None
        xy = targets[:, 2:4] * gain
        wh = targets[:, 4:6] * gain
        # every (anchor, face) pair whose size ratios are within anchor_t
        ratio = wh[None] / anchors[:, None]
        ok = torch.maximum(ratio, 1 / ratio).max(2).values < self.w.anchor_t  # (na, nt)
        a_idx, t_idx = ok.nonzero(as_tuple=True)
        xy, wh = xy[t_idx], wh[t_idx]
        # the face's own cell, plus the left/up and right/down neighbour its centre lies closest to
        g = 0.5
        frac = xy % 1
        inv = gain - xy
        near = torch.stack([torch.ones_like(frac[:, 0], dtype=torch.bool),
                            (frac[:, 0] < g) & (xy[:, 0] > 1), (frac[:, 1] < g) & (xy[:, 1] > 1),
                            (inv[:, 0] % 1 < g) & (inv[:, 0] > 1), (inv[:, 1] % 1 < g) & (inv[:, 1] > 1)])
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=torch.float32) * g
        k, m = near.nonzero(as_tuple=True)
        a_idx, t_idx, xy, wh = a_idx[m], t_idx[m], xy[m], wh[m]
        cell = (xy - offsets[k]).long()
        gi = cell[:, 0].clamp(0, nx - 1)
        gj = cell[:, 1].clamp(0, ny - 1)
        tbox = torch.cat([xy - torch.stack([gi, gj], 1), wh], 1)
        tlm = None
        if targets.shape[1] > 6:
            lm = targets[t_idx, 6 : 6 + 2 * N_LANDMARKS].view(-1, N_LANDMARKS, 2) * gain
            centre = torch.stack([gi, gj], 1)[:, None].float() + 0.5
            tlm = (lm - centre) / anchors[a_idx][:, None]
        b = targets[t_idx, 0].long()
        return b, a_idx, gj, gi, tbox, targets[t_idx, 1].long(), tlm, anchors[a_idx]


# --- anchors --------------------------------------------------------------------------------------------------------

def anchor_fitness(anchors: np.ndarray, wh: np.ndarray, thr: float = 4.0) -> float:
    """yolov5's autoanchor fitness: mean over boxes of the best anchor's worst side ratio, 0 beyond thr."""
    r = wh[:, None] / anchors[None]
    best = np.minimum(r, 1 / r).min(2).max(1)
    return float((best * (best > 1 / thr)).mean())


def best_possible_recall(anchors: np.ndarray, wh: np.ndarray, thr: float = 4.0) -> float:
    """Fraction of boxes that some anchor may be assigned to."""
    r = wh[:, None] / np.asarray(anchors).reshape(-1, 2)[None]
    return float((np.minimum(r, 1 / r).min(2).max(1) > 1 / thr).mean())


def kmeans_anchors(wh: np.ndarray, n: int = 9, thr: float = 4.0, generations: int = 300,
                   seed: int = 0) -> np.ndarray:
    """(n, 2) anchors sorted by area: k-means on whitened box sizes, then a short mutation search on the fitness,
    as yolov5/yolov7's autoanchor does. wh: (N, 2) box sizes in input pixels."""
    rng = np.random.default_rng(seed)
    wh = np.asarray(wh, dtype=np.float64)
    wh = wh[(wh >= 2).all(1)]
    if len(wh) < n:
        raise ValueError(f"{len(wh)} boxes of at least 2 px: too few to compute {n} anchors")
    if len(wh) > 20000:
        wh = wh[rng.choice(len(wh), 20000, replace=False)]
    std = wh.std(0) + 1e-9
    x = wh / std
    centres = x[rng.choice(len(x), n, replace=False)]
    for _ in range(50):
        label = ((x[:, None] - centres[None]) ** 2).sum(2).argmin(1)
        updated = np.array([x[label == j].mean(0) if (label == j).any() else centres[j] for j in range(n)])
        if np.allclose(updated, centres):
            break
        centres = updated
    anchors = centres * std
    fit = anchor_fitness(anchors, wh, thr)
    for _ in range(generations):
        mutate = (rng.random(anchors.shape) < 0.9) * rng.standard_normal(anchors.shape) * 0.1
        candidate = (anchors * (1 + mutate)).clip(2.0)
        f = anchor_fitness(candidate, wh, thr)
        if f > fit:
            anchors, fit = candidate, f
    return anchors[np.argsort(anchors.prod(1))]
