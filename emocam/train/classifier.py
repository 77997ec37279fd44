"""`emocam train classifier`: train a RepVGG-Plus emotion classifier on faces held in memory.

Each epoch ends with an atomic checkpoint (OUT/last.pt: model, optimiser, schedule, epoch, RNG states, metrics
history), so a killed run continues with --resume where it stopped, also in another session or on another
machine. Augmentation runs in torch on whole batches (one affine resampling, photometric jitter and random
erasing per batch), which costs little beside the network itself.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from loguru import logger

from emocam.errors import EmoCamError
from emocam.evaluate.classification import classification_metrics
from emocam.nets.repvgg_plus import (VARIANTS, RepVGGPlus, build_repvgg_plus, deploy_state_dict,
                                     load_deploy_for_training, normalise_u8)
from emocam.train.atomic import save_atomic
from emocam.train.emotion_data import FaceArrays, find_samples, labels_csv_samples, load_faces, save_npy

HELP = """\
--data is an image folder (<emotion>/<image>, e.g. fer2013/train), an AffectNet CSV, a file,label CSV or EmoCam
export sessions (see emocam/train/emotion_data.py). Faces are decoded once and cached as .npy in OUT/cache.
OUT gets last.pt (resumable checkpoint, written every epoch), best.pt (the best epoch's training-form weights),
deploy.pt (the best epoch reparameterised: what the classifier runs, e.g. `emocam eval classifier --classifier
repvgg-fer --set classifier.repvgg-fer.weights=OUT/deploy.pt`) and metrics.csv.
--val-labels (a file,label CSV such as eval/emotion/labels.csv, optionally with --val-filter-prefix) picks the
best epoch by validation accuracy; without it the last epoch is the best."""


@dataclass
class Recipe:
    """Everything that decides a run; stored in the checkpoint so --resume continues the same run."""

    arch: str = "repvggplus-fer-xs"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5  # loss weight of a class ~ count^-power (0: none, 1: fully balanced)
    seed: int = 0
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.1  # of the image side
    brightness: float = 0.2
    contrast: float = 0.3
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)
    # Distillation: the loss mixes in cross-entropy against these classifier backends' averaged probabilities,
    # weighted distill_weight; the hard-label loss keeps 1 - distill_weight. Offline: each face's and its mirror
    # image's probabilities, computed once before training. Online: the teachers' probabilities for the very
    # batch the student sees, augmentation included ("function matching", Beyer et al. 2022: a consistent teacher
    # lets the student get closer to it), at the cost of the teachers' forward pass at every step.
    teachers: tuple[str, ...] = ()
    distill_weight: float = 0.0
    distill_online: bool = False
    # Online teachers average each image and its mirror image, as offline ones always do: a network is not
    # mirror-symmetric, and averaging both views is a better teacher (fer-xw: 0.6906 -> 0.7005 on PublicTest).
    distill_mirror: bool = False
    # bfloat16 autocast on a CPU too (on CUDA it is always on): ~1.7x the images a second on a CPU with AVX512-BF16
    # (measured here, fer-xw). Batch norm statistics, validation and exports stay float32.
    cpu_bf16: bool = False
    # After each epoch the batch-norm statistics that inference uses are measured again on this many training
    # faces without augmentation (a fixed draw): training's running averages describe augmented batches (erased
    # patches, jittered contrast), which the faces a classifier is given are not. Measured on FER2013 PublicTest:
    # +0.7 points for fer-xs, +1.1 for fer-xw (models/repvgg_fer.md). 0 keeps training's running averages.
    bn_calibration_faces: int = 8192
    history: list[dict] = field(default_factory=list)


# ---- batch norm ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> None:
    """Measure the batch-norm running statistics afresh on (N, S, S) uint8 faces (on the model's device): the
    equal-weight mean over batches (momentum None), so the result does not depend on what was there before."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    for m in model.modules():  # dropout would draw from the training run's random stream (and no BN follows it)
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.eval()
    for x in face_batches(images, batch):
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def face_batches(images: torch.Tensor, batch: int = 256):
    """(N, S, S) uint8 faces as the network's unaugmented input, `batch` at a time (channels_last)."""
    for i in range(0, len(images), batch):
        x = normalise_unit(images[i:i + batch].unsqueeze(1).float().div_(255.0))
        yield x.contiguous(memory_format=torch.channels_last)


# ---- augmentation ------------------------------------------------------------------------------------------------
def augment(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random flip, rotation, scale and shift (one grid_sample), brightness/contrast and random erasing on a
    batch (N, 1, S, S) of floats in [0, 1]. `gen` lives on x's device: drawing the numbers there keeps a GPU
    step free of host round trips."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=gen, device=gen.device) * (hi - lo) + lo

    angle = uniform(-1, 1) * math.radians(recipe.max_rotation_deg)
    scale = uniform(*recipe.scale_range)
    flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(-1, 1) * 2 * recipe.max_shift], 1),
                         torch.stack([sin * flip, cos, uniform(-1, 1) * 2 * recipe.max_shift], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(1 - recipe.contrast, 1 + recipe.contrast).view(n, 1, 1, 1)
    bright = uniform(-recipe.brightness, recipe.brightness).view(n, 1, 1, 1)
    x = ((x - mean) * contrast + mean + bright).clamp(0, 1)
    return random_erase(x, recipe, gen)


def random_erase(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Blank one random rectangle (area and aspect random) in a share of the images, with mid-gray."""
    n, _, h, w = x.shape

    def rand() -> torch.Tensor:
        return torch.rand(n, generator=gen, device=gen.device)

    area = rand() * (recipe.erase_area[1] - recipe.erase_area[0]) + recipe.erase_area[0]
    aspect = torch.exp((rand() * 2 - 1) * math.log(3.0))
    eh = (torch.sqrt(area * aspect) * h).clamp(1, h)
    ew = (torch.sqrt(area / aspect) * w).clamp(1, w)
    top = rand() * (h - eh)
    left = rand() * (w - ew)
    on = rand() < recipe.erase_prob
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    mask = ((ys >= top.view(n, 1, 1)) & (ys < (top + eh).view(n, 1, 1))
            & (xs >= left.view(n, 1, 1)) & (xs < (left + ew).view(n, 1, 1)) & on.view(n, 1, 1))
    return torch.where(mask.unsqueeze(1), torch.full_like(x, 0.5), x)


# ---- schedule ----------------------------------------------------------------------------------------------------
def lr_factor(step: int, steps_per_epoch: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    total = max(recipe.epochs * steps_per_epoch, 1)
    warmup = min(int(recipe.warmup_epochs * steps_per_epoch), total - 1)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress_ = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress_, 1.0)))


def class_weights(counts: np.ndarray, power: float) -> torch.Tensor:
    """count^-power, scaled so that the average weight over the training samples is 1."""
    counts = np.maximum(counts.astype(np.float64), 1.0)
    w = counts ** -power
    w *= counts.sum() / (w * counts).sum()
    return torch.tensor(w, dtype=torch.float32)


# ---- the trainer -------------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, recipe: Recipe, train: FaceArrays, out: Path, device: torch.device,
                 val: FaceArrays | None = None, soft_targets: np.ndarray | None = None,
                 teachers: list[torch.nn.Module] | None = None):
        self.recipe, self.train_set, self.val_set, self.out, self.device = recipe, train, val, Path(out), device
        torch.manual_seed(recipe.seed)  # before the model is built: its initial weights come from this seed
        random.seed(recipe.seed)
        np.random.seed(recipe.seed)
        # channels_last: ~1.7x faster training on oneDNN, and the layout cuDNN's tensor-core kernels want
        self.model: RepVGGPlus = build_repvgg_plus(recipe.arch).to(device, memory_format=torch.channels_last)
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]  # BN and biases
        self.optimizer = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                                          {"params": no_decay, "weight_decay": 0.0}],
                                         lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
        self.steps_per_epoch = max(len(train) // recipe.batch_size, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.steps_per_epoch, self.recipe))
        # bfloat16 needs no loss scaling, whose overflow check would wait for the GPU at every step
        self.amp = device.type == "cuda" or recipe.cpu_bf16
        self.gen = torch.Generator().manual_seed(recipe.seed)  # the order of the faces; checkpointed
        self.augment_gen = torch.Generator(device)  # on the device, seeded from self.gen each epoch
        self.epoch = 0  # epochs done
        self.start_up_seconds = 0.0  # the one-off cost of the last epoch's first steps
        self.loss_weights = class_weights(train.class_counts(), recipe.class_weight_power).to(device)
        # all faces on the device (FER2013: 66 MB as uint8), so a step reads nothing from the host
        self.images = torch.from_numpy(train.images).to(device)
        self.labels = torch.from_numpy(train.labels).to(device)
        if (soft_targets is None and not teachers) != (recipe.distill_weight == 0) or (
                soft_targets is not None and teachers):
            raise ValueError("distill_weight > 0 needs soft targets or teacher networks (one of them), and they "
                             "need distill_weight > 0")
        self.soft_targets = None if soft_targets is None else torch.from_numpy(soft_targets).float().to(device)
        self.teachers = [t.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
                         for t in teachers or []]
        n = min(recipe.bn_calibration_faces, len(train))
        pick = np.sort(np.random.default_rng(recipe.seed).permutation(len(train))[:n])
        self.calibration = self.images[torch.from_numpy(pick).to(device)]

    # -- state ---------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"recipe": asdict(self.recipe), "epoch": self.epoch, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "generator": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": _numpy_rng_state(),
                "python_rng": random.getstate(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        _set_numpy_rng_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = int(state["epoch"])
        self.recipe.history = list(state["recipe"]["history"])

    def save(self, name: str, payload: dict) -> Path:
        """Write OUT/name atomically: a kill mid-write leaves the previous file intact."""
        self.out.mkdir(parents=True, exist_ok=True)
        return save_atomic(self.out / name, payload)

    # -- one epoch -----------------------------------------------------------------------------------------------
    def train_epoch(self) -> dict:
        r, model = self.recipe, self.model
        model.train()
        order = torch.randperm(len(self.labels), generator=self.gen).to(self.device)
        self.augment_gen.manual_seed(int(torch.randint(2**62, (1,), generator=self.gen)))
        # summed on the device: reading them each step would wait for the GPU
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        # the first steps pay one-off costs (kernel selection, lazy CUDA set-up): the epoch's steady rate is timed
        # from the end of its first fifth
        warm = self.steps_per_epoch // 5
        start = warm_end = time.monotonic()
        from emocam.progress import progress

        for step in progress(range(self.steps_per_epoch), self.steps_per_epoch, f"epoch {self.epoch + 1}/{r.epochs}"):
            if step == warm and warm:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                warm_end = time.monotonic()
            idx = order[step * r.batch_size:(step + 1) * r.batch_size]
            x = self.images[idx].unsqueeze(1).float().div_(255.0)
            y = self.labels[idx]
            x = normalise_unit(augment(x, r, self.augment_gen)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, weight=self.loss_weights, label_smoothing=r.label_smoothing)
                if r.distill_weight:
                    targets = self.soft_targets[idx] if self.soft_targets is not None else self.teach(x)
                    soft = F.cross_entropy(logits.float(), targets)
                    loss = (1 - r.distill_weight) * loss + r.distill_weight * soft
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total_loss += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
            seen += len(idx)
        total_loss, correct = float(total_loss), int(correct)  # waits for the epoch's GPU work: time it after
        end = time.monotonic()
        seconds = end - start
        steady = (end - warm_end) * self.steps_per_epoch / (self.steps_per_epoch - warm)
        self.start_up_seconds = max(0.0, seconds - steady)
        return {"train_loss": total_loss / seen, "train_acc": correct / seen, "seconds": round(seconds, 1),
                "images_per_s": round(seen / seconds, 1)}

    @torch.no_grad()
    def teach(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher networks' averaged probabilities for the student's own (augmented) batch."""
        views = (x, x.flip(3)) if self.recipe.distill_mirror else (x,)
        return torch.stack([F.softmax(t(v).float(), 1) for t in self.teachers for v in views]).mean(0)

    def predict(self, images: np.ndarray, model: torch.nn.Module | None = None, batch: int = 512) -> np.ndarray:
        """Class indices for (N, S, S) uint8 faces, as the classifier backend would see them (no augmentation)."""
        return predict_classes(model or self.model, images, self.device, batch)

    def validate(self) -> dict:
        return {} if self.val_set is None else validation_scores(self.model, self.val_set, self.device)

    # -- the loop ------------------------------------------------------------------------------------------------
    def best(self) -> dict | None:
        key = "val_acc" if self.val_set is not None else "epoch"
        rows = [h for h in self.recipe.history if key in h]
        return max(rows, key=lambda h: (h[key], h["epoch"])) if rows else None

    def fit(self, until: int | None = None, time_budget: float | None = None) -> dict:
        """Train to the recipe's last epoch, or stop after epoch `until` (the schedule still spans all epochs).

        time_budget (seconds, fresh runs only): after the first epoch, shorten the run to as many epochs as fit,
        judged by that epoch's wall time less the one-off costs of its first steps. The first epoch is pure
        warm-up, whose rates do not depend on the length of the run, so the schedule is exactly the one a run told
        that length from the start would follow."""
        r = self.recipe
        stop = min(until or r.epochs, r.epochs)
        logger.info(f"{r.arch}: {sum(p.numel() for p in self.model.parameters()):,} parameters, "
                    f"{len(self.train_set)} training faces, {self.steps_per_epoch} steps/epoch, "
                    f"epochs {self.epoch + 1}..{r.epochs} on {self.device}")
        while self.epoch < stop:
            began = time.monotonic()
            # the rate of this epoch's first step (after --resume --epochs N the optimizer still holds the old one)
            first_lr = r.lr * lr_factor(self.scheduler.last_epoch, self.steps_per_epoch, r)
            row = {"epoch": self.epoch + 1, "lr": round(first_lr, 6)}
            row.update(self.train_epoch())
            if len(self.calibration):
                recalibrate_bn(self.model, self.calibration)
            row.update(self.validate())
            self.epoch += 1
            r.history.append(row)
            best = self.best()
            if best is not None and best["epoch"] == self.epoch:
                self.save("best.pt", {"arch": r.arch, "epoch": self.epoch, "model": self.model.state_dict()})
                self.export_deploy()
            self.save("last.pt", self.state())  # after best/deploy: a resumed run never lacks the best epoch
            self.write_metrics()
            logger.info(" ".join(f"{k}={v}" for k, v in row.items()))
            if time_budget and self.epoch == 1 and r.warmup_epochs >= 1:
                first = time.monotonic() - began
                later = first - self.start_up_seconds  # validation and saving included
                fit = 1 + max(0, int((time_budget - first) // max(later, 1e-3)))
                if fit < r.epochs:
                    logger.info(f"time budget {time_budget:.0f} s: {fit} epochs fit (of {r.epochs})")
                    r.epochs = fit
                    self.save("last.pt", self.state())
                stop = min(until or r.epochs, r.epochs)
        return {"epochs": self.epoch, "best": self.best(), "out": str(self.out)}

    def export_deploy(self) -> Path:
        """The current weights reparameterised into one 3x3 conv per block (deploy.pt)."""
        model = build_repvgg_plus(self.recipe.arch)
        model.load_state_dict({k: v.float().cpu() for k, v in self.model.state_dict().items()})
        model.eval().reparameterize()
        return self.save("deploy.pt", deploy_state_dict(model))

    def write_metrics(self) -> None:
        columns = ["epoch", "lr", "train_loss", "train_acc", "val_acc", "val_macro_f1", "seconds", "images_per_s"]
        tmp = self.out / "metrics.csv.part"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, columns, extrasaction="ignore")
            w.writeheader()
            for row in self.recipe.history:
                w.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
        os.replace(tmp, self.out / "metrics.csv")


@torch.no_grad()
def predict_classes(model: torch.nn.Module, images: np.ndarray, device: torch.device | str = "cpu",
                    batch: int = 512) -> np.ndarray:
    """Class indices for (N, S, S) uint8 faces, unaugmented, in eval mode (the model's mode is kept)."""
    frozen = isinstance(model, torch.jit.ScriptModule)  # a frozen graph (int8, emocam/nets/quantize.py) has no mode
    was_training = not frozen and model.training
    if not frozen:
        model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = normalise_u8(torch.from_numpy(images[i:i + batch]).unsqueeze(1)).to(device)
        out.append(model(x).argmax(1).cpu())
    if not frozen:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def validation_scores(model: torch.nn.Module, val: FaceArrays, device: torch.device | str = "cpu") -> dict:
    """val_acc and val_macro_f1, as metrics.csv and soup.json report them."""
    metrics = classification_metrics(val.labels, predict_classes(model, val.images, device))
    return {"val_acc": round(metrics.accuracy or 0.0, 4), "val_macro_f1": round(metrics.macro_f1 or 0.0, 4)}


def _numpy_rng_state() -> dict:
    # as tensors and plain numbers, so that checkpoints load with torch.load(weights_only=True)
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "gauss": float(gauss)}


def _set_numpy_rng_state(s: dict) -> None:
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))


def normalise_unit(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> the network's input range (see normalise_u8)."""
    return (x - 0.5) * 2.0


def teacher_probabilities(names: tuple[str, ...], faces: FaceArrays, cfg, cache_dir: Path | None) -> np.ndarray:
    """(N, 7) float32: the named classifier backends' probabilities for each training face, averaged over the
    backends and over the face and its mirror image (training flips at random, so the target should not care).
    Cached beside the decoded faces, keyed by the faces and the teachers' weight files."""
    from emocam.progress import progress

    teachers = [build_teacher(cfg, name) for name in names]
    key = hashlib.sha256(json.dumps([list(names), [t.weights_sha256 for t in teachers]]).encode())
    key.update(faces.images.tobytes())
    cache = Path(cache_dir) / f"teachers-{len(faces)}-{key.hexdigest()[:16]}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        probs = np.load(cache)
        if probs.shape == (len(faces), 7):
            return probs
    probs = np.zeros((len(faces), 7), np.float64)
    batch = 256
    for start in progress(range(0, len(faces), batch), -(-len(faces) // batch), "teacher probabilities"):
        crops = [cv2.cvtColor(g, cv2.COLOR_GRAY2BGR) for g in faces.images[start:start + batch]]
        mirrored = [c[:, ::-1].copy() for c in crops]
        for teacher in teachers:
            probs[start:start + batch] += teacher.predict_crops(crops) + teacher.predict_crops(mirrored)
    probs = (probs / (2 * len(teachers))).astype(np.float32)
    if cache is not None:
        save_npy(cache, probs)
    return probs


def teacher_networks(names: tuple[str, ...], cfg, size: int) -> list[torch.nn.Module]:
    """The teachers as networks fed the student's input tensors, for online distillation: RepVGG-Plus teachers
    (the repvgg-fer backend or deploy.pt files) of the student's input size."""
    from emocam.classify.repvgg import RepVGGClassifier

    networks = []
    for name in names:
        teacher = build_teacher(cfg, name)
        if not isinstance(teacher, RepVGGClassifier) or teacher.size != size:
            raise EmoCamError(f"--teacher {name}: --distill-online takes RepVGG-Plus teachers with the student's "
                              f"{size}x{size} gray input (repvgg-fer or a deploy.pt); drop --distill-online to "
                              "distil from any classifier")
        networks.append(teacher.model.float())
    return networks


def build_teacher(cfg, name: str):
    """A classifier backend by name, or a RepVGG-Plus deploy.pt (a bigger model trained first, for example)."""
    from emocam.backends import build_classifier
    from emocam.classify import CLASSIFIERS
    from emocam.weights import names_a_file

    if name in CLASSIFIERS.names():
        return build_classifier(cfg, name)
    if not names_a_file(name):
        raise EmoCamError(f"--teacher {name}: neither a classifier ({', '.join(CLASSIFIERS.names())}) nor a "
                          "deploy.pt file")
    from emocam.classify.repvgg import trained_arch

    # what training recorded beside the file wins over --set classifier.repvgg-fer.arch, which then names the
    # variant of the teachers that have no record (float16 copies, say)
    configured = cfg.classifier.options("repvgg-fer")
    options = configured.model_copy(update={"weights": name, "arch": trained_arch(Path(name)) or configured.arch})
    return build_classifier(cfg, "repvgg-fer", options)


def load_init(model: RepVGGPlus, path: Path, faces: torch.Tensor | None = None) -> None:
    """Fine-tuning start: training-form weights (last.pt, best.pt, soup.pt or a bare state_dict), or deploy weights
    (deploy.pt, a shipped models/*.pth), whose batch norms are then measured on `faces` ((N, S, S) uint8 on the
    model's device). A class head of another size (another label set) is left at its fresh initialisation."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    own = model.state_dict()
    if any(k.endswith("fused.weight") for k in state):
        deployed = copy.deepcopy(model).eval().reparameterize().state_dict()
        # a class head of another size is allowed (another label set); anything else must match
        mismatch = sorted(set(deployed) ^ set(state)) + [k for k, v in deployed.items() if k in state and (
            state[k].shape != v.shape and not k.startswith("classifier."))]
        if mismatch:
            raise EmoCamError(f"{path}: deploy weights of another variant than --arch (first difference: "
                              f"{mismatch[0]})")
        if faces is None or not len(faces):
            raise EmoCamError(f"{path}: deploy weights need training faces to start from")
        load_deploy_for_training(model, state, face_batches(faces))
        return
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in keep and not k.startswith("classifier.")]
    if missing:
        raise EmoCamError(f"{path}: not a {model.config} checkpoint (no {missing[0]})")
    model.load_state_dict(keep, strict=False)


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (elsewhere autocast would emulate them, slowly)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


# ---- command line ------------------------------------------------------------------------------------------------
def register(sub, parents) -> None:
    p = sub.add_parser("classifier", parents=parents, help="train a RepVGG-Plus emotion classifier",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Recipe()
    p.add_argument("--data", type=Path, required=True, metavar="PATH", help="training faces (see above)")
    gray = sorted(name for name, c in VARIANTS.items() if c.in_channels == 1)  # the faces are decoded gray
    p.add_argument("--arch", default=d.arch, choices=gray, help=f"network variant (default {d.arch})")
    p.add_argument("--out", type=Path, default=Path("out/train-classifier"), metavar="DIR",
                   help="checkpoints, metrics and deploy weights (default out/train-classifier)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"total epochs (default {d.epochs}; with --resume: the checkpoint's, or more to extend it)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/last.pt (its recipe wins; --epochs may extend it)")
    p.add_argument("--until-epoch", type=int, metavar="N",
                   help="stop after epoch N, e.g. at the end of a session; continue later with --resume")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="fresh runs: as many epochs as fit in SECONDS (at most --epochs), judged by the first one")
    p.add_argument("--init", type=Path, metavar="CKPT",
                   help="start from these weights (fine-tuning): training form (last.pt, best.pt, soup.pt) or "
                        "deploy form (deploy.pt, models/repvgg_fer_xl.pth)")
    p.add_argument("--val-labels", type=Path, metavar="CSV", help="file,label CSV that picks the best epoch")
    p.add_argument("--val-filter-prefix", metavar="P", help="only validation rows whose file name starts with P")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak SGD learning rate (default {d.lr})")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"on conv weights (default {d.weight_decay})")
    p.add_argument("--erase-prob", type=float, default=d.erase_prob,
                   help=f"share of images with a random rectangle blanked (default {d.erase_prob})")
    p.add_argument("--teacher", action="append", default=[], metavar="CLASSIFIER",
                   help="distil from this classifier backend or RepVGG-Plus deploy.pt (repeat for an ensemble), "
                        "e.g. mini-xception or out/big/deploy.pt")
    p.add_argument("--distill-weight", type=float, default=0.5,
                   help="share of the loss that follows the teachers when --teacher is given (default 0.5)")
    p.add_argument("--distill-online", action="store_true",
                   help="the teachers see every augmented batch the student sees (consistent targets; a teacher "
                        "forward pass per step; RepVGG-Plus teachers of the student's input size)")
    p.add_argument("--distill-mirror", action="store_true",
                   help="with --distill-online: the teachers average each image and its mirror image (a second "
                        "teacher pass per step)")
    p.add_argument("--cpu-bf16", action="store_true",
                   help="bfloat16 autocast when training on a CPU that supports it (CUDA always uses it)")
    p.add_argument("--bn-calibration-faces", type=int, default=d.bn_calibration_faces, metavar="N",
                   help="after each epoch, batch-norm statistics for inference measured again on N unaugmented "
                        f"training faces (default {d.bn_calibration_faces}; 0: keep training's running averages)")
    p.add_argument("--class-weight-power", type=float, default=d.class_weight_power,
                   help="loss weight ~ class count^-POWER: 0 none, 1 fully balanced (default 0.5)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg=None) -> int:
    from emocam.cli import print_json

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    last = args.out / "last.pt"
    state = None
    if args.resume:
        if not last.is_file():
            raise EmoCamError(f"--resume: no checkpoint at {last}")
        state = torch.load(last, map_location="cpu", weights_only=True)
        saved = dict(state["recipe"])
        saved.setdefault("bn_calibration_faces", 0)  # a run from before calibration continues without it
        for key in ("scale_range", "erase_area", "teachers"):
            saved[key] = tuple(saved.get(key, ()))
        recipe = Recipe(**saved)
        recipe.epochs = args.epochs or recipe.epochs
    else:
        if last.is_file():
            raise EmoCamError(f"{last} exists: pass --resume to continue it or pick another --out")
        if args.teacher and not 0 < args.distill_weight <= 1:
            raise EmoCamError(f"--distill-weight {args.distill_weight}: must be in (0, 1]")
        if args.distill_mirror and not (args.teacher and args.distill_online):
            raise EmoCamError("--distill-mirror: for --teacher with --distill-online (offline teachers always "
                              "average each face and its mirror)")
        recipe = Recipe(arch=args.arch, epochs=args.epochs or Recipe.epochs, batch_size=args.batch_size, lr=args.lr,
                        label_smoothing=args.label_smoothing, class_weight_power=args.class_weight_power,
                        weight_decay=args.weight_decay, erase_prob=args.erase_prob, seed=args.seed,
                        teachers=tuple(args.teacher), distill_weight=args.distill_weight if args.teacher else 0.0,
                        distill_online=bool(args.teacher) and args.distill_online,
                        distill_mirror=bool(args.teacher) and args.distill_online and args.distill_mirror,
                        cpu_bf16=args.cpu_bf16,
                        bn_calibration_faces=max(0, args.bn_calibration_faces))
    if recipe.cpu_bf16 and device.type == "cpu" and not cpu_bf16_supported():
        raise EmoCamError("--cpu-bf16: this CPU has no fast bfloat16 (AVX512-BF16 or AMX); train without it"
                          + (" (the checkpoint's recipe has it: resume on a CPU that does)" if state else ""))
    size = VARIANTS[recipe.arch].input_size
    cache = args.out / "cache"
    train = load_faces(find_samples(args.data), size, cache, "decode training faces")
    val = None
    if args.val_labels:
        val = load_faces(labels_csv_samples(args.val_labels, args.val_filter_prefix), size, cache,
                         "decode validation faces")
    soft = networks = None
    if recipe.teachers:
        from emocam.config import load_config

        cfg = cfg or load_config()
        if recipe.distill_online:
            networks = teacher_networks(recipe.teachers, cfg, size)
        else:
            soft = teacher_probabilities(recipe.teachers, train, cfg, cache)
    trainer = Trainer(recipe, train, args.out, device, val, soft, networks)
    if state is not None:
        trainer.load_state(state)
    elif args.init:
        faces = trainer.calibration if len(trainer.calibration) else trainer.images[:8192]
        load_init(trainer.model, args.init, faces)  # faces: for deploy weights, whose batch norms are measured
    if args.time_budget is not None and (state is not None or args.time_budget <= 0):
        raise EmoCamError("--time-budget: a positive number of seconds, for a fresh run (not with --resume)")
    print_json(trainer.fit(args.until_epoch, args.time_budget))
    return 0
