"""`emocam train soup`: average the weights of classifier fine-tunes that started from one checkpoint.

Runs fine-tuned from the same weights usually stay in one basin of the loss, where the average of their weights
is a better model than any of them (Wortsman et al. 2022, "Model soups"): an ensemble's gain at one network's cost.
The averaged convolutions no longer produce the activations any ingredient's batch-norm statistics were measured
on, so those are measured again on unaugmented training faces (as in stochastic weight averaging) before
reparameterising; a soup of one checkpoint is that measurement alone.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from emocam.errors import EmoCamError
from emocam.nets.repvgg_plus import VARIANTS, RepVGGPlus, build_repvgg_plus, deploy_state_dict
from emocam.train.atomic import save_atomic
from emocam.train.classifier import recalibrate_bn, validation_scores
from emocam.train.emotion_data import FaceArrays, find_samples, labels_csv_samples, load_faces

HELP = """\
Each CKPT is a training-form checkpoint of `emocam train classifier` (best.pt or last.pt) of one variant; the
soup means most when all of them were fine-tuned (--init) from the same weights. OUT gets soup.pt (training form,
for --init), deploy.pt (what the classifier runs) and soup.json (the ingredients and, with --val-labels, every
score). --greedy (needs --val-labels) adds the ingredients best first and keeps each only if the validation
accuracy does not drop; that choice is made on the validation faces, so its score there is optimistic."""


def load_ingredient(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """(variant, training-form state dict) of a best.pt or last.pt."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise EmoCamError(f"{path}: not readable as a checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(state, dict):
        state = {}
    model = state.get("model", state)
    if any(str(k).endswith("fused.weight") for k in model):
        raise EmoCamError(f"{path}: reparameterised weights cannot be averaged; use best.pt or last.pt")
    arch = state.get("arch") or state.get("recipe", {}).get("arch")  # best.pt names it; last.pt in its recipe
    if not arch or model is state:
        raise EmoCamError(f"{path}: not a best.pt or last.pt of `emocam train classifier`")
    return arch, model


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor; counters (BN's num_batches_tracked) from the first state."""
    return {k: (torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v.clone())
            for k, v in states[0].items()}


def cook(arch: str, states: list[dict[str, torch.Tensor]], calibration: np.ndarray) -> RepVGGPlus:
    model = build_repvgg_plus(arch).to(memory_format=torch.channels_last)
    model.load_state_dict(average(states))
    recalibrate_bn(model, torch.from_numpy(calibration))
    return model.eval()


def load_ingredients(paths: list[Path]) -> tuple[str, list[dict[str, torch.Tensor]]]:
    """(variant, state dicts) of checkpoints that can go into one soup: one known variant, its tensors."""
    loaded = [load_ingredient(p) for p in paths]
    archs = sorted({arch for arch, _ in loaded})
    if len(archs) != 1:
        raise EmoCamError(f"the checkpoints are of different variants ({', '.join(archs)}): one soup, one variant")
    arch = archs[0]
    if arch not in VARIANTS:
        raise EmoCamError(f"{paths[0]}: unknown variant {arch}")
    shapes = {k: v.shape for k, v in build_repvgg_plus(arch).state_dict().items()}
    for path, (_, state) in zip(paths, loaded):
        if {k: v.shape for k, v in state.items()} != shapes:
            raise EmoCamError(f"{path}: its tensors are not those of {arch} as this version builds it")
    return arch, [state for _, state in loaded]


def make_soup(paths: list[Path], calibration: np.ndarray, val: FaceArrays | None = None, greedy: bool = False,
              ingredients: tuple[str, list[dict[str, torch.Tensor]]] | None = None) -> tuple[RepVGGPlus, dict]:
    """The soup of these checkpoints (all of them, or the greedy choice on val) and a report of how it was made.
    `ingredients`: what load_ingredients(paths) returned, when the caller has it already."""
    arch, states = ingredients or load_ingredients(paths)
    report: dict = {"arch": arch, "calibration_faces": len(calibration), "ingredients": []}
    for path, state in zip(paths, states):
        row = {"checkpoint": str(path)}
        if val is not None:
            single = build_repvgg_plus(arch)
            single.load_state_dict(state)
            row.update(validation_scores(single, val))
        report["ingredients"].append(row)
    chosen = list(range(len(paths)))
    if greedy:
        if val is None:
            raise EmoCamError("--greedy chooses the ingredients on validation faces: give --val-labels")
        ranked = sorted(chosen, key=lambda i: -report["ingredients"][i]["val_acc"])
        # the baseline measured like every candidate: batch norm measured again on the calibration faces
        chosen, best = ranked[:1], validation_scores(cook(arch, [states[ranked[0]]], calibration), val)["val_acc"]
        for i in ranked[1:]:
            acc = validation_scores(cook(arch, [states[j] for j in chosen + [i]], calibration), val)["val_acc"]
            logger.info(f"soup + {paths[i]}: {acc} ({'kept' if acc >= best else 'left out'})")
            if acc >= best:
                chosen, best = chosen + [i], acc
    model = cook(arch, [states[i] for i in chosen], calibration)
    report["soup"] = [str(paths[i]) for i in chosen]
    if val is not None:
        report.update(validation_scores(model, val))
    return model, report


def register(sub, parents) -> None:
    p = sub.add_parser("soup", parents=parents, help="average fine-tuned classifier checkpoints into one model",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path, metavar="CKPT")
    p.add_argument("--data", type=Path, required=True, metavar="PATH",
                   help="training faces whose batch-norm statistics the soup takes (as for train classifier)")
    p.add_argument("--bn-calibration-faces", type=int, default=8192, metavar="N",
                   help="how many of them, drawn with a fixed seed (default 8192; all of them if there are fewer)")
    p.add_argument("--out", type=Path, default=Path("out/soup"), metavar="DIR", help="default out/soup")
    p.add_argument("--val-labels", type=Path, metavar="CSV", help="file,label CSV to score the soup on")
    p.add_argument("--val-filter-prefix", metavar="P", help="only validation rows whose file name starts with P")
    p.add_argument("--greedy", action="store_true", help="keep only the ingredients that help on --val-labels")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg=None) -> int:
    from emocam.cli import print_json

    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.out / "soup.pt").exists():
        raise EmoCamError(f"{args.out / 'soup.pt'} exists: pick another --out")
    if args.bn_calibration_faces < 1:
        raise EmoCamError("--bn-calibration-faces: at least 1 (a soup always measures batch norm again)")
    ingredients = load_ingredients(args.checkpoints)  # before minutes of decoding
    size = VARIANTS[ingredients[0]].input_size
    cache = args.out / "cache"
    train = load_faces(find_samples(args.data), size, cache, "decode training faces")
    n = min(args.bn_calibration_faces, len(train))
    calibration = train.images[np.sort(np.random.default_rng(0).permutation(len(train))[:n])]
    val = None
    if args.val_labels:
        val = load_faces(labels_csv_samples(args.val_labels, args.val_filter_prefix), size, cache,
                         "decode validation faces")
        if not len(val):
            raise EmoCamError(f"--val-labels {args.val_labels}: no faces selected (check --val-filter-prefix)")
    model, report = make_soup(args.checkpoints, calibration, val, args.greedy, ingredients)
    args.out.mkdir(parents=True, exist_ok=True)
    save_atomic(args.out / "soup.pt", {"arch": report["arch"], "epoch": 0, "model": model.state_dict()})
    save_atomic(args.out / "deploy.pt", deploy_state_dict(model.reparameterize()))
    (args.out / "soup.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_json(report)
    return 0
