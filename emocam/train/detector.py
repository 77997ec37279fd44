"""`emocam train detector`: YOLOv7-tiny face detector training (yolov7's tiny recipe, scaled to one class).

Per epoch: mosaic (4 images on a 2x canvas) or single letterboxed images, random scale (1 +- 0.5) and translation
(+-0.1), HSV jitter and horizontal flips; SGD with nesterov momentum, warmup, cosine decay to lr0 * 0.01, an
exponential moving average of the weights (what gets saved for inference). Every epoch writes, atomically,
OUT/last.pt (everything needed to --resume), OUT/weights.pt (EMA weights, the file to give the detector) and a
row of OUT/metrics.csv.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from loguru import logger
from torch import nn

from emocam.argtypes import positive
from emocam.errors import EmoCamError
from emocam.nets.yolov7_tiny import N_LANDMARKS, YOLOv7Tiny, build_from_state_dict
from emocam.progress import progress
from emocam.train.atomic import save_atomic
from emocam.train.wider import LabelledImage, find_training_images
from emocam.train.yolo_loss import LossWeights, YoloLoss, best_possible_recall, kmeans_anchors

CHECKPOINT_FORMAT = "emocam-yolov7-tiny-train/1"
METRICS_COLUMNS = ("epoch", "lr", "box", "obj", "cls", "landmarks", "loss", "images", "seconds", "images_per_s")
PAD = 114  # yolov7's letterbox grey
FLIP_LANDMARKS = [1, 0, 2, 4, 3]  # left/right eye and mouth corner swap under a horizontal flip

DESCRIPTION = """\
Train the YOLOv7-tiny face detector. --data is one of:
  a WIDER FACE folder (wider_face_split/wider_face_train_bbx_gt.txt + WIDER_train/images/...),
  a folder holding a *_bbx_gt.txt and images/ with flattened names (like the shared eval/boxes),
  a *_bbx_gt.txt file, or
  a YOLO folder: images/ + labels/ (*.txt, `class cx cy w h` normalised, optionally 5 landmarks).
