"""Do the maps point at what matters? Mask the top `share` of a face's map (for its predicted class) and see how
much that class's probability falls, against masking as many pixels elsewhere:

- random: random pixels (scattered: salt-and-pepper noise, which hurts a CNN by itself);
- blobs: the top of a random map at the layer's own resolution (blobs of the same size as the map's);
- other: the top of ANOTHER face's map of the same layer (the same kind of region, in the wrong place).

A faithful map makes "top" the largest drop. For scale, "occlusion" masks the top of an occlusion-sensitivity map
(the drop when each cell of a 4x4 grid is masked alone: 16 extra passes): a reference a cheap map can approach.
Masked pixels take the image's mean value.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from emocam.explain.explainer import Explainer
from emocam.explain.maps import upsample
from emocam.explain.options import ExplainConfig
from emocam.imageio import read_bgr
from emocam.progress import progress

CONTROLS = ("top", "random", "blobs", "other")
GRID = 4  # occlusion reference: cells per side


def fer_public_test(labels_csv: Path, limit: int | None = None) -> list[Path]:
    """The FER2013 PublicTest images a labels.csv (columns file, label; paths relative to it) lists."""
    with open(labels_csv, newline="", encoding="utf-8") as f:
        files = [labels_csv.parent / row["file"] for row in csv.DictReader(f) if "PublicTest" in row["file"]]
    return files[:limit] if limit else files


def faithfulness(classifier, files: list[Path], modes=("activation", "cam", "gradcam"), share: float = 0.2,
                 batch: int = 32, seed: int = 0) -> dict:
    """Mean drop of the predicted class's probability per mode and layer for each masking (CONTROLS), how often
    masking the map's top beats masking random pixels, and the occlusion reference."""
    images = [read_bgr(p) for p in progress(files, total=len(files), desc="read")]
    chunks = np.array_split(np.arange(len(images)), max(1, -(-len(images) // batch)))  # no chunk of one
    out: dict = {"images": len(images), "share": share, "modes": {}}
    reference = []
    for mode in modes:
        explainer = Explainer(classifier, ExplainConfig(mode=mode, log_stats=[]))
        rng = np.random.default_rng(seed)
        drops = {name: {c: [] for c in CONTROLS} for name in explainer.layers}
        for idx in progress(chunks, total=len(chunks), desc=f"faithfulness {mode}"):
            crops = [images[i] for i in idx]
            _batch_drops(classifier, explainer, crops, share, rng, drops)
            if mode == modes[0]:
                reference.append(_occlusion_drop(classifier, crops, share, rng))
        out["modes"][mode] = {name: _summary(d) for name, d in drops.items()}
    out["occlusion_reference"] = round(float(np.concatenate(reference).mean()), 4)
    return out


def _batch_drops(classifier, explainer: Explainer, crops, share: float, rng, drops: dict) -> None:
    x = classifier.preprocess(crops)
    n, _, h, w = x.shape
    k = max(1, round(share * h * w))
    probs, raw = explainer.forward(crops)
    predicted = probs.argmax(axis=1)
    before = probs[np.arange(n), predicted]
    fill = x.mean(dim=(1, 2, 3), keepdim=True)

    def top_mask(maps: np.ndarray) -> np.ndarray:
        return _top_mask(upsample(np.ascontiguousarray(maps, np.float32), (w, h), clip=False), k, rng)

    inputs = [_masked(x, fill, top_mask(rng.random((n, h, w), np.float32)))]  # random pixels
    keys = [("*", "random")]
    for name in explainer.layers:
        stack = raw[name]
        maps = stack[np.arange(n), predicted] if stack.shape[1] > 1 else stack[:, 0]
        top = top_mask(maps)
        blobs = top_mask(rng.random(maps.shape, np.float32))
        inputs += [_masked(x, fill, top), _masked(x, fill, blobs), _masked(x, fill, np.roll(top, 1, axis=0))]
        keys += [(name, "top"), (name, "blobs"), (name, "other")]
    after = _probabilities(classifier, inputs)[:, np.arange(n), predicted]
    for (name, control), p in zip(keys, after):
        targets = drops.values() if name == "*" else [drops[name]]
        for d in targets:
            d[control].append(before - p)


def _occlusion_drop(classifier, crops, share: float, rng) -> np.ndarray:
    x = classifier.preprocess(crops)
    n, _, h, w = x.shape
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    before = _probabilities(classifier, [x])[0]
    predicted = before.argmax(axis=1)
    cells = []
    for i in range(GRID * GRID):
        mask = np.zeros((n, h, w), bool)
        r, c = divmod(i, GRID)
        mask[:, r * h // GRID:(r + 1) * h // GRID, c * w // GRID:(c + 1) * w // GRID] = True
        cells.append(_masked(x, fill, mask))
    after = _probabilities(classifier, cells)[:, np.arange(n), predicted]  # (16, n)
    sensitivity = (before[np.arange(n), predicted] - after).T.reshape(n, GRID, GRID).astype(np.float32)
    top = _top_mask(upsample(sensitivity, (w, h), clip=False), max(1, round(share * h * w)), rng)
    return before[np.arange(n), predicted] - _probabilities(classifier, [_masked(x, fill, top)])[0][
        np.arange(n), predicted]


def _top_mask(maps: np.ndarray, k: int, rng) -> np.ndarray:
    """Boolean (n, h, w): the k highest pixels of each map. Ties are broken at random: rectified maps have many
    equal zeros, which a plain sort would take from one corner."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    span = np.ptp(flat, axis=1, keepdims=True) + 1e-12
    flat = flat + rng.uniform(0, 1e-6, flat.shape) * span
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, np.argsort(-flat, axis=1)[:, :k], True, axis=1)
    return mask.reshape(maps.shape)


def _masked(x: torch.Tensor, fill: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    m = torch.from_numpy(mask.reshape(x.shape).astype(np.float32))
    return x * (1 - m) + fill * m


def _probabilities(classifier, inputs: list[torch.Tensor]) -> np.ndarray:
    """(len(inputs), n, K) softmax of each batch."""
    with torch.no_grad():
        logits = torch.stack([classifier.model(t.to(classifier.device)) for t in inputs]).float()
    return torch.softmax(logits, dim=-1).cpu().numpy()


def _summary(d: dict) -> dict:
    arrays = {c: np.concatenate(v) for c, v in d.items()}
    out = {c: round(float(a.mean()), 4) for c, a in arrays.items()}
    out["top_beats_random"] = round(float((arrays["top"] > arrays["random"]).mean()), 3)
    return out
