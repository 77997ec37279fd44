"""MTCNN (Zhang et al., 2016) as facenet-pytorch 2.6.0 runs it, in plain torch (CPU or CUDA).

The three networks keep facenet-pytorch's layer names, so its state dicts load unchanged, and `detect_faces`
repeats its cascade step for step with the same float32 arithmetic (P-net's outputs are bit-identical to
facenet's), so boxes agree with it to float noise. What differs is how the work is done: pyramid levels and crops
are area-resampled from one integral image (one gather per level, one for all crops), R-/O-net see their batches
channels-last, and NMS is plain torch rather than torchvision/numpy.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# facenet-pytorch's fixed numbers: input scaling, P-net geometry, per-stage NMS thresholds and network batch size.
PIXEL_MEAN, PIXEL_SCALE = 127.5, 0.0078125
CELL, STRIDE = 12, 2
NMS_PER_SCALE, NMS_ACROSS_SCALES, NMS_RNET, NMS_ONET = 0.5, 0.7, 0.7, 0.7
BATCH = 512


class PNet(nn.Module):
    """Proposal net: fully convolutional; per 12x12 window (stride 2) box offsets and face/no-face probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refine net: 24x24 crops -> box offsets and face/no-face probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights came from Caffe/TF, which flatten width before height: (N, W, H, C) order.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net: 48x48 crops -> box offsets, 5 landmarks (x1..x5, y1..y5 relative to the box), probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "iou", block: int = 256
) -> torch.Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    mode "iou" is torchvision.ops.nms (areas w*h, equal scores keep input order); mode "min" is facenet's numpy
    'Min' NMS (intersection over the smaller box, areas (w+1)*(h+1), equal scores favour the later box, as
    numpy's sort does for small arrays; its SIMD sort may order larger ones otherwise). Equal O-net scores happen
    when two boxes truncate to the same crop; either box is then as good, they differ by a fraction of a pixel.
    A box goes when its overlap with a kept, better box exceeds `threshold`. Instead of one Python step per box, the
    sorted boxes go in blocks: first against all boxes kept so far, then within the block by iterating
    keep = "not suppressed by a kept box before it" until nothing changes; that fixed point is unique (each box
    depends only on earlier ones), so it is exactly the sequential greedy answer.
    """
    if len(boxes) < 2:  # a tracked face, an empty piece of the search: nothing to suppress
        return torch.arange(len(boxes), device=boxes.device)
    if mode == "iou":
        order = torch.sort(scores, descending=True, stable=True).indices
    elif mode == "min":
        order = torch.sort(scores, stable=True).indices.flip(0)
    else:
        raise ValueError(f"nms mode must be 'iou' or 'min', not {mode!r}")
    ranked = boxes[order, :4]
    kept: list[torch.Tensor] = []
    kept_boxes = ranked[:0]
    for start in range(0, len(ranked), block):
        chunk = ranked[start : start + block]
        alive = torch.ones(len(chunk), dtype=torch.bool, device=boxes.device)
        if len(kept_boxes):
            alive = ~(overlap(kept_boxes, chunk, mode) > threshold).any(0)
        suppresses = (overlap(chunk, chunk, mode) > threshold).triu(1) & alive[:, None]
        keep = alive
        while True:
            updated = alive & ~(suppresses & keep[:, None]).any(0)
            if torch.equal(updated, keep):
                break
            keep = updated
        kept.append(start + keep.nonzero()[:, 0])
        kept_boxes = torch.cat([kept_boxes, chunk[keep]])
    if not kept:
        return order[:0]
    return order[torch.cat(kept)]


def overlap(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """(len(a), len(b)) overlaps, in the same float32 operation order as torchvision's C++ / facenet's numpy."""
    ax1, ay1, ax2, ay2 = (a[:, i, None] for i in range(4))
    bx1, by1, bx2, by2 = (b[None, :, i] for i in range(4))
    one = 1 if mode == "min" else 0
    w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1) + one).clamp(min=0)
    h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1) + one).clamp(min=0)
    inter = w * h
    area_a = (ax2 - ax1 + one) * (ay2 - ay1 + one)
    area_b = (bx2 - bx1 + one) * (by2 - by1 + one)
    if mode == "min":
        return inter / torch.minimum(area_a, area_b)
    return inter / (area_a + area_b - inter)


class AreaResampler:
    """Area-averaged resizes of one uint8 HxWx3 image and of rectangles in it, from its integral image.

    The bins and the float32 `sum / kh / kw` are those of torch's adaptive_avg_pool2d, which is what facenet's
    interpolate(mode="area") runs; sums of uint8 pixels are exact integers, so the result is bit-identical to it.
    But no pyramid level has to read the whole frame, and all crops come out of one gather instead of one
    interpolate call each. Output channels are RGB; give bgr=True for a BGR image (no frame copy).
    """

    def __init__(self, image: np.ndarray, device: torch.device, bgr: bool = False):
        self.integral = integral_image(image, device)
        self.height, self.width = image.shape[:2]
        self.bgr = bgr

    def resize(self, height: int, width: int, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The whole image at height x width -> (1, 3, height, width) float32. Separable: two row/column gathers.
        With rows = (first, end), only those rows of it: (1, 3, end - first, width)."""
        device = str(self.integral.device)
        r0, r1 = _resize_bins(self.height, height, device)
        if rows is not None:
            r0, r1 = r0[rows[0]:rows[1]], r1[rows[0]:rows[1]]
        c0, c1 = _resize_bins(self.width, width, device)
        row_sums = self.integral.index_select(0, r1) - self.integral.index_select(0, r0)
        total = row_sums.index_select(1, c1) - row_sums.index_select(1, c0)
        return self._mean(total[None], (r1 - r0)[:, None], (c1 - c0)[None, :])

    def crops(self, y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, size: int) -> torch.Tensor:
        """Rectangles rows [y0, y1) x cols [x0, x1), one per crop -> (N, 3, size, size) float32."""
        r0, r1 = _bins(y0, y1 - y0, size)
        c0, c1 = _bins(x0, x1 - x0, size)
        # All four corners of all bins in one index_select on the integral image seen as (pixels, 3).
        rows = torch.stack([r1, r0]) * self.integral.shape[1]
        cols = torch.stack([c1, c0])
        index = rows[:, None, :, :, None] + cols[None, :, :, None, :]  # (row end/start, col end/start, N, size, size)
        at = self.integral.view(-1, 3).index_select(0, index.flatten()).view(*index.shape, 3)
        total = at[0, 0] - at[1, 0] - at[0, 1] + at[1, 1]
        return self._mean(total, (r1 - r0)[:, :, None], (c1 - c0)[:, None, :])

    def _mean(self, total: torch.Tensor, kh: torch.Tensor, kw: torch.Tensor) -> torch.Tensor:
        """Bin sums (N, h, w, 3) -> means (N, 3, h, w), divided as adaptive_avg_pool2d does: sum / kh / kw."""
        mean = total.to(torch.float32) / kh[..., None].to(torch.float32) / kw[..., None].to(torch.float32)
        return (mean.flip(3) if self.bgr else mean).permute(0, 3, 1, 2)


def integral_image(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H+1, W+1, 3) sums of all pixels above and left of each corner of a uint8 HxWx3 image, on device."""
    h, w = image.shape[:2]
    fits_int32 = 255 * h * w < 2**31
    image = np.ascontiguousarray(image)
    if device.type == "cpu":
        # OpenCV's integral image is ~20x faster than torch.cumsum on CPU.
        return torch.from_numpy(cv2.integral(image, sdepth=cv2.CV_32S if fits_int32 else cv2.CV_64F))
    return _integral_torch(torch.from_numpy(image).to(device), torch.int32 if fits_int32 else torch.int64)


def _integral_torch(pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    h, w = pixels.shape[:2]
    integral = torch.zeros(h + 1, w + 1, 3, dtype=dtype, device=pixels.device)
    integral[1:, 1:] = pixels.to(dtype).cumsum(0).cumsum(1)
    return integral


def _bins(start: torch.Tensor, length: torch.Tensor | int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """adaptive_avg_pool2d's n bins over each span: bin i covers [floor(i*L/n), ceil((i+1)*L/n)) past start."""
    i = torch.arange(n, device=start.device)
    length = torch.as_tensor(length, device=start.device).reshape(-1, 1)
    return start[:, None] + i * length // n, start[:, None] + ((i + 1) * length + n - 1) // n


@functools.lru_cache(maxsize=256)
def _resize_bins(length: int, n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """_bins of a whole side: the same few pyramid sizes come back every frame of a video."""
    return tuple(v[0] for v in _bins(torch.zeros(1, dtype=torch.long, device=device), length, n))


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Image scales at which a min_face_size face fills P-net's 12 px window, down to a 12 px short side."""
    scale = CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - PIXEL_MEAN) * PIXEL_SCALE


def _proposals(reg: torch.Tensor, prob: torch.Tensor, scale: float, threshold: float,
               first_cell_row: int = 0) -> torch.Tensor:
    """P-net windows scoring >= threshold as (K, 9) rows x1, y1, x2, y2, score, 4 offsets, in row-major order."""
    score = prob[0, 1]
    yx = (score >= threshold).nonzero()
    offsets = reg[0][:, yx[:, 0], yx[:, 1]].T
    xy = yx.flip(1).to(reg.dtype)
    if first_cell_row:
        xy[:, 1] += first_cell_row
    top_left = ((STRIDE * xy + 1) / scale).floor()
    bottom_right = ((STRIDE * xy + CELL) / scale).floor()
    return torch.cat([top_left, bottom_right, score[yx[:, 0], yx[:, 1], None], offsets], dim=1)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre (facenet's rerec), in place."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply R-/O-net box offsets, relative to the inclusive pixel size (facenet's bbreg), in place."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = boxes[:, :4] + offsets * torch.stack([w, h, w, h], dim=1)
    return boxes


def _crops(boxes: torch.Tensor, sampler: AreaResampler, size: int):
    """The image under each box, clipped to the image (facenet's pad: no zero padding), resized to size x size.

    Returns the crops and the mask of boxes that still cover any pixel; the others are dropped (facenet would
    misalign its outputs there). The crops stay channels-last in memory: R-/O-net run 1.5-4x faster so on CPU
    than on facenet's NCHW batches, at the price of ~1e-6 differences in their outputs.
    """
    b = boxes[:, :4].trunc().int()
    x0, y0 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1
    x1, y1 = b[:, 2].clamp(max=sampler.width), b[:, 3].clamp(max=sampler.height)
    valid = (x1 > x0) & (y1 > y0)
    if not bool(valid.all()):
        x0, y0, x1, y1 = x0[valid], y0[valid], x1[valid], y1[valid]
    return _normalize(sampler.crops(y0.long(), y1.long(), x0.long(), x1.long(), size)), valid


def _batched(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    outs = [net(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


def detect_faces(
    image: np.ndarray,
    device: torch.device,
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    min_face_size: float = 20,
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    factor: float = 0.709,
    bgr: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces in one HxWx3 uint8 RGB image (BGR with bgr=True), the nets being on `device`.

    Returns boxes (N, 5: x1, y1, x2, y2, score) and landmarks (N, 5, 2: x, y) float32 on `device`, best score
    first. Landmarks, left/right as seen in the image: left eye, right eye, nose, left and right mouth corner.
    """
    height, width = image.shape[:2]
    sampler = AreaResampler(image, device, bgr)
    found = [pnet_windows(sampler, pnet, scale, thresholds[0])
             for scale in pyramid_scales(height, width, min_face_size, factor)]
    boxes = rnet_stage(pnet_candidates(found, device), sampler, rnet, thresholds[1])
    return onet_stage(boxes, sampler, onet, thresholds[2])


def pnet_windows(sampler: AreaResampler, pnet: PNet, scale: float, threshold: float,
                 rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Stage 1 at one pyramid scale: P-net windows scoring >= threshold, NMS'd, as (K, 9) rows (see _proposals).

    `rows` = (first, end) limits the work to that band of the level's rows; `first` must be even (P-net's stride),
    and bands that overlap by CELL - STRIDE rows together see every window the whole level has.
    """
    level = sampler.resize(int(sampler.height * scale + 1), int(sampler.width * scale + 1), rows)
    reg, prob = pnet(_normalize(level))
    found = _proposals(reg, prob, scale, threshold, rows[0] // STRIDE if rows else 0)
    return found[nms(found, found[:, 4], NMS_PER_SCALE)]


def pnet_candidates(found: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """P-net windows of all scales -> NMS across scales, P-net's box offsets applied, squared: R-net's input."""
    boxes = torch.cat(found) if found else torch.zeros(0, 9, device=device)
    boxes = boxes[nms(boxes, boxes[:, 4], NMS_ACROSS_SCALES)]
    # P-net offsets are relative to the exclusive box size, unlike the later stages.
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    corners = boxes[:, :4] + boxes[:, 5:9] * torch.stack([w, h, w, h], dim=1)
    return square(torch.cat([corners, boxes[:, 4:5]], dim=1))


def rnet_stage(boxes: torch.Tensor, sampler: AreaResampler, rnet: RNet, threshold: float) -> torch.Tensor:
    """Stage 2: R-net on 24x24 crops of the candidate boxes (N, >=4); the survivors regressed and squared (M, 5)."""
    crops, valid = _crops(boxes, sampler, 24)
    boxes = boxes[valid]
    if not len(boxes):
        return boxes.new_zeros(0, 5)
    offsets, prob = _batched(rnet, crops)
    passed = prob[:, 1] > threshold
    boxes = torch.cat([boxes[passed, :4], prob[passed, 1:2]], dim=1)
    offsets = offsets[passed]
    keep = nms(boxes, boxes[:, 4], NMS_RNET)
    return square(_regress(boxes[keep], offsets[keep]))


def onet_stage(boxes: torch.Tensor, sampler: AreaResampler, onet: ONet,
               threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 3: O-net on 48x48 crops of square boxes (N, >=4) -> faces (M, 5) and landmarks (M, 5, 2), best first.
    Landmarks come from the box before its final regression, as in facenet."""
    crops, valid = _crops(boxes, sampler, 48)
    boxes = boxes[valid]
    if not len(boxes):
        return boxes.new_zeros(0, 5), boxes.new_zeros(0, 5, 2)
    offsets, marks, prob = _batched(onet, crops)
    passed = prob[:, 1] > threshold
    boxes = torch.cat([boxes[passed, :4], prob[passed, 1:2]], dim=1)
    offsets, marks = offsets[passed], marks[passed]
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    xs = w * marks[:, :5] + boxes[:, 0:1] - 1
    ys = h * marks[:, 5:] + boxes[:, 1:2] - 1
    points = torch.stack([xs, ys], dim=2)
    boxes = _regress(boxes, offsets)
    keep = nms(boxes, boxes[:, 4], NMS_ONET, mode="min")
    return boxes[keep], points[keep]
