"""emocam bench: the real pipeline on a real video or still image at camera pace, measured."""

from __future__ import annotations

import argparse
import glob
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

from emocam.config import Config, toml_string

NULL_BACKEND = "emocam-null"


def register(sub, parents) -> None:
    p = sub.add_parser("bench", parents=parents, help="measure the live pipeline on a video or still image",
                       description="Feeds a video, or a still image as a camera shows a static scene, scaled to "
                                   "WIDTHxHEIGHT and paced at FPS like a camera, through the real pipeline (default "
                                   "models, the chosen preset) into the real pyvirtualcam Camera class with a null "
                                   "backend, and reports output fps, inference rate, capture-to-publish latency, "
                                   "detection and classification times, faces, CPU and memory.")
    p.add_argument("--source", required=True, type=Path, metavar="FILE",
                   help="video file (looped) or still image (jpg, png, ...: decoded from its file on every frame, "
                        "letterboxed to WIDTHxHEIGHT)")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=20.0, help="measured time, after --warmup")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds ignored at the start")
    p.add_argument("--preset", default="emotions", help="overlay preset (default: %(default)s)")
    p.add_argument("--record", action="store_true", help="also run the recorder (into a temporary session)")
    p.add_argument("--mjpeg", action="store_true",
                   help="JPEG-encode frames beforehand and decode them on capture, as a USB camera's MJPG costs")
    p.add_argument("--naive", action="store_true",
                   help="also run a naive sequential loop (detect at full resolution + classify + draw, frame by "
                        "frame) on the same video for the same time, and print both and their ratio")
    p.add_argument("--detector-only", action="store_true",
                   help="instead: time the configured detector alone (with its detector.max_side downscale) on "
                        "--seconds x --fps consecutive frames, one after another, and report ms per frame")
    p.add_argument("--minutes", type=float,
                   help="soak: run this long instead of --seconds and report RSS, fps and latency over time")
    p.add_argument("--sample-s", type=float, default=30.0, help="soak sampling interval (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.set_defaults(func=run)


class _NullCamera:
    """A pyvirtualcam backend that accepts frames and drops them: the Camera class still does its real work."""

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self._fourcc, self._device = fourcc, device or "null"

    def send(self, frame) -> None:
        pass

    def close(self) -> None:
        pass

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int:
        return self._fourcc


def _register_null_backend() -> None:
    import pyvirtualcam

    if NULL_BACKEND not in pyvirtualcam.camera.BACKENDS:
        pyvirtualcam.register_backend(NULL_BACKEND, _NullCamera)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def run(args: argparse.Namespace, cfg: Config) -> int:
    import tempfile

    from emocam.config import load_config
    from emocam.daemon import build_pipeline
    from emocam.errors import EmoCamError
    from emocam.sources.images import EXTENSIONS as IMAGE_EXTENSIONS

    if not args.source.is_file():
        raise EmoCamError(f"--source {args.source}: no such file")
    still = args.source.suffix.lower() in IMAGE_EXTENSIONS
    if args.detector_only:
        return _print(_detector_only(load_config(args.config, args.overrides + _source_overrides(args, still, "fast")),
                                     args), args.json)
    if still and args.mjpeg:
        raise EmoCamError("--mjpeg is for a video source: a still image is decoded from its file on every frame")
    _register_null_backend()
    sinks = ["virtualcam"] + (["recorder"] if args.record else [])
    overrides = args.overrides + _source_overrides(args, still) + [
        f'sinks.virtualcam.backend="{NULL_BACKEND}"', "sinks.enabled=[" + ", ".join(f'"{s}"' for s in sinks) + "]",
        'sinks.on_error="exit"', f'output.preset="{args.preset}"',
    ]
    cfg = load_config(args.config, overrides)
    seconds = args.minutes * 60 if args.minutes else args.seconds
    with tempfile.TemporaryDirectory(prefix="emocam-bench-") as tmp:
        pipeline = build_pipeline(cfg, session_dir=Path(tmp))
        total = args.warmup + seconds
        # Every value of the run kept, so the measured window can be cut out of them.
        keep = int(total * args.fps * 2) + 100
        pipeline.latency, pipeline.detect_time, pipeline.classify_time = (_KeptMeter(keep) for _ in range(3))
        faces = _FaceCounter()
        pipeline.analysis_hooks.append(faces)
        pipeline.start()
        try:
            time.sleep(args.warmup)
            start_wall, start_cpu = time.monotonic(), _cpu_seconds()
            out0, inf0, lat0 = pipeline.fps_out.count, pipeline.inference.count, pipeline.latency.kept_count
            det0, cls0 = pipeline.detect_time.kept_count, pipeline.classify_time.kept_count
            faces0 = faces.snapshot()
            timeline = _soak(pipeline, seconds, args.sample_s) if args.minutes else None
            if not args.minutes:
                time.sleep(seconds)
            wall, cpu = time.monotonic() - start_wall, _cpu_seconds() - start_cpu
            out1, inf1 = pipeline.fps_out.count, pipeline.inference.count
            latencies = pipeline.latency.kept(lat0) * 1000
            detect_ms = pipeline.detect_time.kept(det0) * 1000
            classify_ms = pipeline.classify_time.kept(cls0) * 1000
            analysed, found = (b - a for a, b in zip(faces0, faces.snapshot()))
            status = pipeline.status()
        finally:
            pipeline.close()
        naive = _naive(pipeline, cfg, seconds) if args.naive else None
    result = {
        "source": str(args.source), "source_kind": "image" if still else "video",
        "width": args.width, "height": args.height, "fps": args.fps,
        "preset": args.preset, "record": args.record, "mjpeg": args.mjpeg, "seconds": round(wall, 2),
        "detector": cfg.detector.name, "classifier": cfg.classifier.name,
        "output_fps": round((out1 - out0) / wall, 2),
        "inference_hz": round((inf1 - inf0) / wall, 2),
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p95": _percentile(latencies, 95),
        "detect_ms_p50": _percentile(detect_ms, 50),
        "detect_ms_p95": _percentile(detect_ms, 95),
        "classify_ms_p50": _percentile(classify_ms, 50),
        "classify_ms_p95": _percentile(classify_ms, 95),
        "faces_mean": round(found / analysed, 2) if analysed else None,
        "cpu_percent": round(100 * cpu / wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "faces_last": status["faces"],
        "frames_skipped_by_analysis": status["frames_skipped_by_analysis"],
        "sinks": status["sinks"],
    }
    if timeline is not None:
        result["soak"] = timeline
        settled = [row["rss_mb"] for row in timeline[1:]] or [row["rss_mb"] for row in timeline]
        result["rss_growth_after_warmup_percent"] = round(100 * (settled[-1] - settled[0]) / settled[0], 2)
    if naive is not None:
        result["naive"] = naive
        result["output_fps_ratio_pipeline_over_naive"] = (round(result["output_fps"] / naive["output_fps"], 2)
                                                          if naive["output_fps"] else None)
    return _print(result, args.json)


def _print(result: dict, as_json: bool) -> int:
    from emocam.cli import print_json

    if as_json:
        print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    return 0


def _source_overrides(args: argparse.Namespace, still: bool, pacing: str = "realtime") -> list[str]:
    """A video plays through the video source; a still image through the images source, which decodes it from its
    file on every frame (as a camera delivers every frame anew) and letterboxes it, keeping faces undistorted."""
    if still:
        # Escaped: the images source reads its path as a glob.
        path = toml_string(glob.escape(str(args.source.resolve())))
        return ["source.name=images", f"source.images.path={path}", f'source.images.pacing="{pacing}"',
                "source.images.loop=true", f"source.images.fps={args.fps}",
                f"source.images.width={args.width}", f"source.images.height={args.height}"]
    return ["source.name=video", f"source.video.path={toml_string(str(args.source.resolve()))}",
            f'source.video.pacing="{pacing}"', "source.video.loop=true", f"source.video.fps={args.fps}",
            f"source.video.width={args.width}", f"source.video.height={args.height}",
            f"source.video.mjpeg_emulation={'true' if args.mjpeg else 'false'}"]


class _FaceCounter:
    """An analysis hook counting analysed frames and the faces found in them."""

    def __init__(self):
        self.frames = self.faces = 0
        self._lock = threading.Lock()

    def __call__(self, frame, analysis) -> None:
        with self._lock:
            self.frames += 1
            self.faces += len(analysis.faces)

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.frames, self.faces


class _KeptMeter:
    """Stands in for a pipeline RateMeter and also keeps every value of the run, in memory written in full up
    front: a soak's RSS samples then measure the daemon, not the benchmark's growing record (a deque of floats
    grew ~0.17 MB a minute)."""

    def __init__(self, capacity: int):
        from emocam.pipeline import RateMeter

        self.meter = RateMeter()
        self._all = np.full(capacity, np.nan)  # np.full writes every page now; np.zeros would commit them later
        self.kept_count = 0

    def tick(self, now: float, value: float | None = None) -> None:
        self.meter.tick(now, value)
        if value is not None and self.kept_count < len(self._all):
            self._all[self.kept_count] = value
            self.kept_count += 1  # one writer thread per meter; readers only look below kept_count

    def kept(self, start: int = 0) -> np.ndarray:
        return self._all[start:self.kept_count].copy()

    def __getattr__(self, name: str):  # rate, percentile, count, values: the pipeline's own meter
        return getattr(self.meter, name)


def _percentile(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


def _detector_only(cfg, args: argparse.Namespace) -> dict:
    """The detector on consecutive frames as the live path calls it (a fresh start, then frame after frame), frames
    from the same source as the pipeline's but as fast as they decode, each detection timed with nothing else
    running: what a frame costs the detector, apart from the pipeline's other threads."""
    from emocam.analyzer import FrameAnalyzer
    from emocam.backends import build_detector
    from emocam.daemon import build_source

    analyzer = FrameAnalyzer(build_detector(cfg), None, cfg.detector.max_side)
    n = max(1, round(args.seconds * args.fps))
    times, faces = np.zeros(n), 0
    source = build_source(cfg)
    source.open()
    try:
        for _ in range(10):  # warm-up: first calls allocate
            analyzer.detect(source.read().image)
        analyzer.detector.reset()
        for i in range(n):
            frame = source.read().image
            start = time.perf_counter()
            faces += len(analyzer.detect(frame))
            times[i] = time.perf_counter() - start
    finally:
        source.close()
    times *= 1000
    return {"source": str(args.source), "width": args.width, "height": args.height, "frames": n,
            "detector": cfg.detector.name, "max_side": cfg.detector.max_side,
            "torch_threads": cfg.runtime.torch_threads, "faces_mean": round(faces / n, 2),
            "detect_ms_mean": round(float(times.mean()), 2), "detect_ms_p50": _percentile(times, 50),
            "detect_ms_p95": _percentile(times, 95), "detect_ms_max": round(float(times.max()), 2)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _soak(pipeline, seconds: float, sample_s: float) -> list[dict]:
    """Samples of memory and rates; the first is taken after one interval (the model warm-up is over by then)."""
    rows, start = [], time.monotonic()
    last_out, last_inf, last_lat = pipeline.fps_out.count, pipeline.inference.count, pipeline.latency.kept_count
    while time.monotonic() - start < seconds:
        time.sleep(min(sample_s, max(0.0, seconds - (time.monotonic() - start))))
        out, inf, n_lat = pipeline.fps_out.count, pipeline.inference.count, pipeline.latency.kept_count
        window = pipeline.latency.kept(last_lat) * 1000 if n_lat > last_lat else np.zeros(1)
        rows.append({"t_s": round(time.monotonic() - start, 1), "rss_mb": round(_rss_mb(), 1),
                     "output_fps": round((out - last_out) / sample_s, 2),
                     "inference_hz": round((inf - last_inf) / sample_s, 2),
                     "latency_ms_p95": round(float(np.percentile(window, 95)), 2)})
        print(f"soak {rows[-1]}", file=sys.stderr, flush=True)
        last_out, last_inf, last_lat = out, inf, n_lat
    return rows


def _naive(pipeline, cfg, seconds: float) -> dict:
    """What a simple script does: read a frame, detect on it at full resolution, classify, draw, publish; repeat.
    The same video source, paced like a camera, so frames it has no time for are skipped."""
    import pyvirtualcam

    from emocam.analyzer import FrameAnalyzer
    from emocam.daemon import build_source

    # Maps too when the pipeline made them (the explainer classifies in the same pass).
    analyzer = FrameAnalyzer(pipeline.analyzer.detector, pipeline.explainer or pipeline.analyzer.classifier,
                             max_side=1 << 16)
    preset = pipeline.presets[cfg.output.preset]
    source = build_source(cfg)
    info = source.open()
    latencies, published = [], 0
    try:
        with pyvirtualcam.Camera(info.width, info.height, info.fps, fmt=pyvirtualcam.PixelFormat.BGR,
                                 backend=NULL_BACKEND) as cam:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                frame = source.read()
                if frame is None:
                    break
                analyzer.detector.reset()  # naive: a whole search on every frame, nothing carried over
                analysis = analyzer.analyze(frame.image, frame.index, frame.timestamp)
                scene = frame.image.copy()
                for annotator in preset.annotators:
                    annotator.annotate(scene, analysis)
                cam.send(scene)
                published += 1
                latencies.append(1000 * (time.monotonic() - frame.timestamp))
            wall = time.monotonic() - start
    finally:
        source.close()
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {"output_fps": round(published / wall, 2), "inference_hz": round(published / wall, 2),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 2)}
