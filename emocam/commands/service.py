"""emocam service install|uninstall|show: a systemd user unit that keeps the daemon running in the background."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from emocam.config import Config
from emocam.errors import EmoCamError
from emocam.obs.config import PASSWORD_ENV

UNIT_NAME = "emocam.service"


def register(sub, parents) -> None:
    p = sub.add_parser("service", parents=parents, help="install the daemon as a systemd user service",
                       description="install writes ~/.config/systemd/user/emocam.service running `emocam run` with "
                                   "this config file, then enables and starts it when systemctl is available.")
    p.add_argument("action", choices=["install", "uninstall", "show"])
    p.add_argument("--unit-dir", type=Path, default=Path.home() / ".config/systemd/user",
                   help="where the unit goes (default: %(default)s)")
    p.add_argument("--no-start", action="store_true", help="write the unit only")
    p.set_defaults(func=run)


ENV_FILE = "%h/.config/emocam/env"  # optional; systemd expands %h to the home folder
SECRET_KEYS = ("obs.password",)  # never written into the unit: it is world-readable and shows in `systemctl cat`


def _is_secret(override: str) -> bool:
    return override.partition("=")[0].strip() in SECRET_KEYS


def unit_text(cfg: Config, overrides: list[str] = ()) -> str:
    """The unit: `emocam run` with this config file and these --set overrides (the OBS password excepted: it goes
    in the environment file, as EMOCAM_OBS_PASSWORD)."""
    cmd = [sys.executable, "-m", "emocam"]
    if cfg.config_file:
        cmd += ["--config", str(cfg.config_file)]
    for override in overrides:
        if not _is_secret(override):
            cmd += ["--set", override]
    cmd += ["run"]
    environment = "".join(f"Environment={_systemd(shlex.quote(f'{key}={os.environ[key]}'))}\n"
                          for key in ("EMOCAM_MODELS", "EMOCAM_DATA") if key in os.environ)
    return f"""[Unit]
Description=EmoCam: annotated virtual webcam
After=graphical-session.target

[Service]
Type=simple
WorkingDirectory={_systemd(str(cfg.base_dir))}
{environment}EnvironmentFile=-{ENV_FILE}
ExecStart={_systemd_command(shlex.join(cmd))}
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGTERM
TimeoutStopSec=20
Restart=on-failure
RestartSec=5

[Install]
WantedBy=default.target
"""


def _systemd(text: str) -> str:
    # systemd reads % as the start of a specifier (%h, %u...), in paths too
    return text.replace("%", "%%")


def _systemd_command(text: str) -> str:
    # ...and in a command line $ as the start of a variable
    return _systemd(text).replace("$", "$$")


def run(args: argparse.Namespace, cfg: Config) -> int:
    path = args.unit_dir / UNIT_NAME
    if args.action == "show":
        print(unit_text(cfg, args.overrides), end="")
        return 0
    systemctl = shutil.which("systemctl") if not args.no_start else None
    if args.action == "install":
        try:
            args.unit_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(unit_text(cfg, args.overrides))
        except OSError as exc:
            raise EmoCamError(f"could not write {path}: {exc.strerror}") from None
        print(f"wrote {path}")
        if any(map(_is_secret, args.overrides)) or cfg.obs.enabled:
            print(f"the OBS password is not in the unit: put {PASSWORD_ENV}=... in {ENV_FILE.replace('%h', '~')} "
                  "(chmod 600)")
        if systemctl:
            _systemctl(systemctl, "daemon-reload")
            _systemctl(systemctl, "enable", "--now", UNIT_NAME)
            print("enabled and started; logs: journalctl --user -u emocam -f")
        else:
            print("start it with: systemctl --user daemon-reload && systemctl --user enable --now emocam")
        return 0
    if systemctl:
        _systemctl(systemctl, "disable", "--now", UNIT_NAME, check=False)
    path.unlink(missing_ok=True)
    print(f"removed {path}")
    return 0


def _systemctl(exe: str, *argv: str, check: bool = True) -> None:
    result = subprocess.run([exe, "--user", *argv], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise EmoCamError(f"systemctl --user {' '.join(argv)} failed: {result.stderr.strip() or result.returncode}")
