"""A real OBS Studio (obs-websocket 5) running headless under Xvfb, for integration tests.

Everything lives in a throwaway folder: HOME and XDG dirs with a profile, a scene collection and the websocket
settings written up front (OBS 29 reads them from global.ini), so OBS starts without any dialog. Only the
processes started here are ever signalled. ../shared/notes/obs-headless.md explains each setting.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PROFILE, COLLECTION = "EmoCamTest", "EmoCamTest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def obs_installed() -> str | None:
    """None when OBS and Xvfb are there, else what is missing."""
    missing = [name for name in ("obs", "Xvfb") if shutil.which(name) is None]
    return f"{' and '.join(missing)} not installed (apt-get install obs-studio xvfb)" if missing else None


def _scene(name: str) -> dict:
    return {"id": "scene", "versioned_id": "scene", "name": name, "uuid": "",
            "settings": {"items": [], "id_counter": 0, "custom_size": False}}


def _alive(proc: subprocess.Popen | None) -> bool:
    """True while the process runs (a zombie counts as ended)."""
    if proc is None or proc.poll() is not None:
        return False
    try:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def end_process(proc: subprocess.Popen | None, grace_s: tuple[float, float] = (5.0, 3.0)) -> None:
    """SIGINT, then SIGTERM, then SIGKILL: each only if the process is still there."""
    if proc is None:
        return
    for sig, wait_s in ((signal.SIGINT, grace_s[0]), (signal.SIGTERM, grace_s[1]), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def start_xvfb(log_path: Path, timeout_s: float = 20.0) -> tuple[subprocess.Popen, str]:
    """An Xvfb server on a free display: (its process, the DISPLAY value). Stop it with end_process(proc)."""
    read_fd, write_fd = os.pipe()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:  # Xvfb writes the display number once it accepts clients
        ready, _, _ = select.select([pipe], [], [], timeout_s)
        number = pipe.readline().strip() if ready else ""
    if not number:
        end_process(proc)
        raise RuntimeError(f"Xvfb did not start; see {log_path}")
    return proc, f":{number}"


class ObsServer:
    def __init__(self, root: Path, password: str, scenes: list[str], current: str, port: int | None = None,
                 size: tuple[int, int] = (640, 360)):
        self.root = root
        self.password = password
        self.scenes = scenes
        self.port = port or free_port()
        self.size = size
        self.home = root / "home"
        self.config_dir = self.home / ".config"
        self.runtime_dir = root / "run"
        self.record_dir = root / "recordings"
        self.log_path = root / "obs.log"
        self.xvfb: subprocess.Popen | None = None
        self.obs: subprocess.Popen | None = None
        self.display: str | None = None
        self.starts = 0
        self._write_config(current)

    # ---- configuration -------------------------------------------------------------------------------------
    @property
    def collection_file(self) -> Path:
        return self.config_dir / "obs-studio" / "basic" / "scenes" / f"{COLLECTION}.json"

    def _write_config(self, current: str) -> None:
        obs_dir = self.config_dir / "obs-studio"
        (obs_dir / "basic" / "profiles" / PROFILE).mkdir(parents=True, exist_ok=True)
        self.collection_file.parent.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        (obs_dir / "global.ini").write_text(
            "[General]\nFirstRun=true\nConfirmOnExit=false\nEnableAutoUpdates=false\n\n"
            "[BasicWindow]\nPreviewEnabled=false\nSysTrayEnabled=false\n\n"
            f"[Basic]\nProfile={PROFILE}\nProfileDir={PROFILE}\n"
            f"SceneCollection={COLLECTION}\nSceneCollectionFile={COLLECTION}\n\n"
            "[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\n"
            f"ServerPort={self.port}\nAlertsEnabled=false\nAuthRequired=true\nServerPassword={self.password}\n")
        w, h = self.size
        (obs_dir / "basic" / "profiles" / PROFILE / "basic.ini").write_text(
            f"[General]\nName={PROFILE}\n\n"
            f"[Video]\nBaseCX={w}\nBaseCY={h}\nOutputCX={w}\nOutputCY={h}\nFPSType=1\nFPSInt=30\n\n"
            "[Output]\nMode=Simple\n\n"
            f"[SimpleOutput]\nFilePath={self.record_dir}\nRecFormat=mkv\nRecEncoder=x264\n")
        self.set_saved_scene(current)

    def set_saved_scene(self, current: str) -> None:
        """Make the next start open in scene `current` (OBS not running). The first time, write the collection:
        our scenes, empty, and a Cut transition so that scene changes are immediate."""
        path = self.collection_file
        if path.is_file():
            collection = json.loads(path.read_text())
        else:
            collection = {"name": COLLECTION, "current_transition": "Cut", "transition_duration": 0,
                          "scene_order": [{"name": s} for s in self.scenes],
                          "sources": [_scene(s) for s in self.scenes], "groups": [], "transitions": []}
        collection.update(current_scene=current, current_program_scene=current)
        path.write_text(json.dumps(collection))

    # ---- processes -----------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> float:
        """Start Xvfb (once) and OBS; returns when the websocket port accepts connections (seconds taken)."""
        t0 = time.monotonic()
        if not _alive(self.xvfb):
            self.xvfb, self.display = start_xvfb(self.root / "xvfb.log", timeout_s)
        # OpenCV's import points Qt and the loader at its own bundled copies: OBS must not inherit those.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("QT_") and k != "LD_LIBRARY_PATH"}
        env = {**inherited, "HOME": str(self.home), "XDG_CONFIG_HOME": str(self.config_dir),
               "XDG_RUNTIME_DIR": str(self.runtime_dir), "DISPLAY": self.display, "QT_QPA_PLATFORM": "xcb",
               "LIBGL_ALWAYS_SOFTWARE": "1"}
        with open(self.log_path, "a") as log:
            self.obs = subprocess.Popen(
                ["obs", "--multi", "--disable-missing-files-check", "--profile", PROFILE, "--collection",
                 COLLECTION], cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # a Ctrl-C in the terminal running pytest is ours to forward, not OBS's
        self.starts += 1
        while time.monotonic() - t0 < timeout_s:
            if not _alive(self.obs):
                raise RuntimeError(f"OBS exited with {self.obs.poll()} while starting; see {self.log_path}")
            if self.port_open():
                return time.monotonic() - t0
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"OBS did not open port {self.port} within {timeout_s:.0f} s; see {self.log_path}")

    def port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop OBS gracefully (SIGINT, then SIGTERM, then SIGKILL)."""
        end_process(self.obs)
        self.obs = None

    def kill(self) -> None:
        """What a crash looks like: SIGKILL, no goodbye on the websocket."""
        if self.obs is not None and self.obs.poll() is None:
            self.obs.kill()
            self.obs.wait(10)
        self.obs = None

    def close(self) -> None:
        self.stop()
        end_process(self.xvfb, (2.0, 2.0))
        self.xvfb = None

    def client(self, timeout: float = 5.0):
        import obsws_python as obs

        return obs.ReqClient(host="127.0.0.1", port=self.port, password=self.password, timeout=timeout)
