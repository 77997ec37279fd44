"""emocam devices: cameras to read from and virtual-camera (v4l2loopback) devices to publish to."""

from __future__ import annotations

import argparse

from emocam.config import Config


def register(sub, parents) -> None:
    p = sub.add_parser("devices", parents=parents, help="list cameras and virtual-camera devices",
                       description="Lists /dev/video* devices: cameras (physical) and v4l2loopback devices, "
                                   "which EmoCam can publish to as a virtual webcam.")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from emocam.cli import print_json
    from emocam.devices import list_devices

    devices = list_devices()
    cameras = [d for d in devices if not d.virtual]
    virtual = [d for d in devices if d.virtual]
    if args.json:
        print_json({"cameras": [d.to_json() for d in cameras], "virtual_cameras": [d.to_json() for d in virtual]})
        return 0
    print("cameras:")
    for d in cameras:
        print(f"  {d.label()}")
    if not cameras:
        print("  none (no physical /dev/video* device); `emocam run --source demo` needs no camera")
    print("virtual cameras (v4l2loopback):")
    for d in virtual:
        print(f"  {d.label()}")
    if not virtual:
        print("  none; create one: sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=EmoCam "
              "exclusive_caps=1")
    return 0
