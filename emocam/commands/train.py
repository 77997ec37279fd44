"""emocam train classifier|soup|quantize|detector: each trainer module in emocam/train registers its own subcommand."""

from __future__ import annotations

import importlib
import importlib.util

# Adding a trainer is adding its module here: it defines register(subparsers, parents) and its own run().
TRAINERS = ["emocam.train.classifier", "emocam.train.soup", "emocam.train.quantize", "emocam.train.detector"]
# Declared so that other commands only list `train` instead of importing the trainers (and torch) at start.
HELP = "train a classifier or detector on your own data"


def register(sub, parents) -> None:
    p = sub.add_parser("train", parents=parents, help=HELP,
                       description="Train the models EmoCam ships, on your data, with resumable checkpoints.")
    kinds = p.add_subparsers(dest="train_what", metavar="MODEL", required=True)
    for module in TRAINERS:
        if importlib.util.find_spec(module) is not None:  # a trainer still being written is simply not offered
            importlib.import_module(module).register(kinds, parents)
