"""Keeps EmoCam connected to OBS on one thread of its own, so the video never waits for OBS.

obsws-python's event thread only queues what arrives; this thread does everything else: it connects with
exponential backoff, reads the program scene on every (re)connect, applies scene changes, commands and filter
toggles, acknowledges commands, and notices a dead connection (the event thread ends silently when OBS goes
away, and requests then fail) to start over.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from loguru import logger
from obsws_python import Subs
from obsws_python.error import OBSSDKRequestError

from emocam.obs import client as obsclient
from emocam.obs.client import ObsAuthError, ObsUnavailable
from emocam.obs.commands import ACK_KEY, COMMAND_KEY, CommandError, Router
from emocam.obs.config import ObsConfig
from emocam.pipeline import Backoff

SUBSCRIPTIONS = Subs.GENERAL | Subs.SCENES | Subs.FILTERS  # CustomEvent + ExitStarted, scene changes, filters
HEALTH_CHECK_S = 0.2  # how often the event thread is looked at
KEEPALIVE_S = 10.0  # a request this often catches a peer that vanished without closing the socket


class ObsSupervisor:
    def __init__(self, cfg: ObsConfig, router: Router):
        self.cfg = cfg
        self.router = router
        self._events: queue.Queue[tuple] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emocam-obs", daemon=True)
        self._req = None
        self._evt = None
        self._lock = threading.Lock()  # guards the status fields below
        self._state = "starting"
        self._scene: str | None = None
        self._error: str | None = None
        self._connected_at: float | None = None
        self._connects = 0
        self._commands = 0
        self._rejected = 0
        self._obs_version: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(self.cfg.timeout_s + 2 if timeout is None else timeout)
        self._set(state="stopped")

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"enabled": True, "address": self.cfg.address, "state": self._state, "scene": self._scene,
                    "obs_version": self._obs_version, "last_error": self._error,
                    "connected_for_s": round(time.monotonic() - self._connected_at, 1) if self._connected_at else None,
                    "connects": self._connects, "commands_applied": self._commands,
                    "commands_rejected": self._rejected}

    def _set(self, **fields: Any) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self, f"_{key}", value)

    # ---- the thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = Backoff(0.5, self.cfg.retry_max_s)
        reported: str | None = None  # the last failure logged: the same one again is only logged at DEBUG
        while not self._stop.is_set():
            try:
                self._connect()
            except ObsUnavailable as exc:
                auth = isinstance(exc, ObsAuthError)
                delay = self.cfg.retry_max_s if auth else backoff.next_delay()
                self._set(state="auth_failed" if auth else "unreachable", error=str(exc))
                if reported != type(exc).__name__:
                    if auth:
                        logger.error(f"{exc}; retrying every {delay:.0f} s")
                    else:
                        logger.warning(f"{exc}; retrying in the background")
                    reported = type(exc).__name__
                else:
                    logger.debug(f"{exc}; next try in {delay:.1f} s")
                self._stop.wait(delay)
                continue
            except Exception as exc:  # OBS answered something unexpected: in full once, then briefly, back off
                described = obsclient.describe(exc, self.cfg.secret())
                self._set(state="unreachable", error=described)
                if reported != described:
                    logger.error(f"OBS: connecting failed unexpectedly:\n{obsclient.unexpected(exc, self.cfg.secret())}")
                    reported = described
                else:
                    logger.debug(f"OBS: connecting failed again: {described}")
                self._stop.wait(backoff.next_delay())
                continue
            reported = None
            backoff.attempts = 0
            try:
                self._serve()
            except ObsUnavailable as exc:
                self._set(error=str(exc))
                if not self._stop.is_set():
                    logger.warning(f"{exc}; reconnecting")
            except Exception as exc:  # a bug must not end OBS control for the rest of the session
                self._set(error=obsclient.describe(exc, self.cfg.secret()))
                logger.error(f"OBS: unexpected error, reconnecting:\n{obsclient.unexpected(exc, self.cfg.secret())}")
            finally:
                self._disconnect()
            if not self._stop.is_set():
                self._stop.wait(backoff.next_delay())

    def _connect(self) -> None:
        self._set(state="connecting")
        while not self._events.empty():  # events of a dead connection are stale; the scene is read anew below
            self._events.get_nowait()
        # Events first, so that no scene change falls between reading the scene and listening for changes.
        self._evt = obsclient.open_events(self.cfg, SUBSCRIPTIONS, [self.on_current_program_scene_changed,
                                                                  self.on_custom_event, self.on_exit_started,
                                                                  self.on_source_filter_enable_state_changed])
        try:
            self._req = obsclient.open_requests(self.cfg)
            version = self._request("GetVersion")
            scene = self._request("GetCurrentProgramScene").get("currentProgramSceneName")
            filters = self._mapped_filter_states()
        except BaseException:
            self._disconnect()
            raise
        self._set(state="connected", error=None, connected_at=time.monotonic(), connects=self._connects + 1,
                  obs_version=version.get("obsVersion"))
        logger.info(f"OBS: connected to {self.cfg.address} (OBS {version.get('obsVersion')}, obs-websocket "
                    f"{version.get('obsWebSocketVersion')}); program scene {scene!r}")
        self._apply_scene(scene)
        for source, filter_name, enabled in filters:
            self._apply_filter(source, filter_name, enabled)

    def _mapped_filter_states(self) -> list[tuple[str, str, bool]]:
        """(source, filter, enabled) of every filter [obs.filters] maps, on every scene and input: they may have
        been switched while EmoCam was not connected, and no event will say so."""
        if not self.cfg.filters:
            return []
        sources = [s["sceneName"] for s in self._request("GetSceneList").get("scenes", [])]
        sources += [i["inputName"] for i in self._request("GetInputList").get("inputs", [])]
        found = []
        for source in sources:
            try:
                filters = self._request("GetSourceFilterList", {"sourceName": source}).get("filters", [])
            except OBSSDKRequestError:  # removed since the list was read
                continue
            for f in filters:
                if f.get("filterName") in self.cfg.filters:
                    found.append((source, f["filterName"], bool(f.get("filterEnabled"))))
        return found

    def _disconnect(self) -> None:
        obsclient.close_quietly(self._evt)
        obsclient.close_quietly(self._req)
        self._evt = self._req = None
        if self._state == "connected":
            self._set(state="disconnected", connected_at=None)

    def _serve(self) -> None:
        last_request = time.monotonic()
        while not self._stop.is_set():
            try:
                item = self._events.get(timeout=HEALTH_CHECK_S)
            except queue.Empty:
                if not obsclient.event_thread_alive(self._evt):
                    raise ObsUnavailable(f"connection to OBS at {self.cfg.address} lost")
                if time.monotonic() - last_request > KEEPALIVE_S:
                    self._request("GetVersion")
                    last_request = time.monotonic()
                continue
            kind, *args = item
            if kind == "scene":
                self._apply_scene(*args)
            elif kind == "command":
                self._apply_command(*args)
                last_request = time.monotonic()
            elif kind == "filter":
                self._apply_filter(*args)
            elif kind == "exit":
                logger.info("OBS: OBS is shutting down")

    def _request(self, name: str, data: dict | None = None) -> dict:
        return obsclient.request(self._req, self.cfg, name, data)

    # ---- what OBS asks -----------------------------------------------------------------------------------------
    def _apply_scene(self, scene: str | None) -> None:
        if scene is None:
            return
        self._set(scene=scene)
        before = self.router.control.get().preset
        preset = self.router.on_scene(scene)
        if preset is None:
            logger.debug(f"OBS: scene {scene!r} selects no preset; keeping {before!r}")
        elif preset != before:
            logger.info(f"OBS: scene {scene!r} -> preset {preset!r}")

    def _apply_command(self, command: Any) -> None:
        command_id = command.get("id") if isinstance(command, dict) else None
        try:
            ack = self.router.apply(command)
        except Exception as exc:  # invalid, or a bug in what it triggered: either way the next command still works
            self._set(rejected=self._rejected + 1)
            if isinstance(exc, CommandError):
                logger.warning(f"OBS: ignored command {command!r}: {exc}")
            else:
                logger.error(f"OBS: command {command!r} failed:\n{obsclient.unexpected(exc, self.cfg.secret())}")
            ack = {"ok": False, "error": str(exc), "command": command}
            if command_id is not None:
                ack["id"] = command_id
        else:
            self._set(commands=self._commands + 1)
            logger.info(f"OBS: command {ack['applied']}")
            undone = [key for key, state in (("record", "recording"), ("export", "exporting"))
                      if key in ack["applied"] and ack["state"][state] != (ack["applied"][key] == "start")]
            if undone:  # read back: the recorder or the exporter could not start (the daemon's log says why)
                ack["ok"] = False
                ack["error"] = f"{' and '.join(undone)} could not start; see the EmoCam daemon's log"
            elif "record" in ack["applied"] and self.cfg.obs_recording:
                ack["obs_recording"] = self._obs_record(ack["applied"]["record"])
        self._request("BroadcastCustomEvent", {"eventData": {ACK_KEY: ack}})

    def _obs_record(self, action: str) -> str:
        name = "StartRecord" if action == "start" else "StopRecord"
        try:
            self._request(name)
        except OBSSDKRequestError as exc:  # e.g. 500 "already active": not worth more than a warning
            logger.warning(f"OBS: {name} refused: {exc}")
            return f"refused: {exc}"
        return "started" if action == "start" else "stopped"

    def _apply_filter(self, source: str, filter_name: str, enabled: bool) -> None:
        try:
            annotator = self.router.on_filter(filter_name, enabled)
        except CommandError as exc:
            logger.warning(f"OBS: filter {filter_name!r}: {exc}")
            return
        if annotator:
            logger.info(f"OBS: filter {filter_name!r} on {source!r} {'shows' if enabled else 'hides'} {annotator!r}")

    # ---- obsws-python callbacks (its event thread; matched by name; an exception would end that thread) -------
    def on_current_program_scene_changed(self, data) -> None:
        self._events.put(("scene", getattr(data, "scene_name", None)))

    def on_custom_event(self, data) -> None:
        command = getattr(data, COMMAND_KEY, None)
        if command is not None or hasattr(data, COMMAND_KEY):  # other programs' events and our acks: not ours
            self._events.put(("command", command))

    def on_source_filter_enable_state_changed(self, data) -> None:
        self._events.put(("filter", getattr(data, "source_name", None), getattr(data, "filter_name", None),
                          bool(getattr(data, "filter_enabled", False))))

    def on_exit_started(self, data) -> None:
        self._events.put(("exit",))
