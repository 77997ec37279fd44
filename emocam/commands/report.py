"""emocam report: an HTML report with PNG figures about a recorded session."""

from __future__ import annotations

import argparse
from pathlib import Path

from emocam.config import Config

DESCRIPTION = """\
Read SESSION_DIR/frames.jsonl (a session recorded with `emocam run --record`) and write an HTML page with PNG
figures: the emotion timeline of every tracked face, the class distribution, per-layer activation magnitude and
per-class activation histograms (when the log holds per-layer statistics), and the HOG orientation histograms and
class counts of the session's patch export (found through SESSION_DIR/export.json, or --export).

--truth CSV adds agreement with an expert: rows start,end,label (seconds from the session's first recorded frame,
label one of the seven emotions). Every analysed frame inside an interval is compared with the label of its
largest face: accuracy, Cohen's kappa and the confusion matrix (rows expert, columns model)."""


def register(sub, parents) -> None:
    p = sub.add_parser("report", parents=parents, help="HTML report with figures about a recorded session",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("session", type=Path, metavar="SESSION_DIR", help="a session folder holding frames.jsonl")
    p.add_argument("--truth", type=Path, metavar="CSV", help="expert annotation: start,end,label per row")
    p.add_argument("--export", type=Path, metavar="DIR", help="the export session to use for HOG figures")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="the HTML file (default SESSION_DIR/report.html); figures go to FILE's folder, "
                        "in <name>_figures/")
    p.add_argument("--json", action="store_true", help="print the report's numbers as JSON to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.cli import print_json
    from emocam.report.build import build_report

    out = args.out or args.session / "report.html"
    result = build_report(args.session, out, truth=args.truth, export=args.export)
    if args.json:
        print_json(result)
    else:
        print(f"report: {out}")
        for name, path in result["figures"].items():
            print(f"  {name}: {path}")
        agreement = result.get("agreement")
        if agreement and agreement["n"]:
            print(f"agreement on {agreement['n']} frames: accuracy {agreement['accuracy']:.3f}, "
                  f"kappa {agreement['kappa']}")
        for note in result["notes"]:
            print(f"note: {note}")
    return 0
