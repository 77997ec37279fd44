"""emocam run: the live daemon in the foreground."""

from __future__ import annotations

import argparse

from emocam.config import Config


def register(sub, parents) -> None:
    p = sub.add_parser("run", parents=parents, help="run the live daemon (camera -> overlays -> virtual camera)",
                       description="Read the source, detect faces, classify emotions, draw the active overlay preset "
                                   "and publish to the enabled sinks until SIGINT/SIGTERM (Ctrl-C) or the source "
                                   "ends. SIGHUP reloads config.toml and the overlay presets.")
    p.add_argument("--source", metavar="SPEC",
                   help="demo, camera, a camera index or /dev/videoN, a video file, an image folder or a URL")
    p.add_argument("--record", action="store_true", help="also record the annotated video and its frame log")
    p.add_argument("--no-vcam", action="store_true", help="do not publish a virtual camera")
    p.add_argument("--preview", action="store_true", help="show a preview window")
    p.add_argument("--preset", help="overlay preset to start with (overlays/*.toml)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--export", action="store_true",
                   help="export labelled face patches from the start (see [export] in config.toml)")
    p.set_defaults(func=run)


def daemon_overrides(args: argparse.Namespace, cfg: Config) -> list[str]:
    """The command-line options as config overrides, so a SIGHUP reload keeps them."""
    from emocam.daemon import source_overrides

    extra: list[str] = []
    if args.source:
        extra += source_overrides(args.source)
    sinks = list(cfg.sinks.enabled)
    if args.no_vcam and "virtualcam" in sinks:
        sinks.remove("virtualcam")
    for flag, name in ((args.record, "recorder"), (args.preview, "preview")):
        if flag and name not in sinks:
            sinks.append(name)
    if sinks != cfg.sinks.enabled:
        extra.append("sinks.enabled=[" + ", ".join(f'"{s}"' for s in sinks) + "]")
    if args.export:
        extra.append("export.enabled=true")
    if args.preset:
        extra.append(f'output.preset="{args.preset}"')
    return extra


def run(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.config import load_config
    from emocam.daemon import run_daemon

    overrides = args.overrides + daemon_overrides(args, cfg)
    cfg = load_config(args.config, overrides)
    return run_daemon(cfg, seconds=args.seconds, config_path=args.config, overrides=overrides)