Anchors are computed from the data (k-means + evolution) unless --init brings anchors that already fit.
Writes OUT/last.pt (resume), OUT/weights.pt (for `--set detector.yolov7-tiny.weights=...` or
`emocam eval detector --detector yolov7-tiny --weights ...`) and OUT/metrics.csv after every epoch."""


@dataclass
class Hyper:
    """hyp.scratch.tiny.yaml where it applies."""

    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    translate: float = 0.1
    scale: float = 0.5
    fliplr: float = 0.5
    mosaic: float = 1.0


# --- data -----------------------------------------------------------------------------------------------------------

class FaceDataset(torch.utils.data.Dataset):
    """Square img_size training images (uint8 RGB CHW) and their faces as YoloLoss targets (image index 0)."""

    def __init__(self, images: list[LabelledImage], img_size: int, hyp: Hyper, augment: bool = True,
                 landmarks: bool = False, seed: int = 0):
        self.images, self.size, self.hyp, self.augment = images, img_size, hyp, augment
        self.landmarks, self.seed, self.epoch = landmarks, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image resized so its longer side is img_size, faces (N, 4) and landmarks (N, 5, 2) in its pixels."""
        item = self.images[i]
        image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if image is None:
            raise EmoCamError(f"{item.path}: cannot read this image")
        h, w = image.shape[:2]
        boxes = item.boxes.astype(np.float32).copy()
        marks = (item.landmarks.astype(np.float32).copy() if item.landmarks is not None
                 else np.full((len(boxes), N_LANDMARKS, 2), np.nan, np.float32))
        if item.normalised:
            boxes *= (w, h, w, h)
            marks *= (w, h)
        k = self.size / max(h, w)
        if k != 1:
            image = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))),
                               interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        return image, boxes * k, marks * k

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        s, hyp = self.size, self.hyp
        if self.augment and rng.random() < hyp.mosaic:
            image, boxes, marks = self._mosaic(i, rng)
            image, boxes, marks = _affine(image, boxes, marks, s, rng, hyp.scale, hyp.translate)
        else:
            image, boxes, marks = self.load(i)
            if self.augment:
                image, boxes, marks = _affine(image, boxes, marks, s, rng, hyp.scale, hyp.translate)
            else:
                image, boxes, marks = _letterbox_square(image, boxes, marks, s)
        if self.augment:
            _hsv(image, rng, hyp)
            if rng.random() < hyp.fliplr:
                image = image[:, ::-1]
                boxes = np.stack([s - boxes[:, 2], boxes[:, 1], s - boxes[:, 0], boxes[:, 3]], 1)
                marks = marks[:, FLIP_LANDMARKS].copy()
                marks[..., 0] = s - marks[..., 0]
        xywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / s
        rows = [np.zeros((len(boxes), 2), np.float32), xywh.astype(np.float32)]
        if self.landmarks:
            rows.append((marks / s).reshape(-1, 2 * N_LANDMARKS).astype(np.float32))
        chw = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))
        return torch.from_numpy(chw), torch.from_numpy(np.concatenate(rows, 1))

    def _mosaic(self, i: int, rng: np.random.Generator):
        s = self.size
        xc, yc = (int(rng.uniform(s / 2, 3 * s / 2)) for _ in range(2))
        canvas = np.full((2 * s, 2 * s, 3), PAD, np.uint8)
        all_boxes, all_marks = [], []
        for k, j in enumerate([i, *rng.integers(0, len(self.images), 3)]):
            image, boxes, marks = self.load(int(j))
            h, w = image.shape[:2]
            # the four images meet at (xc, yc): top-left, top-right, bottom-left, bottom-right of it
            x0, y0 = (xc - w, yc - h) if k == 0 else (xc, yc - h) if k == 1 else (xc - w, yc) if k == 2 else (xc, yc)
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, 2 * s), min(y0 + h, 2 * s)
            canvas[cy0:cy1, cx0:cx1] = image[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            all_boxes.append(boxes + (x0, y0, x0, y0))
            all_marks.append(marks + (x0, y0))
        boxes = np.concatenate(all_boxes)
        marks = np.concatenate(all_marks)
        return canvas, boxes, marks


def _affine(image, boxes, marks, out: int, rng, scale: float, translate: float):
    """Random scale about the image centre and translation into an out x out square; faces clipped to it and
    dropped when under 2 px or when less than a fifth of them stays inside."""
    h, w = image.shape[:2]
    k = rng.uniform(1 - scale, 1 + scale)
    tx = rng.uniform(0.5 - translate, 0.5 + translate) * out
    ty = rng.uniform(0.5 - translate, 0.5 + translate) * out
    m = np.array([[k, 0, tx - k * w / 2], [0, k, ty - k * h / 2]], dtype=np.float32)
    image = cv2.warpAffine(image, m, (out, out), flags=cv2.INTER_LINEAR, borderValue=(PAD, PAD, PAD))
    boxes = boxes * k + np.tile(m[:, 2], 2)
    marks = marks * k + m[:, 2]
    return (image, *_clip(boxes, marks, out))


def _letterbox_square(image, boxes, marks, out: int):
    h, w = image.shape[:2]
    top, left = (out - h) // 2, (out - w) // 2
    image = cv2.copyMakeBorder(image, top, out - h - top, left, out - w - left, cv2.BORDER_CONSTANT,
                               value=(PAD, PAD, PAD))
    return (image, *_clip(boxes + (left, top, left, top), marks + (left, top), out))


def _clip(boxes, marks, out: int):
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.clip(0, out)
    wh = clipped[:, 2:] - clipped[:, :2]
    keep = (wh >= 2).all(1) & (wh.prod(1) > 0.2 * np.maximum(area, 1e-6))
    marks = marks[keep].copy()
    outside = ((marks < 0) | (marks > out)).any(-1)
    marks[outside] = np.nan
    return clipped[keep], marks


def _hsv(image: np.ndarray, rng, hyp: Hyper) -> None:
    gains = rng.uniform(-1, 1, 3) * (hyp.hsv_h, hyp.hsv_s, hyp.hsv_v) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    cv2.cvtColor(merged, cv2.COLOR_HSV2BGR, dst=image)


def collate(batch):
    images, targets = zip(*batch)
    for i, t in enumerate(targets):
        t[:, 0] = i
    return torch.stack(images), torch.cat(targets)


def face_sizes(images: list[LabelledImage], img_size: int) -> np.ndarray:
    """(N, 2) face widths and heights at training scale (longer image side = img_size)."""
    from PIL import Image  # reads the header only

    out = []
    for item in images:
        if not len(item.boxes):
            continue
        with Image.open(item.path) as im:
            w, h = im.size
        wh = item.boxes[:, 2:] - item.boxes[:, :2]
        if item.normalised:
            wh = wh * (w, h)
        out.append(wh * img_size / max(w, h))
    return np.concatenate(out) if out else np.zeros((0, 2))


# --- training -------------------------------------------------------------------------------------------------------

class ModelEMA:
    """Exponential moving average of the weights, decay ramping up to 0.9999 (yolov5/yolov7's ModelEMA)."""

    def __init__(self, model: nn.Module, updates: int = 0):
        self.ema = copy.deepcopy(model).eval()
        self.updates = updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = 0.9999 * (1 - math.exp(-self.updates / 2000))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def _optimizer(model: nn.Module, hyp: Hyper, decay: float) -> torch.optim.SGD:
    """Three groups as in yolov7: BatchNorm weights and implicit layers (no decay), conv weights (decay), biases."""
    no_decay, weights, biases = [], [], []
    for module in model.modules():
        if isinstance(getattr(module, "bias", None), nn.Parameter):
            biases.append(module.bias)
        if isinstance(module, nn.BatchNorm2d) or hasattr(module, "implicit"):
            no_decay.extend(p for n, p in module.named_parameters(recurse=False) if n != "bias")
        elif isinstance(getattr(module, "weight", None), nn.Parameter):
            weights.append(module.weight)
    opt = torch.optim.SGD(no_decay, lr=hyp.lr0, momentum=hyp.momentum, nesterov=True)
    opt.add_param_group({"params": weights, "weight_decay": decay})
    opt.add_param_group({"params": biases})
    return opt


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint or weights file of this project (plain tensors and numbers: no pickled objects)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EmoCamError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise EmoCamError(f"{path}: not a training checkpoint of this project ({exc.__class__.__name__})") from None


@dataclass
class TrainOptions:
    data: Path
    out: Path = Path("out/detector")
    epochs: int = 300
    img_size: int = 640
    batch: int = 16
    nominal_batch: int = 64
    init: Path | None = None
    resume: bool = False
    landmarks: bool = False
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    limit: int | None = None
    max_batches: int | None = None  # per epoch; for quick checks


def train(opts: TrainOptions, hyp: Hyper | None = None) -> list[dict]:
    """Train (or resume); returns the metrics rows of the epochs run now."""
    hyp = hyp or Hyper()
    device = _device(opts.device)
    torch.manual_seed(opts.seed)
    images, layout = find_training_images(opts.data)
    if opts.limit:
        images = images[: opts.limit]
    if not images:
        raise EmoCamError(f"{opts.data}: no training images")
    logger.info(f"{layout}: {len(images)} images, {sum(len(i.boxes) for i in images)} faces")
    opts.out.mkdir(parents=True, exist_ok=True)
    last = opts.out / "last.pt"

    resume_state = None
    if not opts.resume and last.is_file():
        raise EmoCamError(f"{last} exists: pass --resume to continue it or pick another --out")
    if opts.resume:
        if not last.is_file():
            raise EmoCamError(f"--resume: no {last} to resume from")
        resume_state = load_checkpoint(last)
        if resume_state.get("format") != CHECKPOINT_FORMAT:
            raise EmoCamError(f"{last}: not a detector training checkpoint of this project")
        model = build_from_state_dict(resume_state["model"])
    elif opts.init:
        model, anchors_loaded = _initial_model(opts.init, opts.landmarks)
        _fit_anchors(model, images, opts.img_size, keep_if_fit=anchors_loaded)
    else:
        model = YOLOv7Tiny(nc=1, landmarks=opts.landmarks)
        _fit_anchors(model, images, opts.img_size, keep_if_fit=False)
    model.to(device).train()

    accumulate = max(round(opts.nominal_batch / opts.batch), 1)
    decay = hyp.weight_decay * opts.batch * accumulate / opts.nominal_batch
    optimizer = _optimizer(model, hyp, decay)
    ema = ModelEMA(model)
    start_epoch = 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        ema.ema.load_state_dict(resume_state["ema"])
        ema.updates = int(resume_state["ema_updates"])
        start_epoch = int(resume_state["epoch"]) + 1
        logger.info(f"resuming {last} after epoch {start_epoch}")
    if start_epoch >= opts.epochs:
        logger.info(f"{last} already has {start_epoch} epochs (--epochs {opts.epochs}); nothing to do")
        return []

    dataset = FaceDataset(images, opts.img_size, hyp, augment=True, landmarks=model.landmarks, seed=opts.seed)
    order = torch.Generator().manual_seed(opts.seed)  # shuffles; checkpointed, so a resumed run shuffles alike
    if resume_state is not None and "order_rng" in resume_state:
        order.set_state(resume_state["order_rng"])
    loader = make_loader(dataset, opts.batch, opts.workers, device, order)
    n_batches = min(len(loader), opts.max_batches or len(loader))
    warmup = max(round(hyp.warmup_epochs * n_batches), 100)  # yolov7: 1000 iterations at least
    compute_loss = YoloLoss(model, opts.img_size, LossWeights())
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if resume_state is not None and resume_state.get("scaler"):
        scaler.load_state_dict(resume_state["scaler"])
    _trim_metrics(opts.out / "metrics.csv", start_epoch)
    rows = []
    for epoch in range(start_epoch, opts.epochs):
        dataset.epoch = epoch
        model.train()
        t0 = time.monotonic()
        sums = torch.zeros(4)
        seen = 0
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad()
        for k, (imgs, targets) in enumerate(progress(_take(loader, n_batches), n_batches, f"epoch {epoch + 1}")):
            step = k + n_batches * epoch
            lr = _set_lr(optimizer, hyp, step, warmup, epoch, opts.epochs, k, n_batches)
            imgs = imgs.to(device, non_blocking=True).float() / 255
            targets = targets.to(device)
            with torch.autocast(device.type, enabled=use_amp):
                raw = model(imgs)
            loss, terms = compute_loss([r.float() for r in raw], targets)
            scaler.scale(loss).backward()
            if (k + 1) % accumulate == 0 or k + 1 == n_batches:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                ema.update(model)
            sums += terms.cpu() * len(imgs)
            seen += len(imgs)
        seconds = time.monotonic() - t0
        mean = (sums / max(seen, 1)).tolist()
        row = {"epoch": epoch + 1, "lr": round(lr, 6), "box": mean[0], "obj": mean[1], "cls": mean[2],
               "landmarks": mean[3], "loss": sum(mean), "images": seen, "seconds": round(seconds, 2),
               "images_per_s": round(seen / seconds, 2)}
        state = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(),
                 "ema": ema.ema.state_dict(), "ema_updates": ema.updates, "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "order_rng": order.get_state(), "img_size": opts.img_size,
                 "metrics": row}
        save_atomic(last, state)
        save_atomic(opts.out / "weights.pt", {"format": "emocam-yolov7-tiny/1", "state_dict": ema.ema.state_dict(),
                                              "img_size": opts.img_size, "epochs": epoch + 1})
        _append_metrics(opts.out / "metrics.csv", row)
        logger.info(f"epoch {epoch + 1}/{opts.epochs}: loss {row['loss']:.4f} (box {mean[0]:.4f}, obj {mean[1]:.4f}"
                    f", landmarks {mean[3]:.4f}), {row['images_per_s']} images/s")
        rows.append(row)
    return rows


