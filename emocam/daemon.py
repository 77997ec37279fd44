"""Builds a pipeline from the configuration, runs it, publishes its status and reacts to signals."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from loguru import logger

from emocam.config import Config, load_config, toml_string
from emocam.control import Control, ControlState
from emocam.errors import ConfigError, EmoCamError
from emocam.export.exporter import attach_exporter
from emocam.obs.integration import ObsIntegration
from emocam.pipeline import Pipeline
from emocam.presets import load_presets
from emocam.session import new_session_dir
from emocam.sinks import SINKS, Sink, SinkError
from emocam.sources import SOURCES, Source
from emocam.tracker import Tracker


def default_status_file() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "emocam" if runtime else Path(f"/tmp/emocam-{os.getuid()}")
    return base / "status.json"


def status_file(cfg: Config) -> Path:
    return cfg.resolve(cfg.daemon.status_file) if cfg.daemon.status_file else default_status_file()


def source_overrides(spec: str) -> list[str]:
    """`--source` as a name (demo, camera), a camera (0, /dev/video2), a video file, an image folder or a URL."""
    if spec in SOURCES.names():
        return [f"source.name={spec}"]
    if spec.isdigit() or spec.startswith("/dev/"):
        return ["source.name=camera", f"source.camera.device={toml_string(spec)}"]
    if "://" in spec:
        return ["source.name=url", f"source.url.url={toml_string(spec)}"]
    path = Path(spec)
    if path.is_dir():
        return ["source.name=images", f"source.images.path={toml_string(str(path.resolve()))}"]
    if path.is_file():
        return ["source.name=video", f"source.video.path={toml_string(str(path.resolve()))}"]
    raise ConfigError(f"--source {spec!r}: not a source name ({', '.join(SOURCES.names())}), camera, file, "
                      "folder or URL")


def build_source(cfg: Config) -> Source:
    cls = SOURCES.get(cfg.source.name)
    options = cfg.source.options()
    path = getattr(options, "path", None)
    if path is not None and not Path(path).is_absolute():  # relative to config.toml, like every other path
        options = options.model_copy(update={"path": type(path)(cfg.resolve(Path(path)))})
    return cls(options)


def build_sinks(cfg: Config) -> list[Sink]:
    return [SINKS.get(name)(cfg.sinks.options(name)) for name in cfg.sinks.enabled]


def build_pipeline(cfg: Config, *, analyze: bool = True, session_dir: Path | None = None) -> Pipeline:
    from emocam.analyzer import FrameAnalyzer
    from emocam.backends import build_classifier, build_detector

    presets = load_presets(cfg.resolve(cfg.output.presets_dir))
    if cfg.output.preset not in presets:
        raise ConfigError(f"output.preset {cfg.output.preset!r} is not one of the presets: {', '.join(presets)}")
    analyzer = explainer = None
    if analyze:
        analyzer = FrameAnalyzer(build_detector(cfg), build_classifier(cfg), cfg.detector.max_side)
        if cfg.explain.enabled:
            from emocam.explain.explainer import Explainer

            explainer = Explainer(analyzer.classifier, cfg.explain)
            _classify_with_the_maps(analyzer.classifier)
    p = cfg.pipeline
    size = (cfg.output.width, cfg.output.height) if cfg.output.width and cfg.output.height else None
    return Pipeline(
        build_source(cfg), analyzer, build_sinks(cfg), presets, ControlState(Control(cfg.output.preset)),
        session_dir or new_session_dir(cfg.resolve(cfg.session.root)), output_size=size,
        detect_interval=p.detect_interval, tracker=Tracker(p.track_iou, p.track_max_age_s, p.smoothing,
                                                           p.box_smoothing),
        stale_after_s=p.stale_after_s, sink_on_error=cfg.sinks.on_error, explainer=explainer)


def _classify_with_the_maps(classifier) -> None:
    """With explain maps on, faces are classified by the eager model in the pass that makes their maps: a graph
    would never run, so it is dropped. A backend whose graph is its own network (repvgg-fer-int8), not a frozen
    copy of the model (cpu_graph_kind), gets its user told."""
    if classifier.graph is None:
        return
    if classifier.cpu_graph_kind is None:
        logger.warning(f"classifier {classifier.name}: explain maps are on, so faces are classified by its float "
                       "model in the pass that makes their maps; its own network runs with explain.enabled = false")
    classifier.graph = None


class StatusWriter:
    """Writes the pipeline's status as JSON a few times a second, atomically, for `emocam status`."""

    def __init__(self, pipeline: Pipeline, path: Path, period_s: float = 0.25):
        self.pipeline, self.path, self.period_s = pipeline, path, period_s
        self.sections: dict[str, Callable[[], dict]] = {}  # more top-level keys, e.g. "obs"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emocam-status", daemon=True)

    def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:  # status is a convenience: the video goes on without it
            logger.warning(f"status file {self.path} cannot be written ({exc.strerror or exc}): `emocam status` "
                           "will not see this daemon; set daemon.status_file to a writable path")
        self._thread.start()

    def write(self, state: str = "running") -> None:
        doc = {"pid": os.getpid(), "state": state, "updated": time.time(), **self.pipeline.status()}
        doc.update((name, section()) for name, section in self.sections.items())
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(self.path)
        except OSError as exc:  # status is a convenience: never let it stop the video
            logger.debug(f"status file not written: {exc}")

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.write()
            except Exception as exc:  # a status snapshot taken mid-change: the next one will do
                logger.debug(f"status not written: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(2)
        self.write("stopped")


def read_status(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(doc["pid"]), 0)
    except (OSError, KeyError, ValueError):
        doc["state"] = "stopped"
    return doc


def run_daemon(cfg: Config, *, seconds: float | None = None, config_path: Path | None = None,
               overrides: list[str] | None = None) -> int:
    """Run until the source ends, `seconds` pass, or SIGINT/SIGTERM; SIGHUP reloads config and presets."""
    pipeline = build_pipeline(cfg)
    obs = ObsIntegration(pipeline, cfg)  # checks [obs] against the presets before anything opens
    try:
        pipeline.start()
    except SinkError as exc:
        raise EmoCamError(str(exc)) from None
    logger.info(f"session folder: {pipeline.session_dir}")
    stop = threading.Event()
    reload_requested = threading.Event()

    def on_stop(signum, _frame):
        logger.info(f"{signal.Signals(signum).name}: stopping")
        stop.set()

    def on_hup(_signum, _frame):
        reload_requested.set()

    old = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
    deadline = None if seconds is None else time.monotonic() + seconds
    exporter = status = None
    try:  # from here on, whatever fails, the finally below finishes the recording and the export
        exporter = attach_exporter(pipeline, cfg)  # follows Control.exporting; None without an analyser
        status = StatusWriter(pipeline, status_file(cfg))
        status.sections["obs"] = obs.status
        if exporter is not None:
            status.sections["export"] = exporter.summary
        status.start()
        obs.start()  # OBS scenes and commands on its own thread; the recorder follows Control.recording
        while pipeline.running and not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if (asked := pipeline.stop_requested_by) is not None:
                logger.info(f"{asked}: stop requested, stopping")
                break
            if reload_requested.is_set():
                reload_requested.clear()
                cfg = _reload(pipeline, cfg, config_path, overrides)
            stop.wait(0.1)
    finally:
        obs.stop()  # first: no command may start the recorder while the pipeline closes
        pipeline.close()
        if exporter is not None:  # after the analysis thread ended: writes what is queued
            exporter.close()
        if status is not None:
            status.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    summary = pipeline.status()
    logger.info(f"stopped: {summary['frames_out']} frames published, {summary['analyses']} analyses; "
                f"session in {pipeline.session_dir}")
    if pipeline.error:
        raise EmoCamError(pipeline.error)
    return 0


def _reload(pipeline: Pipeline, old: Config, config_path: Path | None, overrides: list[str] | None) -> Config:
    """Presets, the default preset and tracking settings change live; source, models and sinks need a restart."""
    try:
        cfg = load_config(config_path, overrides)
        presets = load_presets(cfg.resolve(cfg.output.presets_dir))
        if cfg.output.preset not in presets:
            raise ConfigError(f"output.preset {cfg.output.preset!r} is not one of the presets: {', '.join(presets)}")
    except EmoCamError as exc:
        logger.error(f"SIGHUP: reload failed, keeping the running configuration: {exc}")
        return old
    pipeline.presets = presets
    current = pipeline.control.get().preset
    if cfg.output.preset != old.output.preset or current not in presets:
        pipeline.control.update(preset=cfg.output.preset)
    p = cfg.pipeline
    pipeline.detect_interval, pipeline.stale_after_s = p.detect_interval, p.stale_after_s
    t = pipeline.tracker
    t.iou_threshold, t.max_age_s, t.alpha, t.box_alpha = p.track_iou, p.track_max_age_s, p.smoothing, p.box_smoothing
    restart = [k for k in ("source", "detector", "classifier", "sinks", "runtime", "obs", "explain")
               if getattr(cfg, k).model_dump() != getattr(old, k).model_dump()]
    if restart:
        logger.warning(f"SIGHUP: changes to [{'], ['.join(restart)}] take effect after a restart")
    logger.info(f"SIGHUP: reloaded {len(presets)} presets ({', '.join(presets)})")
    return cfg
