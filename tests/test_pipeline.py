"""The live pipeline end to end: demo source -> real models -> overlays -> real pyvirtualcam Camera + recorder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

import vcam_backend
from obs_server import end_process, start_xvfb
from emocam.config import load_config
from emocam.control import Control, ControlState
from emocam.daemon import build_pipeline, run_daemon
from emocam.pipeline import Backoff, Pipeline
from emocam.presets import load_presets
from emocam.render.colors import face_color
from emocam.sinks import SINKS, Sink
from emocam.sinks.recorder import read_frame_log
from emocam.sources import SourceLost, SourceUnavailable
from emocam.sources.demo import DemoOptions, DemoSource, demo_face_box

ROOT = Path(__file__).resolve().parents[1]


class Collector(Sink):
    """Keeps every OutputFrame, to look at pixels and at the analysis each one was drawn with."""

    name = "collector"

    def open(self, ctx):
        self.ctx = ctx
        self.frames = []

    def write(self, frame):
        self.frames.append(frame)


def demo_config(tmp_path, frames=45, extra=()):
    return load_config(ROOT / "config.toml", [
        "source.name=demo", f"source.demo.frames={frames}", "sinks.enabled=[\"virtualcam\", \"recorder\"]",
        f"sinks.virtualcam.backend=\"{vcam_backend.NAME}\"", f"session.root=\"{tmp_path / 'sessions'}\"",
        'sinks.on_error="exit"', *extra])


def run_to_end(pipeline: Pipeline, timeout: float = 30) -> None:
    pipeline.start()
    assert pipeline.wait(timeout), "pipeline did not finish"
    pipeline.close()


@pytest.fixture
def demo_run(tmp_path, models_dir):
    vcam_backend.reset()
    cfg = demo_config(tmp_path)
    pipeline = build_pipeline(cfg)
    collector = Collector()
    pipeline.sinks.append(collector)
    run_to_end(pipeline)
    return pipeline, collector


def test_virtual_camera_gets_every_frame_at_camera_pace(demo_run):
    pipeline, collector = demo_run
    sent = vcam_backend.SENT
    # Publishing costs far less than a frame interval, so no frame of the 30 fps source is skipped.
    assert len(sent) == len(collector.frames) == pipeline.fps_out.count
    assert len(sent) >= 43
    assert {(s.width, s.height, s.fmt) for s in sent} == {(1280, 720, "BGR")}
    gaps = np.diff([s.arrived for s in sent])
    assert 0.028 < float(np.median(gaps)) < 0.040
    # What the camera received is what was rendered, pixel for pixel.
    np.testing.assert_array_equal(sent[-1].image(), collector.frames[-1].image)


def test_overlays_are_drawn_where_the_face_is(demo_run):
    _, collector = demo_run
    drawn = [f for f in collector.frames if f.analysis is not None and f.analysis.faces]
    assert len(drawn) >= 0.8 * len(collector.frames)
    for out in drawn[::10]:
        face = out.analysis.faces[0]
        truth = demo_face_box(out.analysis.frame_index, 1280, 720)
        # The analysed box is the demo's face...
        ix = np.clip(np.minimum(face.box[2:], truth[2:]) - np.maximum(face.box[:2], truth[:2]), 0, None).prod()
        union = np.prod(face.box[2:] - face.box[:2]) + np.prod(truth[2:] - truth[:2]) - ix
        assert ix / union > 0.6
        # ...and the rectangle is drawn on it, in the colour of the predicted emotion.
        x1, y1, x2, y2 = face.box.round().astype(int)
        top_edge = out.image[y1, x1 + 5:x2 - 5].astype(int)
        colour = np.array(face_color(face))
        assert np.mean(np.abs(top_edge - colour).sum(axis=1) < 60) > 0.8
        # A probability bar panel sits beside the face: darker than the raw frame there.
        assert out.image[y1 + 5:y1 + 20, x2 + 20:x2 + 60].mean() < 120


def test_status_reports_detection_and_classification_times(demo_run):
    pipeline, _ = demo_run
    status = json.loads(json.dumps(pipeline.status()))  # as the daemon writes it for `emocam status`
    for stage in ("detect_ms", "classify_ms"):
        assert 0 < status[stage]["p50"] <= status[stage]["p95"]
    # One duration per analysed frame that ran the stage: the demo face is found in most of them.
    assert 0.8 * pipeline.inference.count <= pipeline.classify_time.count <= pipeline.detect_time.count
    assert pipeline.detect_time.count <= pipeline.inference.count


def test_recording_decodes_to_the_frames_written_and_log_matches(demo_run):
    pipeline, collector = demo_run
    session = pipeline.session_dir
    with av.open(str(session / "session.mp4")) as container:
        decoded = [f for f in container.decode(video=0)]
    log = read_frame_log(session / "frames.jsonl")
    recorder = next(s for s in [*pipeline.sinks] if s.name == "recorder")
    written = recorder.status()["frames_written"]
    assert len(decoded) == len(log) == written
    assert written >= len(collector.frames) - 2
    assert (decoded[0].width, decoded[0].height) == (1280, 720)
    assert [r["source_frame"] for r in log] == sorted(r["source_frame"] for r in log)
    with_faces = [r for r in log if r["analysis"] and r["analysis"]["faces"]]
    assert len(with_faces) >= 0.8 * len(log)
    assert with_faces[-1]["analysis"]["faces"][0]["label"] == "happy"
    assert {r["preset"] for r in log} == {"emotions"}


class FlakySource(DemoSource):
    """The demo, unplugged after 15 frames; two reopen attempts fail, then it is back."""

    name = "flaky"

    def __init__(self):
        super().__init__(DemoOptions(frames=None))
        self.reads = 0
        self.failures_left = 2
        self.opens = 0

    def open(self):
        self.opens += 1
        if self.opens > 1 and self.failures_left:
            self.failures_left -= 1
            raise SourceUnavailable("still unplugged")
        return super().open()

    def read(self):
        self.reads += 1
        if self.reads == 15:
            raise SourceLost("device vanished")
        return super().read()


def run_through_a_loss(source: FlakySource, tmp_path, until) -> tuple[Pipeline, list]:
    """The source without analysis, reconnecting with a short backoff, until until(pipeline) or 10 s."""
    collector = Collector()
    pipeline = Pipeline(source, None, [collector], load_presets(ROOT / "overlays"), ControlState(Control("clean")),
                        tmp_path)
    pipeline.reconnect_backoff = lambda: Backoff(first_s=0.1, max_s=0.2)
    pipeline.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not until(pipeline, collector.frames):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        pipeline.close()
    return pipeline, collector.frames


def test_camera_lost_keeps_publishing_and_recovers(tmp_path):
    vcam_backend.reset()
    source = FlakySource()
    pipeline, frames = run_through_a_loss(source, tmp_path, lambda p, frames: source.opens >= 4 and len(frames) > 40)
    flags = [bool(f.image.mean() < 60) for f in frames]  # 'lost' frames are the last picture darkened
    first_lost = flags.index(True)
    assert 13 <= first_lost <= 16
    back = flags.index(False, first_lost)
    assert back > first_lost + 2, "lost frames were published while reconnecting"
    assert source.opens == 4 and pipeline.source_state == "running"
    assert len(frames) - back > 5, "capture resumed"
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)), "frame numbers keep increasing across the reconnect"


class SlowToReopen(FlakySource):
    """Back at the first retry, but its open takes a second: a rebooting IP camera that accepts the connection
    and sends nothing until its open timeout."""

    def open(self):
        if self.opens >= 1:
            time.sleep(1.0)
        self.failures_left = 0
        return super().open()


def test_a_slow_reopen_does_not_freeze_the_output(tmp_path):
    source = SlowToReopen()
    pipeline, frames = run_through_a_loss(source, tmp_path,
                                          lambda p, frames: source.opens >= 2 and p.source_state == "running")
    assert source.opens == 2 and pipeline.source_state == "running"
    arrived = [f.captured for f in frames]
    assert max(np.diff(arrived)) < 0.5  # lost frames kept coming at the source's rate through the 1 s open


def run_cli(tmp_path, *args, env=(), **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1", EMOCAM_MODELS=str(ROOT / "models"), **dict(env))
    return subprocess.Popen([sys.executable, "-m", "emocam", "--config", str(ROOT / "config.toml"),
                             "--set", f"session.root=\"{tmp_path / 'sessions'}\"",
                             "--set", f"daemon.status_file=\"{tmp_path / 'status.json'}\"", *args],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigterm_stops_cleanly_and_leaves_a_playable_recording(tmp_path, models_dir):
    proc = run_cli(tmp_path, "run", "--source", "demo", "--no-vcam", "--record")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = tmp_path / "status.json"
            if status.exists() and json.loads(status.read_text()).get("frames_out", 0) > 45:
                break
            time.sleep(0.1)
        else:
            pytest.fail("daemon did not start publishing")
        status_out = subprocess.run([sys.executable, "-m", "emocam", "--set",
                                     f"daemon.status_file=\"{tmp_path / 'status.json'}\"", "status", "--json"],
                                    cwd=tmp_path, capture_output=True, text=True, timeout=30)
        doc = json.loads(status_out.stdout)
        assert status_out.returncode == 0 and doc["state"] == "running"
        assert doc["source"]["name"] == "demo" and doc["preset"] == "emotions"
        assert doc["sinks"]["recorder"]["state"] == "running"
        human = subprocess.run([sys.executable, "-m", "emocam", "--set",
                                f"daemon.status_file=\"{tmp_path / 'status.json'}\"", "status"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=30).stdout
        assert "source   demo [running]" in human and "stages   detect p50 " in human
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    (session,) = (tmp_path / "sessions").iterdir()
    with av.open(str(session / "session.mp4")) as container:
        n = sum(1 for _ in container.decode(video=0))
    assert n == len(read_frame_log(session / "frames.jsonl")) and n > 45
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "stopped"


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (apt-get install xvfb)")
def test_preview_window_never_holds_up_the_published_frames(tmp_path, models_dir):
    # Qt's HighGUI makes a call from another thread wait for the window's own: before the window had a thread of
    # its own, the publish thread hung on the first frame, starving the virtual camera and the recorder too.
    xvfb, display = start_xvfb(tmp_path / "xvfb.log")
    try:
        proc = run_cli(tmp_path, "run", "--source", "demo", "--no-vcam", "--record", "--preview", "--seconds", "4",
                       env={"DISPLAY": display, "QT_QPA_PLATFORM": "xcb"})
        _, err = proc.communicate(timeout=90)
    finally:
        end_process(xvfb)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["frames_out"] >= 60  # a 30 fps source for 4 s
    assert status["sinks"]["recorder"]["frames_written"] == status["frames_out"]
    assert 30 <= status["sinks"]["preview"]["frames_shown"] <= status["frames_out"]


@SINKS.register("test-quit-after-5")
class QuitAfterFive(Collector):
    """Asks to end the run after five frames, as a closed preview window does."""

    @property
    def stop_requested(self):
        return len(self.frames) >= 5


def test_a_sink_can_end_the_run(tmp_path):
    cfg = load_config(ROOT / "config.toml", [
        "source.name=demo", "source.demo.frames=300", 'sinks.enabled=["test-quit-after-5"]',
        f"session.root=\"{tmp_path / 'sessions'}\"", f"daemon.status_file=\"{tmp_path / 'status.json'}\""])
    started = time.monotonic()
    assert run_daemon(cfg, seconds=60) == 0
    assert time.monotonic() - started < 30  # not the 10 s of the demo's 300 frames, nor the 60 s limit
    assert 5 <= json.loads((tmp_path / "status.json").read_text())["frames_out"] < 100


def test_an_unwritable_status_file_neither_stops_the_daemon_nor_loses_the_recording(tmp_path, models_dir):
    (tmp_path / "taken").write_text("a file where the status folder should be")
    cfg = load_config(ROOT / "config.toml", [
        "source.name=demo", "source.demo.frames=20", 'sinks.enabled=["recorder"]',
        f"session.root=\"{tmp_path / 'sessions'}\"", f"daemon.status_file=\"{tmp_path / 'taken' / 'status.json'}\""])
    assert run_daemon(cfg, seconds=60) == 0
    (session,) = (tmp_path / "sessions").iterdir()
    assert len(read_frame_log(session / "frames.jsonl")) == 20


def test_a_failing_analysis_hook_does_not_end_analysis(tmp_path, models_dir):
    pipeline = build_pipeline(demo_config(tmp_path, frames=30, extra=['sinks.enabled=[]']))
    calls = []

    def flaky_exporter(frame, analysis):
        calls.append(frame.index)
        if len(calls) == 1:
            raise OSError("disk full")

    pipeline.analysis_hooks.append(flaky_exporter)
    run_to_end(pipeline)
    assert len(calls) >= 2
    assert pipeline.status()["hook_errors"] == {"analysis hook " + flaky_exporter.__qualname__: 1}


@pytest.mark.parametrize("video", ["pyfeat_single_face.mp4", "fer_test.mp4", "pyfeat_noface_face.mov"])
def test_shared_videos_are_recorded_with_tracked_faces(tmp_path, data_dir, models_dir, video):
    proc = run_cli(tmp_path, "run", "--source", str(data_dir / "eval" / "videos" / video), "--no-vcam", "--record")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    (session,) = (tmp_path / "sessions").iterdir()
    log = read_frame_log(session / "frames.jsonl")
    assert len(log) > 30
    has_face = [bool(r["analysis"] and any("track_id" in f for f in r["analysis"]["faces"])) for r in log]
    if video == "pyfeat_noface_face.mov":  # a cartoon first (about 3 s), then a man in webcam framing
        assert not any(has_face[:60]) and all(has_face[-40:])
    else:
        assert sum(has_face) > 0.5 * len(log)
    ids = {f["track_id"] for r in log if r["analysis"] for f in r["analysis"]["faces"]}
    assert len(ids) <= 3, f"one person should keep (nearly) one identity, got {ids}"


class CorruptEveryTenth(DemoSource):
    """The demo with a broken frame now and then, as a flaky USB camera or a damaged file delivers them."""

    name = "corrupt"

    def read(self):
        frame = super().read()
        if frame is not None and frame.index % 10 == 5:
            return replace(frame, image=frame.image[:, :, 0])  # a gray plane where BGR was promised
        return frame


class Broken(Sink):
    name = "broken"

    def open(self, ctx):
        pass

    def write(self, frame):
        raise RuntimeError("bug in a sink")


def test_corrupt_frames_and_a_broken_overlay_do_not_stop_the_video(tmp_path):
    from emocam.presets import Preset
    from emocam.render.boxes import BoxAnnotator

    class Exploding(BoxAnnotator):
        name = "exploding"

        def annotate(self, scene, analysis, info=None):
            raise ValueError("overlay bug")

    presets = {"p": Preset("p", "", (Exploding(),))}
    collector = Collector()
    pipeline = Pipeline(CorruptEveryTenth(DemoOptions(frames=40)), None, [Broken(), collector], presets,
                        ControlState(Control("p")), tmp_path)
    run_to_end(pipeline)
    assert len(collector.frames) >= 34  # 36 good frames; the output went on after every fault
    assert pipeline.frames_corrupt == 4
    status = pipeline.status()
    assert status["render_errors"] == {"annotator exploding": len(collector.frames)}
    assert status["sinks"]["broken"]["state"] == "failed" and "bug in a sink" in status["sinks"]["broken"]["error"]
