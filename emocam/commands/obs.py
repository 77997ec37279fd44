"""`emocam obs setup|check`: prepare OBS Studio for EmoCam, or test the connection to it."""

from __future__ import annotations

import argparse


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser("obs", parents=parents, help="set up OBS Studio scenes, test the connection",
                                   description=__doc__)
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="obs_command", metavar="ACTION", required=True)
    setup = sub.add_parser(
        "setup", parents=parents, help='create a scene "EmoCam: <preset>" per preset showing the EmoCam camera',
        description='Creates in the running OBS (address and password from [obs]) a scene "EmoCam: <preset>" for '
                    "each overlay preset, each showing the EmoCam virtual camera through one Video Capture Device "
                    "source. Switching to such a scene selects its preset. Only creates what is missing.")
    setup.add_argument("--device", help="the virtual camera device OBS should read (default: [sinks.virtualcam] "
                                        "device, else /dev/video10)")
    setup.add_argument("--json", action="store_true", help="print JSON to stdout")
    check = sub.add_parser("check", parents=parents, help="connect to OBS and show what its program scene selects",
                           description="Exit status 0 when OBS answers with the configured password.")
    check.add_argument("--json", action="store_true", help="print JSON to stdout")


def _presets(cfg):
    from emocam.presets import load_presets

    return load_presets(cfg.resolve(cfg.output.presets_dir))


def run_setup(args: argparse.Namespace, cfg) -> int:
    from emocam.cli import print_json
    from emocam.obs.client import close_quietly, open_requests
    from emocam.obs.setup import DEFAULT_DEVICE, ObsSetup

    presets = list(_presets(cfg))
    device = args.device or cfg.sinks.options("virtualcam").device or DEFAULT_DEVICE
    req = open_requests(cfg.obs)
    try:
        changes = ObsSetup(req, cfg.obs).run(presets, device)
    finally:
        close_quietly(req)
    if args.json:
        print_json({"address": cfg.obs.address, "device": device, "presets": presets, "changes": changes})
    else:
        for line in changes:
            print(line)
        print(f"{len(changes)} change(s); {len(presets)} EmoCam scenes in OBS at {cfg.obs.address}"
              if changes else f"OBS at {cfg.obs.address} was already set up ({len(presets)} EmoCam scenes)")
    return 0


def run_check(args: argparse.Namespace, cfg) -> int:
    from emocam.cli import print_json
    from emocam.obs.client import close_quietly, open_requests, request
    from emocam.obs.commands import preset_for_scene

    req = open_requests(cfg.obs)
    try:
        version = request(req, cfg.obs, "GetVersion")
        scene = request(req, cfg.obs, "GetCurrentProgramScene").get("currentProgramSceneName")
    finally:
        close_quietly(req)
    preset = preset_for_scene(scene, cfg.obs, _presets(cfg), cfg.output.preset)
    doc = {"address": cfg.obs.address, "obs_version": version.get("obsVersion"),
           "websocket_version": version.get("obsWebSocketVersion"), "scene": scene, "selects_preset": preset,
           "daemon_enabled": cfg.obs.enabled}
    if args.json:
        print_json(doc)
    else:
        print(f"OBS {doc['obs_version']} (obs-websocket {doc['websocket_version']}) at {doc['address']}")
        print(f"program scene {scene!r} -> " + (f"preset {preset!r}" if preset else "keeps the current preset"))
        if not cfg.obs.enabled:
            print("the daemon does not connect to OBS: set [obs] enabled = true")
    return 0


def run(args: argparse.Namespace, cfg) -> int:
    return {"setup": run_setup, "check": run_check}[args.obs_command](args, cfg)
