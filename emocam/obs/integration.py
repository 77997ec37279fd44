"""What the daemon adds for OBS: the supervisor (when [obs] enabled) and the recorder following Control.recording."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger

from emocam.control import Control
from emocam.obs.commands import Router, check_config
from emocam.render import ANNOTATORS
from emocam.sinks import SINKS, SinkError

if TYPE_CHECKING:
    from emocam.config import Config
    from emocam.pipeline import Pipeline

RECORDER = "recorder"


class RecorderSwitch:
    """Starts and stops the recorder sink when Control.recording changes (from OBS or anyone else)."""

    def __init__(self, pipeline: Pipeline, cfg: Config):
        self.pipeline = pipeline
        self.cfg = cfg

    def __call__(self, old: Control, new: Control) -> None:
        if new.recording == old.recording:
            return
        running = any(s.name == RECORDER for s in self.pipeline.sinks)
        if new.recording and not running:
            sink = SINKS.get(RECORDER)(self.cfg.sinks.options(RECORDER))
            try:
                self.pipeline.add_sink(sink)
            except (SinkError, OSError) as exc:  # e.g. the session folder cannot be created
                logger.error(f"recording could not start: {exc}")
                self.pipeline.control.update(recording=False)
        elif not new.recording and running:
            self.pipeline.remove_sink(RECORDER)
            logger.info("recording stopped")


class ObsIntegration:
    """Construct before pipeline.start() (it checks [obs] against the presets), start() after, stop() first."""

    def __init__(self, pipeline: Pipeline, cfg: Config):
        from emocam.obs.supervisor import ObsSupervisor

        self.pipeline = pipeline
        self.cfg = cfg.obs
        check_config(self.cfg, pipeline.presets, ANNOTATORS.names())
        self.router = Router(pipeline.control, self.cfg, lambda: pipeline.presets, ANNOTATORS.names(),
                             cfg.output.preset)
        self.supervisor = ObsSupervisor(self.cfg, self.router) if self.cfg.enabled else None
        self._recorder_switch = RecorderSwitch(pipeline, cfg)

    def start(self) -> None:
        control = self.pipeline.control
        if any(s.name == RECORDER for s in self.pipeline.sinks) and not control.get().recording:
            control.update(recording=True)  # started with --record: a "record stop" command may end it
        control.subscribe(self._recorder_switch)
        if self.supervisor:
            self.supervisor.start()

    def stop(self) -> None:
        if self.supervisor:
            self.supervisor.stop()

    def status(self) -> dict[str, Any]:
        return self.supervisor.status() if self.supervisor else {"enabled": False, "state": "disabled"}