def make_loader(dataset: FaceDataset, batch: int, workers: int, device: torch.device,
                order: torch.Generator) -> torch.utils.data.DataLoader:
    # Not persistent_workers: workers keep the dataset as it was when they started, so they would never see
    # dataset.epoch change and would repeat the first epoch's augmentation forever.
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=collate,
                                       num_workers=workers, drop_last=len(dataset) > batch,
                                       pin_memory=device.type == "cuda", generator=order)


def _initial_model(path: Path, landmarks: bool) -> tuple[YOLOv7Tiny, bool]:
    """A one-class model holding every tensor of the --init weights whose name and shape fit: all of them for
    this project's weights, the backbone and neck for an official 80-class COCO checkpoint (transfer learning)."""
    from emocam.detect.yolov7_tiny import load_weights

    state = load_weights(path)
    if "model.0.conv.bias" in state:
        raise EmoCamError(f"--init {path}: these weights are fused for inference; start from weights.pt or last.pt")
    model = YOLOv7Tiny(nc=1, landmarks=landmarks or any(".lm." in k for k in state))
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    if not any(k.startswith("model.0.") for k in matched):
        raise EmoCamError(f"--init {path}: no YOLOv7-tiny weights in this file")
    model.load_state_dict(matched, strict=False)
    logger.info(f"--init {path}: {len(matched)} of {len(own)} tensors loaded"
                + ("" if len(matched) == len(own) else " (the rest, e.g. a head for other classes, start fresh)"))
    return model, f"model.{len(model.model) - 1}.anchors" in matched


