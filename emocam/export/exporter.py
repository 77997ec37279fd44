"""The live exporter: the pipeline's analysis hook picks and cuts patches; a writer thread saves them.

The hook runs on the analysis thread, so it only decides (episodes), copies the small patch out of the frame and
queues it: it never waits. When the writer falls behind, patches are dropped and counted. For each patch the
writer saves, in this order: the PNG (temporary name, then renamed), its HOG row, then its manifest row. A kill
can therefore leave at most a patch without a row (never a row without its patch); the next exporter on the same
root repairs that (see sessions.repair_abandoned).
"""

from __future__ import annotations

import errno
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from loguru import logger

from emocam.errors import EmoCamError
from emocam.export.episodes import EpisodeTracker
from emocam.export.hog import append_rows, feature_length, hog_features
from emocam.export.manifest import ManifestWriter
from emocam.export.options import ExportConfig
from emocam.export.patches import aligned_copy, margin_rect
from emocam.export.quota import MB, Quota
from emocam.export.sessions import INFO, SessionLock, new_session, repair_abandoned, write_json_atomic
from emocam.types import EMOTIONS, Face
from emocam.workers import stop_worker

LINK = "export.json"  # written into the daemon's session folder: where that run's patches went


@dataclass(frozen=True)
class Patch:
    episode: int
    label: str
    frame: int
    t: float
    face: Face
    crop: tuple[int, int, int, int]  # x1, y1, x2, y2 of `image` in the frame
    image: np.ndarray  # BGR, copied out of the frame


