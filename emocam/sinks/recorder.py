"""Record the annotated stream into the session folder: session.mp4 plus frames.jsonl, one line per recorded frame.

Encoding runs on the recorder's own thread behind a bounded queue: write() only enqueues, and when the encoder
falls behind frames are dropped and counted rather than slowing the publish thread. The MP4 is fragmented with a
keyframe every second and flushed per packet, so a crash or kill -9 loses about the last second and the file stays
playable. frames.jsonl is flushed every line; after a kill its last line may be torn, which read_frame_log() skips.
"""

from __future__ import annotations

import errno
import json
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from emocam.sinks import SINKS
from emocam.sinks.base import OutputFrame, Sink, SinkContext, SinkError
from emocam.workers import stop_worker

LOG_NAME = "frames.jsonl"
SMPTE170M, LIMITED_RANGE = 6, 1  # FFmpeg's AVColorSpace/AVColorPrimaries/AVColorTransfer (BT.601) and AVColorRange
PTS_PER_SECOND = 1000  # timestamps in ms: frames keep their real spacing, dropped frames show as gaps


class RecorderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codec: Literal["h264", "mjpg"] = Field(
        "h264", description='"h264": session.mp4 via PyAV (pip install av); "mjpg": session.avi via OpenCV.')
    width: int | None = Field(
        None, ge=16, description="Record at this width (e.g. 1280); unset: the rendered size. 1080p costs 2-3x 720p.")
    height: int | None = Field(None, ge=16, description="Record at this height (e.g. 720); set with width.")
    crf: int = Field(23, ge=0, le=51, description="H.264 quality: lower is better and bigger; 18-28 is sensible.")
    threads: int = Field(1, ge=0, le=16, description="x264 threads; 0: one per core (leaves less for inference).")
    queue_seconds: float = Field(
        1.0, gt=0, le=10, description="Frames held for the encoder before dropping (1080p30: ~190 MB per second).")

    @model_validator(mode="after")
    def _both_or_neither(self) -> "RecorderOptions":
        if (self.width is None) != (self.height is None):
            raise ValueError("set both width and height, or neither")
        return self


class H264Writer:
    """libx264 ultrafast/zerolatency into a fragmented MP4 that every player opens even if we die mid-way."""

    suffix = ".mp4"

    def __init__(self, path: Path, width: int, height: int, fps: float, crf: int, threads: int):
        try:
            import av
        except ImportError:
            raise SinkError(
                'recording H.264 needs PyAV: `pip install av`, or set [sinks.recorder] codec = "mjpg"') from None
        # frag_keyframe: a fragment ends at each keyframe; empty_moov: playable without a trailer;
        # flush_packets: hand each fragment to the OS at once, not when ffmpeg's 32 KB buffer fills.
        self.container = av.open(str(path), "w", format="mp4", options={
            "movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"})
        try:
            stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = stream.codec_context.time_base = Fraction(1, PTS_PER_SECOND)
            stream.codec_context.gop_size = max(1, round(fps))  # a keyframe, hence a fragment, per second
            stream.codec_context.thread_count = threads
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": str(crf)}
            # Frames arrive converted by OpenCV (BT.601, limited range); say so in the stream so players agree.
            ctx = stream.codec_context
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = SMPTE170M
            ctx.color_range = LIMITED_RANGE
        except Exception:
            self.container.close()
            raise
        self.stream = stream
        self._av = av
        self._last_pts = -1

    def encode(self, image: np.ndarray, t: float) -> None:
        # OpenCV's conversion is ~1.7 ms cheaper per 1080p frame than PyAV's swscale, and rounds colours better.
        frame = self._av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.colorspace, frame.color_range = SMPTE170M, LIMITED_RANGE
        frame.pts = self._last_pts = max(self._last_pts + 1, round(t * PTS_PER_SECOND))
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()


class MjpgWriter:
    """OpenCV's own MJPG/AVI writer, for machines without PyAV. Bigger files; a killed run loses the AVI index."""

    suffix = ".avi"

    def __init__(self, path: Path, width: int, height: int, fps: float, crf: int, threads: int):
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        if not self.writer.isOpened():
            raise SinkError(f"OpenCV cannot write MJPG video to {path}: is the folder writable?")

    def encode(self, image: np.ndarray, t: float) -> None:
        self.writer.write(image)

    def close(self) -> None:
        self.writer.release()


WRITERS = {"h264": H264Writer, "mjpg": MjpgWriter}


