"""emocam status: the running daemon's state."""

from __future__ import annotations

import argparse

from emocam.config import Config


def register(sub, parents) -> None:
    p = sub.add_parser("status", parents=parents, help="show the running daemon's state",
                       description="Source, negotiated format, fps in/out, inference rate, latency, active preset, "
                                   "sinks and recording path of the running daemon. Exit code 1 when none runs.")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.cli import print_json
    from emocam.daemon import read_status, status_file

    path = status_file(cfg)
    doc = read_status(path)
    if doc is None:
        doc = {"state": "not running", "status_file": str(path)}
    if args.json:
        print_json(doc)
    else:
        _print_human(doc)
    return 0 if doc.get("state") == "running" else 1


def _print_human(doc: dict) -> None:
    if doc.get("state") != "running":
        print(f"emocam is not running ({doc.get('state')})")
        return
    src = doc["source"]
    print(f"source   {src['name']} [{src['state']}] {src['description']}")
    print(f"output   {doc['output']['width']}x{doc['output']['height']}  preset {doc['preset']}")
    print(f"rates    in {doc['fps_in']} fps  out {doc['fps_out']} fps  inference {doc['inference_hz']} Hz")
    print(f"latency  p50 {doc['latency_ms_p50']} ms  p95 {doc['latency_ms_p95']} ms")
    if "detect_ms" in doc:  # a daemon started before these were reported has none
        det, cls = doc["detect_ms"], doc["classify_ms"]
        print(f"stages   detect p50 {det['p50']} / p95 {det['p95']} ms  classify p50 {cls['p50']} / p95 {cls['p95']} ms")
    for name, sink in doc["sinks"].items():
        details = ", ".join(f"{k}={v}" for k, v in sink.items() if k != "state")
        print(f"sink     {name} [{sink['state']}] {details}")
    print(f"session  {doc['session_dir']}")
