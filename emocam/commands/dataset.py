"""emocam dataset summarize|export: what an export holds, and reviewed patches as training data."""

from __future__ import annotations

import argparse
from pathlib import Path

from emocam.config import Config
from emocam.types import EMOTIONS

SUMMARIZE_HELP = """\
DIR is an export root (holding sessions s0001, s0002, ...) or one session. Counts patches and episodes per
class, the share of each class, and the mean HOG orientation histogram per class. The emotion folders are the
truth: a patch moved to another folder counts there (relabelled), a deleted one not at all (removed)."""

EXPORT_HELP = """\
Turn reviewed patches into training data. --to imagefolder copies them to OUT/<emotion>/<name>.png (the layout
of fer2013/train, which `emocam train classifier` reads); --to csv writes OUT as a CSV of path,label,model_label,
session,episode,frame,track. Labels are the folders the patches are in now. Nothing in OUT is ever overwritten."""


def register(sub, parents) -> None:
    p = sub.add_parser("dataset", parents=parents, help="summarize exported patches or turn them into training data",
                       description="Summarize exported face patches, or export reviewed patches as training data.")
    kinds = p.add_subparsers(dest="dataset_action", metavar="ACTION", required=True)
    s = kinds.add_parser("summarize", parents=parents, help="counts, class distribution, HOG histograms",
                         description=SUMMARIZE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("dir", type=Path, metavar="DIR", help="an export root or session")
    s.add_argument("--plots", type=Path, metavar="DIR", help="also write PNG plots into DIR")
    s.add_argument("--json", action="store_true", help="print JSON to stdout")
    s.set_defaults(func=run_summarize)
    e = kinds.add_parser("export", parents=parents, help="reviewed patches as an image folder or a CSV",
                         description=EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("dir", type=Path, metavar="DIR", help="an export root or session")
    e.add_argument("--to", choices=["imagefolder", "csv"], required=True, help="output format")
    e.add_argument("--out", type=Path, required=True, metavar="OUT", help="folder (imagefolder) or file (csv)")
    e.set_defaults(func=run_export)


def run_summarize(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.cli import print_json
    from emocam.export.dataset import find_sessions, summarize
    from emocam.report import figures

    summary = summarize(find_sessions(args.dir))
    if args.plots:
        per_class = summary["per_class"]
        plots = {"class_distribution": figures.class_distribution(
            {n: v["patches"] for n, v in per_class.items()}, args.plots / "class_distribution.png",
            f"exported patches in {args.dir.name}", "patches", {n: v["episodes"] for n, v in per_class.items()},
            "episodes")}
        hog = summary["hog"]
        if hog and hog["per_class_histogram"]:
            plots["hog_histograms"] = figures.hog_histograms(
                hog["per_class_histogram"], hog["orientations"], args.plots / "hog_histograms.png",
                "mean HOG orientation histogram per class")
        summary["plots"] = {k: str(v) for k, v in plots.items()}
    if args.json:
        print_json(summary)
        return 0
    print(f"{summary['patches']} patches in {summary['episodes']} episodes from {len(summary['sessions'])} "
          f"session(s); relabelled {summary['relabelled']}, removed {summary['removed']}, "
          f"not in a manifest {summary['unlisted']}")
    hist = (summary["hog"] or {}).get("per_class_histogram", {})
    print(f"{'class':<10}{'patches':>8}{'share':>8}{'episodes':>9}  HOG orientation histogram (0-180 deg)")
    for name in EMOTIONS:
        v = summary["per_class"][name]
        bars = " ".join(f"{x:.2f}" for x in hist[name]) if name in hist else "-"
        print(f"{name:<10}{v['patches']:>8}{v['share']:>8.1%}{v['episodes']:>9}  {bars}")
    for name, path in summary.get("plots", {}).items():
        print(f"plot {name}: {path}")
    return 0


def run_export(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.cli import print_json
    from emocam.export.dataset import export_csv, export_imagefolder, find_sessions

    sessions = find_sessions(args.dir)
    n = (export_imagefolder if args.to == "imagefolder" else export_csv)(sessions, args.out)
    print_json({"to": args.to, "out": str(args.out), "patches": n})
    return 0