class Exporter:
    def __init__(self, options: ExportConfig, root: Path, *, models: dict | None = None,
                 source_session: Path | None = None):
        self.options = options
        self.root = Path(root)
        self.models = models or {"detector": None, "detector_weights": {}, "classifier": None,
                                 "classifier_weights": {}}
        self.source_session = Path(source_session) if source_session else None
        self.session_dir: Path | None = None
        self.episodes = EpisodeTracker(options.start_after, options.min_probability, options.every_n_frames,
                                       options.per_second)
        self.written = 0
        self.dropped = 0  # the writer's queue was full
        self.skipped_paused = 0  # not saved while the quota paused export
        self.skipped_existing = 0  # a file of that name existed: never overwritten
        self.errors = 0
        self.bytes_written = 0
        self.paused: str | None = None  # why export is paused, or None
        self._active = False
        self._closed = False
        self._reset_episodes = False
        self._queue: queue.Queue = queue.Queue(maxsize=options.queue_size)
        self._thread: threading.Thread | None = None
        self._lock: SessionLock | None = None
        self._manifest: ManifestWriter | None = None
        self.quota: Quota | None = None
        self._lifecycle = threading.Lock()
        self._wall_offset = time.time() - time.monotonic()
        self._last_drop_warning = -1e9

    # ---- control (any thread) -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or resume) exporting. The session is opened at the first start and kept until close()."""
        with self._lifecycle:
            if self._active:
                return
            if self._closed:
                raise EmoCamError("this exporter is closed; a new run starts a new export session")
            if self.session_dir is None:
                self._open_session()
            self._active = True
        logger.info(f"export started into {self.session_dir}")

    def stop(self) -> None:
        """Stop picking patches (every episode ends); what is queued is still written."""
        with self._lifecycle:
            if not self._active:
                return
            self._active = False
            self._reset_episodes = True
        logger.info(f"export stopped ({self.written} patches so far in {self.session_dir})")

    def close(self) -> None:
        """Write what is queued, finish the manifest and mark the session complete. Safe to call twice."""
        self.stop()
        with self._lifecycle:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is None:
                return
            stop_worker(thread, self._queue)
            self._manifest.close()
            self._lock.release()
        logger.info(f"export closed: {self.summary()}")

    @property
    def active(self) -> bool:
        return self._active

    # ---- the pipeline's analysis hook (analysis thread) -----------------------------------------------------
    def on_analysis(self, frame, analysis) -> None:
        if self._reset_episodes:
            self._reset_episodes = False
            self.episodes.reset()
        if not self._active:
            return
        image = frame.image
        h, w = image.shape[:2]
        for face, episode in self.episodes.update(analysis.frame_index, analysis.timestamp, analysis.faces):
            if self.paused:
                self.skipped_paused += 1
                continue
            x1, y1, x2, y2 = rect = margin_rect(face.box, self.options.margin, w, h)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            patch = Patch(episode.id, episode.label, analysis.frame_index, analysis.timestamp, face, rect,
                          image[y1:y2, x1:x2].copy())
            try:
                self._queue.put_nowait(patch)
            except queue.Full:
                self._dropped()

    def _dropped(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= 5.0:
            self._last_drop_warning = now
            logger.warning(f"export: the writer falls behind; patches dropped so far: {self.dropped} "
                           "(raise export.every_n_frames or lower export.per_second)")

    # ---- session --------------------------------------------------------------------------------------------
    def _open_session(self) -> None:
        """Create the session's folders, info and manifest; only a complete session becomes this exporter's, so a
        failed start (disk full, say) can be retried with a later start()."""
        session_dir = lock = None
        try:
            repair_abandoned(self.root)
            session_dir, lock = new_session(self.root)
            opts = self.options
            for label in EMOTIONS:
                (session_dir / label).mkdir()
                if opts.aligned:
                    (session_dir / "aligned" / label).mkdir(parents=True)
            (session_dir / "hog").mkdir()
            write_json_atomic(session_dir / INFO, {
                "session": session_dir.name,
                "source_session": str(self.source_session) if self.source_session else None,
                "started": time.time(),
                "options": opts.model_dump(mode="json"),
                "hog_length": feature_length(opts.hog),
                **self.models,
            })
            manifest = ManifestWriter(session_dir)
            quota = Quota(self.root, None if opts.max_mb is None else int(opts.max_mb * MB),
                          int(opts.min_free_mb * MB))
            if self.source_session is not None and self.source_session.is_dir():
                write_json_atomic(self.source_session / LINK, {"export_session": str(session_dir.resolve())})
        except OSError as exc:
            if session_dir is not None:  # nothing was exported into it yet: leave no half-made session behind
                shutil.rmtree(session_dir, ignore_errors=True)
            if lock is not None:
                lock.release()
            raise EmoCamError(f"cannot export into {self.root}: {exc.strerror or exc}; set export.root to a "
                              "writable folder with free space") from None
        self.session_dir, self._lock, self._manifest, self.quota = session_dir, lock, manifest, quota
        self._thread = threading.Thread(target=self._run, name="emocam-export", daemon=True)
        self._thread.start()

    # ---- writer thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self.paused:
                    self._check_quota()
                continue
            if item is None:
                return
            if not self._check_quota():
                self.skipped_paused += 1
                continue
            try:
                self._save(item)
            except OSError as exc:
                self.errors += 1
                if exc.errno == errno.ENOSPC:
                    self._pause("the disk is full")
                else:
                    logger.error(f"export: saving frame {item.frame} track {item.face.track_id} failed: {exc}")
            except Exception as exc:  # one bad patch must not end the export
                self.errors += 1
                logger.exception(f"export: saving frame {item.frame} failed: {exc}")

    def _check_quota(self) -> bool:
        reason = self.quota.exceeded(paused=self.paused is not None)
        if reason and not self.paused:
            self._pause(reason)
        elif not reason and self.paused:
            logger.info("export resumed: there is room again")
            self.paused = None
        return reason is None

    def _pause(self, reason: str) -> None:
        self.paused = reason
        logger.warning(f"export paused: {reason}. Patches are skipped until there is room; export resumes by "
                       "itself (the video goes on)")

    def _save(self, item: Patch) -> None:
        opts, session = self.options, self.session_dir
        face = item.face
        name = f"{session.name}_{item.frame:06d}_{face.track_id}.png"
        rel = f"{item.label}/{name}"
        if (session / rel).exists():  # cannot happen within one session; but never overwrite
            self.skipped_existing += 1
            return
        written = [session / rel]
        try:
            size = _write_png(session / rel, item.image)
            aligned_rel = None
            if opts.aligned and face.landmarks is not None:
                offset = np.array(item.crop[:2], np.float32)
                aligned = aligned_copy(item.image, face.landmarks - offset, opts.aligned_size)
                aligned_rel = f"aligned/{item.label}/{name}"
                written.append(session / aligned_rel)
                size += _write_png(session / aligned_rel, aligned)
            hog_rel = f"hog/episode_{item.episode:06d}.npy"
            hog_index = append_rows(session / hog_rel, hog_features(item.image, opts.hog)[None])
            self._manifest.write(self._row(item, rel, aligned_rel, hog_rel, hog_index))
        except OSError:
            # a patch whose manifest row was not written would stay unlisted for good: a clean close leaves no
            # marker for the repair to find it by
            for path in written:
                path.unlink(missing_ok=True)
            raise
        size += feature_length(opts.hog) * 4
        self.quota.add(size)
        self.bytes_written += size
        self.written += 1

    def _row(self, item: Patch, rel: str, aligned_rel: str | None, hog_rel: str, hog_index: int) -> dict:
        face = item.face
        return {
            "file": rel,
            "aligned_file": aligned_rel,
            "session": self.session_dir.name,
            "source_session": self.source_session.name if self.source_session else None,
            "episode": item.episode,
            "frame": item.frame,
            "t": round(item.t, 4),
            "time": round(item.t + self._wall_offset, 3),
            "track": face.track_id,
            "box": [round(float(v), 2) for v in face.box],
            "crop": list(item.crop),
            "score": round(float(face.score), 5),
            "label": item.label,
            "probabilities": {n: round(float(p), 6) for n, p in zip(EMOTIONS, face.probs)},
            "landmarks": None if face.landmarks is None else [[round(float(x), 2), round(float(y), 2)]
                                                              for x, y in face.landmarks],
            **self.models,
            "hog_file": hog_rel,
            "hog_index": hog_index,
        }

    # ---- status ---------------------------------------------------------------------------------------------
    def summary(self) -> dict:
        return {
            "session_dir": str(self.session_dir) if self.session_dir else None,
            "active": self._active,
            "paused": self.paused,
            "written": self.written,
            "dropped": self.dropped,
            "skipped_paused": self.skipped_paused,
            "skipped_existing": self.skipped_existing,
            "errors": self.errors,
            "queued": self._queue.qsize(),
            "bytes": self.bytes_written,
        }


def _write_png(path: Path, image: np.ndarray) -> int:
    """Encode, write under a temporary name, rename: the final name only ever holds a complete file."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode {path.name} as PNG")
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return buf.size


def model_info(detector, classifier) -> dict:
    return {"detector": detector.name, "detector_weights": dict(detector.weights_sha256),
            "classifier": classifier.name, "classifier_weights": dict(classifier.weights_sha256)}


def attach_exporter(pipeline, cfg) -> Exporter | None:
    """Hook an exporter into a built pipeline and make it follow Control.exporting (config, `emocam run
    --export`, OBS). Problems starting it are logged: the video goes on without export."""
    if pipeline.analyzer is None:
        return None
    exporter = Exporter(cfg.export, cfg.resolve(cfg.export.root),
                        models=model_info(pipeline.analyzer.detector, pipeline.analyzer.classifier),
                        source_session=pipeline.session_dir)
    pipeline.analysis_hooks.append(exporter.on_analysis)

    def follow(old, new) -> None:
        if new.exporting == old.exporting:
            return
        try:
            exporter.start() if new.exporting else exporter.stop()
        except EmoCamError as exc:
            logger.error(f"export not started: {exc}")
            pipeline.control.update(exporting=False)  # status and OBS then say it is off, and a retry starts it

    pipeline.control.subscribe(follow)
    if cfg.export.enabled:
        pipeline.control.update(exporting=True)
    return exporter