def _take(loader, n: int):
    for k, batch in enumerate(loader):
        if k >= n:
            break
        yield batch


def _set_lr(optimizer, hyp: Hyper, step: int, warmup: int, epoch: int, epochs: int, k: int, n_batches: int) -> float:
    """Cosine from lr0 to lr0 * lrf over the epochs; during warmup biases fall from warmup_bias_lr and the
    rest rise from 0, momentum rises from warmup_momentum (yolov7's schedule)."""
    progress_ = (epoch + k / n_batches) / max(epochs, 1)
    target = hyp.lr0 * (((1 - math.cos(progress_ * math.pi)) / 2) * (hyp.lrf - 1) + 1)
    for j, group in enumerate(optimizer.param_groups):
        if step < warmup:
            start = hyp.warmup_bias_lr if j == 2 else 0.0
            group["lr"] = start + (target - start) * step / warmup
            group["momentum"] = hyp.warmup_momentum + (hyp.momentum - hyp.warmup_momentum) * step / warmup
        else:
            group["lr"] = target
            group["momentum"] = hyp.momentum
    return optimizer.param_groups[1]["lr"]


def _fit_anchors(model: YOLOv7Tiny, images: list[LabelledImage], img_size: int, keep_if_fit: bool) -> None:
    wh = face_sizes(images, img_size)
    current = model.head.anchors.reshape(-1, 2).numpy()
    if ((wh >= 2).all(1)).sum() < current.shape[0]:
        logger.warning(f"{len(wh)} faces are too few to compute anchors from: anchors left as they are")
        return
    bpr = best_possible_recall(current, wh)
    if keep_if_fit and bpr > 0.98:
        logger.info(f"anchors kept (best possible recall {bpr:.3f})")
        return
    anchors = kmeans_anchors(wh, n=current.shape[0])
    model.head.anchors.copy_(torch.from_numpy(anchors).float().view_as(model.head.anchors))
    logger.info(f"anchors from {len(wh)} faces at {img_size}px: {np.round(anchors).astype(int).tolist()} "
                f"(best possible recall {bpr:.3f} -> {best_possible_recall(anchors, wh):.3f})")