@SINKS.register("recorder")
class RecorderSink(Sink):
    Options = RecorderOptions

    def __init__(self, options: RecorderOptions | None = None):
        super().__init__(options)
        self.video_path: Path | None = None
        self.log_path: Path | None = None
        self.size = (0, 0)
        self.frames_written = 0  # encoded and logged (only the encoder thread counts these)
        self.frames_dropped = 0  # refused because the queue was full (only the publish thread counts these)
        self.error: str | None = None
        self._accepting = False
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._writer = None
        self._log = None
        self._last_drop_warning = -1e9

    def open(self, ctx: SinkContext) -> None:
        opts: RecorderOptions = self.options
        width, height = (opts.width, opts.height) if opts.width else (ctx.width, ctx.height)
        if opts.codec == "h264":  # yuv420p needs even sides
            width, height = width - width % 2, height - height % 2
        self.size = (width, height)
        writer_cls = WRITERS[opts.codec]
        self._writer = self.video_path = None
        try:
            ctx.session_dir.mkdir(parents=True, exist_ok=True)
            # A second recording in the same session (record stop, then start) gets the next free number.
            self._log, n = None, 1
            while self._log is None:
                suffix = "" if n == 1 else f"-{n}"
                self.log_path = ctx.session_dir / f"{Path(LOG_NAME).stem}{suffix}{Path(LOG_NAME).suffix}"
                self.video_path = ctx.session_dir / f"session{suffix}{writer_cls.suffix}"
                try:
                    if not self.video_path.is_file():  # an earlier recording of this session
                        self._log = open(self.log_path, "x", encoding="utf-8")
                except FileExistsError:
                    pass
                n += 1
            self._writer = writer_cls(self.video_path, width, height, ctx.fps, opts.crf, opts.threads)
        except Exception as e:  # a broken encoder build raises anything; no half-made files may stay behind
            self._discard_partial()
            if isinstance(e, SinkError):
                raise
            if isinstance(e, OSError):
                raise SinkError(f"cannot record into {ctx.session_dir}: {e}") from None
            raise SinkError(f"the {opts.codec} encoder does not start ({type(e).__name__}: {e}); install PyAV "
                            f'with its own FFmpeg (`pip install av`) or set [sinks.recorder] codec = "mjpg"') from None
        self._queue = queue.Queue(maxsize=max(2, round(opts.queue_seconds * ctx.fps)))
        self._thread = threading.Thread(target=self._run, name="emocam-recorder", daemon=True)
        self._accepting = True
        self._thread.start()
        logger.info(f"recording {width}x{height} {opts.codec} into {self.video_path}")

    def write(self, frame: OutputFrame) -> None:
        """Never blocks and never raises: the frame is queued for the encoder thread, or dropped and counted."""
        if not self._accepting:
            return
        try:
            self._queue.put_nowait((frame, time.monotonic()))
        except queue.Full:
            self.frames_dropped += 1
            now = time.monotonic()
            if now - self._last_drop_warning >= 1.0:
                self._last_drop_warning = now
                logger.warning(
                    f"recorder: the encoder falls behind at {self.size[0]}x{self.size[1]}; "
                    f"frames dropped so far: {self.frames_dropped}. Record smaller "
                    "([sinks.recorder] width = 1280, height = 720) or free some CPU")

    def close(self) -> None:
        """Encode what is queued, finalise the files and stop the thread. Safe to call twice."""
        self._accepting = False
        thread = self._thread
        if thread is None:
            return
        stop_worker(thread, self._queue)
        self._thread = None

    def _discard_partial(self) -> None:
        """Undo a failed open(): its files were new (open never reuses a name) and hold nothing yet."""
        if self._log is not None:
            self._log.close()
            self._log = None
            self.log_path.unlink(missing_ok=True)
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass  # the file goes next anyway
            self._writer = None
        if self.video_path is not None:
            self.video_path.unlink(missing_ok=True)

    def status(self) -> dict:
        return {
            "path": str(self.video_path) if self.video_path else None,
            "log": str(self.log_path) if self.log_path else None,
            "size": list(self.size),
            "frames_written": self.frames_written,
            "frames_dropped": self.frames_dropped,
            "queued": self._queue.qsize() if self._queue else 0,
            "bytes": _file_size(self.video_path),
            "error": self.error,
        }

    # --- encoder thread ---

    def _run(self) -> None:
        first = None
        try:
            while (item := self._queue.get()) is not None:
                frame, written = item
                first = written if first is None else first
                self._encode(frame.image, written - first)
                self._log_frame(frame, written)
                self.frames_written += 1
        except Exception as e:
            self._accepting = False
            self._report(e)
        finally:
            self._finish()

    def _encode(self, image: np.ndarray, t: float) -> None:
        width, height = self.size
        if image.shape[1] != width or image.shape[0] != height:
            # INTER_LINEAR: 1.1 ms for 1080p -> 720p where INTER_AREA takes 5.2 ms, and fine down to half size.
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        self._writer.encode(image, t)

    def _log_frame(self, frame: OutputFrame, written: float) -> None:
        record = {
            "frame": self.frames_written,
            "source_frame": frame.index,
            "captured": round(frame.captured, 6),
            "written": round(written, 6),
            "preset": frame.preset,
            "analysis": frame.analysis.to_json() if frame.analysis is not None else None,
        }
        self._log.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._log.flush()

    def _report(self, e: Exception) -> None:
        kept = f"what reached {self.video_path} before, up to {self.frames_written} frames, stays playable"
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            self.error = "disk full"
            logger.error(f"recorder: disk full, recording stopped ({kept}). Free space on the disk holding "
                         f"{self.video_path.parent} (or point the session folder at another disk) and restart; "
                         "the other outputs keep running")
        else:
            self.error = f"{type(e).__name__}: {e}"
            logger.error(f"recorder: writing failed, recording stopped ({kept}): {self.error}")

    def _finish(self) -> None:
        for name, closer in (("video", self._writer), ("frame log", self._log)):
            try:
                closer.close()
            except Exception as e:
                if self.error is None:  # e.g. the disk filled up with the last fragment
                    self._report(e)
                else:  # finalising after a failure fails too; what is on disk stays playable
                    logger.debug(f"recorder: closing the {name} failed: {e}")


def _file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path else 0
    except OSError:
        return 0


def read_frame_log(path: Path | str) -> list[dict]:
    """The records of a frames.jsonl. A torn last line (the process was killed while writing it) is skipped;
    a bad line anywhere else is an error."""
    chunks = Path(path).read_bytes().split(b"\n")
    torn = chunks.pop()  # after a complete file this is b""
    records = []
    for number, chunk in enumerate(chunks, 1):
        try:
            records.append(json.loads(chunk))
        except ValueError:
            raise ValueError(f"{path}: line {number} is not JSON") from None
    if torn.strip():
        try:
            records.append(json.loads(torn))
        except ValueError:
            pass
    return records
