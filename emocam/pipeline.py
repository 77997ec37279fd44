"""The live pipeline: capture -> analyse -> render -> publish, in three threads joined by latest-value mailboxes.

Output follows the source's pace whatever inference costs: every captured frame is rendered with the most
recent analysis, and the analyser always works on the newest frame, skipping the ones it had no time for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

import cv2
import numpy as np
from loguru import logger

from emocam.analyzer import FrameAnalyzer
from emocam.control import ControlState
from emocam.mailbox import Mailbox
from emocam.presets import Preset
from emocam.render.base import RenderInfo, placement
from emocam.sinks import OutputFrame, Sink, SinkContext, SinkError
from emocam.sources import Frame, Source, SourceInfo, SourceLost, SourceUnavailable
from emocam.tracker import Tracker
from emocam.types import Analysis

AnalysisHook = Callable[[Frame, Analysis], None]


class RateMeter:
    """Events per second over a sliding window; also keeps recent durations for percentiles."""

    def __init__(self, window_s: float = 2.0, keep: int = 600):
        self.window_s = window_s
        self._times: deque[float] = deque()
        self.values: deque[float] = deque(maxlen=keep)
        self.count = 0
        self._lock = threading.Lock()

    def tick(self, now: float, value: float | None = None) -> None:
        with self._lock:
            self._times.append(now)
            self.count += 1
            if value is not None:
                self.values.append(value)
            while self._times and now - self._times[0] > self.window_s:
                self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            times = [t for t in self._times if now - t <= self.window_s]
        if len(times) < 2:
            return 0.0
        span = max(now - times[0], times[-1] - times[0])
        return (len(times) - 1) / span if span > 0 else 0.0

    def percentile(self, q: float) -> float:
        with self._lock:
            values = list(self.values)
        return float(np.percentile(values, q)) if values else 0.0


def _ms_percentiles(meter: RateMeter) -> dict:
    """p50 and p95 of a meter's recent durations, in ms."""
    return {"p50": round(1000 * meter.percentile(50), 2), "p95": round(1000 * meter.percentile(95), 2)}


@dataclass
class Backoff:
    first_s: float = 0.5
    max_s: float = 10.0
    attempts: int = 0

    def next_delay(self) -> float:
        self.attempts += 1
        return min(self.max_s, self.first_s * 2 ** (self.attempts - 1))


def lost_frame(last: np.ndarray | None, size: tuple[int, int], text: str) -> np.ndarray:
    w, h = size
    image = (last // 3) if last is not None and last.shape[:2] == (h, w) else np.full((h, w, 3), 24, np.uint8)
    scale = h / 720
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0 * scale, max(1, round(2 * scale)))
    cv2.putText(image, text, ((w - tw) // 2, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0 * scale,
                (80, 200, 255), max(1, round(2 * scale)), cv2.LINE_AA)
    return image


def _is_bgr_frame(image) -> bool:
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and image.shape[0] > 0 and image.shape[1] > 0)


def _describe(image) -> str:
    if isinstance(image, np.ndarray):
        return f"{image.dtype} array of shape {image.shape}"
    return type(image).__name__


REOPEN_GRACE_S = 15.0  # at stop, how long a reopen in flight may still take (a stream's open timeout is 10 s)


class _Reopen:
    """source.open() on its own thread; `done`, then `info` or `error`."""

    def __init__(self, source: Source):
        self.info: SourceInfo | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(source,), name="emocam-reopen", daemon=True)
        self._thread.start()

    def _run(self, source: Source) -> None:
        try:
            self.info = source.open()
        except BaseException as exc:  # handed to the capture thread, which decides
            self.error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)


