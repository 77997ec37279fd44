"""Video4Linux cameras on this machine: listing them and turning an index, path or name into a device path.

Everything comes from sysfs (/sys/class/video4linux/videoN/{name,index,device}), so listing never opens a
device and never disturbs a camera another program is using. $EMOCAM_SYSFS and $EMOCAM_DEV point at another
/sys and /dev (tests; a container with the host's /sys mounted elsewhere).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


class DeviceNotFound(LookupError):
    """No device matches what was asked for; the message says what was asked."""


@dataclass(frozen=True)
class VideoDevice:
    path: str  # /dev/videoN
    number: int  # N
    name: str  # what the driver calls it, e.g. "Logitech BRIO"
    # The node's position within its device: a UVC camera shows up as two nodes, 0 for frames, 1 for metadata.
    node_index: int
    # No physical parent: a v4l2loopback device, such as a virtual webcam (possibly EmoCam's own output).
    virtual: bool
    # The /dev node exists here; sysfs alone can list devices that a container was not given.
    present: bool

    @property
    def is_capture_node(self) -> bool:
        return self.node_index == 0

    def label(self) -> str:
        notes = []
        if self.virtual:
            notes.append("virtual")
        if not self.is_capture_node:
            notes.append("metadata node")
        if not self.present:
            notes.append("no device node here")
        suffix = f" [{', '.join(notes)}]" if notes else ""
        return f"{self.path} {self.name!r}{suffix}"

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "number": self.number,
            "name": self.name,
            "node_index": self.node_index,
            "virtual": self.virtual,
            "present": self.present,
        }


def sysfs_root() -> Path:
    return Path(os.environ.get("EMOCAM_SYSFS", "/sys"))


def dev_root() -> Path:
    return Path(os.environ.get("EMOCAM_DEV", "/dev"))


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return default


def list_devices(sysfs: Path | None = None, dev: Path | None = None) -> list[VideoDevice]:
    """Every /dev/videoN, in number order: those sysfs knows, plus /dev nodes it does not (sysfs not mounted)."""
    v4l = (sysfs or sysfs_root()) / "class" / "video4linux"
    dev = dev or dev_root()
    found: dict[int, VideoDevice] = {}
    if v4l.is_dir():
        for entry in v4l.iterdir():
            match = re.fullmatch(r"video(\d+)", entry.name)
            if not match:
                continue
            number = int(match.group(1))
            index = _read(entry / "index", "0")
            found[number] = VideoDevice(
                path=str(dev / entry.name),
                number=number,
                name=_read(entry / "name", "unknown"),
                node_index=int(index) if index.isdigit() else 0,
                virtual=not (entry / "device").exists(),
                present=(dev / entry.name).exists(),
            )
    for node in dev.glob("video*"):
        match = re.fullmatch(r"video(\d+)", node.name)
        if match and int(match.group(1)) not in found:
            number = int(match.group(1))
            found[number] = VideoDevice(str(node), number, "unknown (no sysfs entry)", 0, False, True)
    return [found[n] for n in sorted(found)]


def describe_devices(devices: list[VideoDevice]) -> str:
    """One line for error messages and logs: what is there, or what to check when nothing is."""
    if not devices:
        return (
            "no cameras found (no /dev/video*): check that the camera is plugged in (lsusb), that its driver "
            "loaded (dmesg | grep -i uvc), and in a container that the device is passed in (--device /dev/video0); "
            "source 'demo' or 'video' need no camera"
        )
    return "cameras found: " + "; ".join(d.label() for d in devices)


def resolve_device(spec: int | str, devices: list[VideoDevice], dev: Path | None = None) -> str:
    """The /dev path for an index (0 or "0"), a path (/dev/video2, /dev/v4l/by-id/...) or a device name.

    A name matches exactly (case-insensitive) first, then as a substring; among matches the capture node
    (node index 0) with the lowest number wins, so "BRIO" never picks the BRIO's metadata node.
    """
    text = str(spec).strip()
    if text.isdigit():
        return str((dev or dev_root()) / f"video{int(text)}")
    if text.startswith("/"):
        return text
    wanted = text.casefold()
    matches = [d for d in devices if d.name.casefold() == wanted] or [d for d in devices if wanted in d.name.casefold()]
    if not matches:
        raise DeviceNotFound(f"no camera named {text!r}")
    return min(matches, key=lambda d: (not d.is_capture_node, d.number)).path


def find_device(path: str, devices: list[VideoDevice]) -> VideoDevice | None:
    """The listed device behind a path, following symlinks such as /dev/v4l/by-id/..."""
    real = os.path.realpath(path)
    for device in devices:
        if device.path in (path, real):
            return device
    return None