def _trim_metrics(path: Path, keep_epochs: int) -> None:
    """On resume, drop rows of epochs that will be run again; on a fresh start, begin a new file."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if keep_epochs and int(r["epoch"]) <= keep_epochs]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, METRICS_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EmoCamError("--device cuda: this torch build sees no CUDA GPU")
    return torch.device(name)


# --- command --------------------------------------------------------------------------------------------------------

def register(sub, parents) -> None:
    p = sub.add_parser("detector", parents=parents, help="train the YOLOv7-tiny face detector",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, metavar="PATH", help="training data (see above)")
    p.add_argument("--init", type=Path, metavar="CKPT", help="start from these weights (fine-tuning)")
    p.add_argument("--epochs", type=positive, default=300, metavar="N", help="total epochs (default 300)")
    p.add_argument("--resume", action="store_true", help="continue OUT/last.pt up to --epochs")
    p.add_argument("--img-size", type=_multiple_of_32, default=640, metavar="N", help="training size (default 640)")
    p.add_argument("--batch", type=positive, default=16, metavar="N", help="images per step (default 16)")
    p.add_argument("--nominal-batch", type=positive, default=64, metavar="N",
                   help="gradients are accumulated up to this many images per update (default 64, as yolov7)")
    p.add_argument("--landmarks", action="store_true", help="add the 5-landmark head (YOLO labels with points)")
    p.add_argument("--workers", type=int, default=min(4, max((os.cpu_count() or 1) - 1, 0)), metavar="N",
                   help="data loading processes")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=positive, metavar="N", help="only the first N images")
    p.add_argument("--out", type=Path, default=Path("out/detector"), metavar="DIR",
                   help="checkpoints and metrics (default out/detector)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg) -> int:
    from emocam.cli import print_json

    opts = TrainOptions(data=args.data, out=args.out, epochs=args.epochs, img_size=args.img_size, batch=args.batch,
                        nominal_batch=args.nominal_batch, init=args.init, resume=args.resume,
                        landmarks=args.landmarks, workers=args.workers, seed=args.seed, device=args.device,
                        limit=args.limit)
    rows = train(opts)
    print_json({"out": str(args.out), "weights": str(args.out / "weights.pt"), "epochs_run": len(rows),
                "last": rows[-1] if rows else None})
    return 0


def _multiple_of_32(text: str) -> int:
    value = positive(text)
    if value % 32:
        raise argparse.ArgumentTypeError("must be a multiple of 32 (the largest stride)")
    return value