class Pipeline:
    def __init__(self, source: Source, analyzer: FrameAnalyzer | None, sinks: list[Sink],
                 presets: dict[str, Preset], control: ControlState, session_dir, *,
                 output_size: tuple[int, int] | None = None, detect_interval: int = 1,
                 tracker: Tracker | None = None, stale_after_s: float = 1.0, sink_on_error: str = "continue",
                 explainer=None):
        self.source = source
        self.analyzer = analyzer
        self.sinks = list(sinks)
        self.presets = presets
        self.control = control
        self.session_dir = session_dir
        self.output_size = output_size
        self.detect_interval = detect_interval
        self.tracker = tracker or Tracker()
        # emocam.explain.Explainer: classifies AND maps each face in one forward pass; None: classify only.
        self.explainer = explainer
        self.stale_after_s = stale_after_s
        self.sink_on_error = sink_on_error
        self.analysis_hooks: list[AnalysisHook] = []
        self.reconnect_backoff: Callable[[], Backoff] = Backoff

        self.info: SourceInfo | None = None
        self.frames: Mailbox[Frame] = Mailbox()  # capture -> publish
        self.to_analyze: Mailbox[Frame] = Mailbox()  # capture -> analysis
        self.latest: Mailbox[Analysis] = Mailbox()  # analysis -> publish
        self.fps_in, self.fps_out, self.inference = RateMeter(), RateMeter(), RateMeter()
        self.latency = RateMeter()
        # Per analysed frame, only when the stage ran: tracked frames skip detection, frames without faces
        # skip classification.
        self.detect_time, self.classify_time = RateMeter(), RateMeter()
        self.source_state = "starting"
        self.error: str | None = None
        self.started_at = 0.0
        self._stop = threading.Event()
        self._capture_done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failed_sinks: dict[str, str] = {}
        self._publishing = threading.Lock()  # held while sinks write one frame
        self._swapping_sinks = threading.Lock()  # OBS adds the recorder while the publish thread drops a failed sink
        self.frames_corrupt = 0
        self._stats: dict = {}
        self._stats_at = -1.0
        self._complaints: dict[str, int] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the source and the sinks (errors here are the user's to fix) and start the threads."""
        if self.analyzer is not None:
            self.analyzer.warm_up()  # before the source opens: a camera or video clock is not kept waiting
        self.info = self.source.open()
        logger.info(f"source: {self.info.description}")
        self.source_state = "running"
        w, h = self.output_size or (self.info.width, self.info.height)
        self.output_size = (w, h)
        ctx = SinkContext(w, h, self.info.fps, self.session_dir)
        opened: list[Sink] = []
        try:
            for sink in self.sinks:
                try:
                    sink.open(ctx)
                    opened.append(sink)
                except SinkError as exc:
                    if self.sink_on_error == "exit":
                        raise
                    logger.error(f"{sink.name}: {exc} (continuing without it)")
                    self._failed_sinks[sink.name] = str(exc)
        except BaseException:
            for sink in opened:
                sink.close()
            self.source.close()
            raise
        self.sinks = opened
        self.started_at = time.monotonic()
        for name, target in (("capture", self._capture_loop), ("analysis", self._analysis_loop),
                             ("publish", self._publish_loop)):
            if name == "analysis" and self.analyzer is None:
                continue
            t = threading.Thread(target=target, name=f"emocam-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source ended or stop() was called and everything is flushed. True when finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def close(self) -> None:
        self.stop()
        self.wait(10)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # one sink's failure must not keep the others from finishing their files
                logger.error(f"{sink.name}: closing failed: {exc}")
        self.source.close()

    def add_sink(self, sink: Sink) -> None:
        """Open and attach a sink while running (e.g. start recording); SinkError if it cannot open."""
        w, h = self.output_size
        sink.open(SinkContext(w, h, self.info.fps if self.info else 30.0, self.session_dir))
        with self._swapping_sinks:
            self._failed_sinks.pop(sink.name, None)
            self.sinks = self.sinks + [sink]  # swapped whole: the publish thread iterates over its own reference

    def remove_sink(self, name: str) -> bool:
        """Detach and close a running sink (e.g. stop recording: the file is finalised). False if none runs."""
        sink = next((s for s in self.sinks if s.name == name), None)
        if sink is None:
            return False
        with self._swapping_sinks:
            self.sinks = [s for s in self.sinks if s is not sink]
        with self._publishing:  # wait out a write() in progress; later frames no longer see the sink
            pass
        sink.close()  # outside the lock: finalising a recording must not pause the video
        return True

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def stop_requested_by(self) -> str | None:
        """The sink whose user asked to end the run (q in the preview window, say), if any."""
        return next((s.name for s in self.sinks if s.stop_requested), None)

    # ---- threads ---------------------------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        # The pipeline numbers frames itself: sources restart or resume their own counts after a reopen or loop.
        last_image = None
        index = 0
        try:
            while not self._stop.is_set():
                try:
                    frame = self.source.read()
                except SourceLost as exc:
                    logger.warning(f"source lost: {exc}; reconnecting")
                    last_image, index = self._reconnect(last_image, index)
                    continue
                if frame is None:
                    logger.info("source ended")
                    break
                if not _is_bgr_frame(frame.image):
                    self.frames_corrupt += 1
                    self._complain("capture", f"corrupt frame skipped ({_describe(frame.image)})")
                    continue
                frame = replace(frame, index=index)
                index += 1
                last_image = frame.image
                self.fps_in.tick(frame.timestamp)
                self.frames.put(frame)
                self.to_analyze.put(frame)
        except Exception as exc:
            logger.exception(f"capture stopped: {exc}")
            self.error = f"capture: {exc}"
        finally:
            self._capture_done.set()
            self.frames.close()
            self.to_analyze.close()

    def _reconnect(self, last_image, index: int):
        """Publish 'lost' frames at the source's rate while reopening with backoff; returns when it is back.
        Each reopen runs on a thread of its own: a stream that accepts the connection but sends nothing takes its
        whole open timeout (10 s), and the output must not freeze meanwhile."""
        self.source_state = "lost"
        self.source.close()
        backoff = self.reconnect_backoff()
        fps = self.info.fps if self.info and self.info.fps > 0 else 30.0
        retry_at = time.monotonic() + backoff.next_delay()
        next_frame = time.monotonic()
        attempt: _Reopen | None = None
        try:
            while not self._stop.is_set():
                if attempt is None and time.monotonic() >= retry_at:
                    attempt = _Reopen(self.source)
                if attempt is not None and attempt.done:
                    if attempt.error is None:
                        self.info = attempt.info
                        logger.info(f"source back: {self.info.description}")
                        self.source_state = "running"
                        return last_image, index
                    if not isinstance(attempt.error, (SourceLost, SourceUnavailable)):
                        raise attempt.error  # a bug, not a missing camera: capture stops with it
                    delay = backoff.next_delay()
                    logger.warning(f"source still unavailable ({attempt.error}); next try in {delay:.1f} s")
                    retry_at = time.monotonic() + delay
                    attempt = None
                text = f"camera lost - reconnecting (try {backoff.attempts})"
                image = lost_frame(last_image, (self.info.width, self.info.height), text)
                frame = Frame(image, index, time.monotonic(), lost=True)
                index += 1
                self.frames.put(frame)
                next_frame += 1.0 / fps
                self._stop.wait(max(0.0, next_frame - time.monotonic()))
        finally:
            if attempt is not None:  # stopping: let the open finish, so that close() does not race it
                attempt.wait(REOPEN_GRACE_S)
        return last_image, index

    def _analysis_loop(self) -> None:
        version, n, errors = 0, 0, 0
        while True:
            frame, version = self.to_analyze.take(version, timeout=0.2)
            if frame is None:
                if self.to_analyze.closed or self._stop.is_set():
                    return
                continue
            if frame.lost:
                continue
            try:
                analysis = self._analyze(frame, n)
            except Exception as exc:  # a bad frame must not end analysis; the video goes on without it
                errors += 1
                if errors <= 3 or errors % 100 == 0:
                    logger.exception(f"analysis failed on frame {frame.index} ({errors} so far): {exc}")
                continue
            n += 1
            self.inference.tick(time.monotonic(), time.monotonic() - analysis.timestamp)
            self.latest.put(analysis)
            for hook in self.analysis_hooks:
                try:
                    hook(frame, analysis)
                except Exception as exc:  # an exporter's bug must not end analysis, and with it the overlays
                    self._complain(f"analysis hook {getattr(hook, '__qualname__', hook)}",
                                   f"{type(exc).__name__}: {exc}")

    def _analyze(self, frame: Frame, n: int) -> Analysis:
        analyzer = self.analyzer
        image = frame.image
        tracked = self.tracker.active
        detected = n % self.detect_interval == 0 or not tracked
        if detected:
            started = time.monotonic()
            faces = analyzer.detect(image)
            done = time.monotonic()
            self.detect_time.tick(done, done - started)
        else:
            faces = [replace(f, probs=None, track_id=None) for f in tracked]
        if faces:
            started = time.monotonic()
            faces = (self.explainer or analyzer.classifier).classify(image, faces)
            done = time.monotonic()
            self.classify_time.tick(done, done - started)
        faces = self.tracker.update(faces, frame.timestamp, detected)
        if self.explainer is not None:
            faces = self.explainer.smooth(faces)  # per track id, so after the tracker
        h, w = image.shape[:2]
        return Analysis(frame.index, frame.timestamp, (w, h), tuple(faces))

    def _publish_loop(self) -> None:
        version = 0
        empty = Analysis(-1, 0.0, self.output_size, ())
        while True:
            frame, version = self.frames.take(version, timeout=0.2)
            if frame is None:
                if self.frames.closed or self._stop.is_set():
                    return
                continue
            control = self.control.get()
            preset = self.presets.get(control.preset) or next(iter(self.presets.values()))
            analysis = self.latest.peek()
            if analysis is None or frame.timestamp - analysis.timestamp > self.stale_after_s:
                analysis = empty
            scene = self._scene(frame)
            if not frame.lost:
                info = RenderInfo(self._display_stats(), preset.name, control.selection)
                for annotator in preset.annotators:
                    if annotator.name not in control.hidden:
                        try:
                            annotator.annotate(scene, analysis, info)
                        except Exception as exc:  # one broken overlay must not stop the video
                            self._complain(f"annotator {annotator.name}", f"{type(exc).__name__}: {exc}")
            out = OutputFrame(scene, frame.index, frame.timestamp, None if analysis is empty else analysis,
                              preset.name)
            with self._publishing:
                for sink in self.sinks:
                    try:
                        sink.write(out)
                    except SinkError as exc:
                        self._sink_failed(sink, exc)
                    except Exception as exc:  # a bug in one sink fails that sink, not the publish thread
                        self._sink_failed(sink, SinkError(f"{type(exc).__name__}: {exc}"))
            now = time.monotonic()
            self.fps_out.tick(now)
            self.latency.tick(now, now - frame.timestamp)

    def _scene(self, frame: Frame) -> np.ndarray:
        w, h = self.output_size
        fh, fw = frame.image.shape[:2]
        if (fw, fh) == (w, h):
            return frame.image.copy()  # the analyser may still be reading the original
        # another aspect (a camera that fell back to 640x480 under a 1280x720 output): letterboxed, not stretched,
        # where the annotators expect it (render.base.placement)
        at = placement((fw, fh), (w, h))
        scene = np.zeros((h, w, 3), np.uint8)
        scene[at.y:at.y + at.height, at.x:at.x + at.width] = cv2.resize(
            frame.image, (at.width, at.height), interpolation=cv2.INTER_LINEAR)
        return scene

    def _sink_failed(self, sink: Sink, exc: SinkError) -> None:
        with self._swapping_sinks:
            self._failed_sinks[sink.name] = str(exc)
            self.sinks = [s for s in self.sinks if s is not sink]
        try:
            sink.close()
        except Exception:
            pass
        if self.sink_on_error == "exit":
            logger.error(f"{sink.name}: {exc}; stopping (sinks.on_error = \"exit\")")
            self.error = f"{sink.name}: {exc}"
            self.stop()
        else:
            logger.error(f"{sink.name}: {exc}; the other outputs go on")

    def _complain(self, where: str, message: str) -> None:
        """Log a recurring per-frame problem the 1st, 2nd, 3rd, 100th, 200th... time, not 30 times a second."""
        n = self._complaints[where] = self._complaints.get(where, 0) + 1
        if n <= 3 or n % 100 == 0:
            logger.warning(f"{where}: {message} ({n} so far)")

    # ---- status ----------------------------------------------------------------------------------------------
    def _display_stats(self) -> dict:
        """stats() for the overlays, recomputed 4 times a second rather than on every frame (percentiles, locks)."""
        now = time.monotonic()
        if now - self._stats_at >= 0.25:
            self._stats, self._stats_at = self.stats(), now
        return self._stats

    def stats(self) -> dict:
        now = time.monotonic()
        return {
            "fps_in": self.fps_in.rate(now),
            "fps_out": self.fps_out.rate(now),
            "inference_hz": self.inference.rate(now),
            "latency_ms": 1000 * self.latency.percentile(50),
        }

    def status(self) -> dict:
        control = self.control.get()
        complaints = dict(self._complaints)  # a copy in one step: other threads add complaints
        return {
            "source": {"name": self.source.name, "state": self.source_state,
                       "description": self.info.description if self.info else None,
                       "width": self.info.width if self.info else None,
                       "height": self.info.height if self.info else None,
                       "fps": self.info.fps if self.info else None},
            "output": {"width": self.output_size[0] if self.output_size else None,
                       "height": self.output_size[1] if self.output_size else None},
            "frames_in": self.fps_in.count,
            "frames_out": self.fps_out.count,
            "analyses": self.inference.count,
            "frames_skipped_by_analysis": self.to_analyze.dropped,
            "frames_corrupt": self.frames_corrupt,
            "render_errors": {k: v for k, v in complaints.items() if k.startswith("annotator")},
            "hook_errors": {k: v for k, v in complaints.items() if k.startswith("analysis hook")},
            "fps_in": round(self.fps_in.rate(), 2),
            "fps_out": round(self.fps_out.rate(), 2),
            "inference_hz": round(self.inference.rate(), 2),
            "latency_ms_p50": round(1000 * self.latency.percentile(50), 2),
            "latency_ms_p95": round(1000 * self.latency.percentile(95), 2),
            "detect_ms": _ms_percentiles(self.detect_time),
            "classify_ms": _ms_percentiles(self.classify_time),
            "preset": control.preset,
            "hidden": sorted(control.hidden),
            "selection": control.selection,
            "faces": len(self.latest.peek().faces) if self.latest.peek() else 0,
            "sinks": {s.name: {"state": "running", **s.status()} for s in self.sinks}
            | {name: {"state": "failed", "error": err} for name, err in dict(self._failed_sinks).items()},
            "session_dir": str(self.session_dir),
            "uptime_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0,
            "error": self.error,
        }
