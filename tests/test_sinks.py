"""Sinks: the real pyvirtualcam.Camera through a recording backend, real H.264 files, a real kill -9."""

from __future__ import annotations

import errno
import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import pyvirtualcam
from loguru import logger
from pydantic import ValidationError

import vcam_backend
from emocam.sinks import SINKS, OutputFrame, SinkContext, SinkError
from emocam.sinks.preview import PreviewSink
from emocam.sinks.recorder import RecorderSink, read_frame_log
from emocam.sinks.virtualcam import VirtualCamSink
from emocam.types import Analysis, Face

ROOT = Path(__file__).resolve().parents[1]
try:
    import av
except ImportError:  # the H.264 recorder needs it; the other sinks do not
    av = None
needs_av = pytest.mark.skipif(av is None, reason="H.264 recording needs PyAV (pip install av)")


def level_of(i: int) -> np.ndarray:
    """A colour per frame (B, G, R differ) that identifies it after lossy coding and catches colour-matrix mixups."""
    return np.array([(i * 37) % 200 + 20, (i * 53 + 90) % 200 + 20, (i * 71 + 40) % 200 + 20])


def image(i: int, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(i)  # noise, so the encoder has real work
    return (rng.integers(-15, 16, (height, width, 3)) + level_of(i)).astype(np.uint8)


def colour(img: np.ndarray) -> np.ndarray:
    return img.reshape(-1, 3).mean(axis=0)


def out_frame(i: int, width: int = 640, height: int = 360, analysis: bool = True) -> OutputFrame:
    face = Face(box=np.array([10, 20, 110, 140], np.float32), score=0.99,
                probs=np.array([0.1, 0, 0, 0.8, 0.1, 0, 0], np.float32))
    result = Analysis(frame_index=i, timestamp=100.0 + i / 30, size=(width, height), faces=(face,))
    return OutputFrame(image=image(i, width, height), index=i + 5, captured=100.0 + i / 30,
                       analysis=result if analysis and i % 2 == 0 else None, preset="boxes")


def context(tmp_path: Path, width: int = 640, height: int = 360, fps: float = 30.0) -> SinkContext:
    return SinkContext(width=width, height=height, fps=fps, session_dir=tmp_path / "session")


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


@pytest.fixture
def logs():
    messages: list = []
    sink_id = logger.add(messages.append, level="WARNING", format="{level} {message}")
    yield messages
    logger.remove(sink_id)


@pytest.fixture
def test_backend():
    vcam_backend.reset()
    yield vcam_backend
    vcam_backend.reset()


def test_registry_has_the_three_sinks_with_strict_options():
    assert {"virtualcam", "recorder", "preview"} <= set(SINKS.names())
    for name in ("virtualcam", "recorder", "preview"):
        with pytest.raises(ValidationError):
            SINKS.get(name).Options(colour="red")
    with pytest.raises(ValidationError, match="both width and height"):
        SINKS.get("virtualcam").Options(width=1280)
    with pytest.raises(ValidationError, match="both width and height"):
        SINKS.get("recorder").Options(height=720)


# --- virtual camera ---


def test_virtualcam_sends_exact_bgr_frames(tmp_path, test_backend):
    sink = VirtualCamSink(VirtualCamSink.Options(backend=test_backend.NAME))
    sink.open(context(tmp_path, 64, 48, 25))
    frames = [out_frame(i, 64, 48) for i in range(12)]
    for f in frames:
        sink.write(f)
    assert len(test_backend.SENT) == 12
    for f, sent in zip(frames, test_backend.SENT):
        assert (sent.width, sent.height, sent.fmt) == (64, 48, "BGR")
        np.testing.assert_array_equal(sent.image(), f.image)
    (cam,) = test_backend.OPENED
    assert cam.fps == 25
    assert sink.status() == {"device": test_backend.DEFAULT_DEVICE, "backend": test_backend.NAME, "size": [64, 48],
                             "fps": 25, "frames_sent": 12, "error": None}
    sink.close()
    sink.close()
    assert cam.closed == 1


def test_virtualcam_resizes_to_its_configured_size_and_device(tmp_path, test_backend):
    opts = VirtualCamSink.Options(backend=test_backend.NAME, device="/dev/video10", width=320, height=180, fps=15)
    sink = VirtualCamSink(opts)
    sink.open(context(tmp_path, 640, 360, 30))
    big = out_frame(1, 640, 360)
    sink.write(big)
    small = out_frame(2, 160, 90)  # e.g. the source was reopened at another size
    sink.write(small)
    sink.close()
    first, second = test_backend.SENT
    assert (first.width, first.height) == (320, 180)
    np.testing.assert_array_equal(first.image(), cv2.resize(big.image, (320, 180), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(second.image(), cv2.resize(small.image, (320, 180), interpolation=cv2.INTER_LINEAR))
    assert test_backend.OPENED[0].fps == 15
    assert sink.status()["device"] == "/dev/video10"


def test_virtualcam_write_is_not_paced_unless_asked(tmp_path, test_backend):
    for pace, fps in ((False, 10), (True, 40)):
        test_backend.reset()
        sink = VirtualCamSink(VirtualCamSink.Options(backend=test_backend.NAME, pace=pace))
        sink.open(context(tmp_path, 32, 24, fps))
        for i in range(6):
            sink.write(out_frame(i, 32, 24))
        sink.close()
        span = test_backend.SENT[-1].arrived - test_backend.SENT[0].arrived
        if pace:
            assert span >= 5 / 40 * 0.8  # sleep_until_next_frame spaced them
        else:
            assert span < 0.1  # unpaced at 10 fps would have taken 0.5 s


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="this machine has video devices")
@pytest.mark.parametrize("backend", [None, "v4l2loopback"])
def test_virtualcam_without_loopback_device_says_how_to_create_it(tmp_path, monkeypatch, backend):
    if sys.platform != "linux":
        pytest.skip("v4l2loopback is Linux only")
    # With backend None pyvirtualcam tries every registered backend, the test one included.
    monkeypatch.delitem(pyvirtualcam.camera.BACKENDS, vcam_backend.NAME, raising=False)
    with pytest.raises(SinkError) as err:
        VirtualCamSink(VirtualCamSink.Options(backend=backend)).open(context(tmp_path))
    message = str(err.value)
    assert "No v4l2 loopback device found" in message
    assert "sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=EmoCam exclusive_caps=1" in message
    assert "sudo apt install v4l2loopback-dkms" in message
    assert 'device = "/dev/video10"' in message
    assert "\n" not in message  # the CLI prints it as one line

    with pytest.raises(SinkError, match="/dev/video10 does not exist.*sudo modprobe"):
        VirtualCamSink(VirtualCamSink.Options(device="/dev/video10")).open(context(tmp_path))
    # a device that is there but no loopback (a real camera, say): no advice to create one
    with pytest.raises(SinkError, match=f"device {tmp_path} cannot be used .*v4l2-ctl --list-devices") as err:
        VirtualCamSink(VirtualCamSink.Options(device=str(tmp_path))).open(context(tmp_path))
    assert "modprobe" not in str(err.value)


def test_virtualcam_unknown_backend_lists_the_known_ones(tmp_path, test_backend):
    with pytest.raises(SinkError, match=f"'obs-studio' does not exist here; available: .*{test_backend.NAME}"):
        VirtualCamSink(VirtualCamSink.Options(backend="obs-studio")).open(context(tmp_path))


def test_virtualcam_send_failure_is_a_sink_error(tmp_path, test_backend):
    test_backend.reset(fail_on_send=3)
    sink = VirtualCamSink(VirtualCamSink.Options(backend=test_backend.NAME))
    sink.open(context(tmp_path, 32, 24))
    sink.write(out_frame(0, 32, 24))
    sink.write(out_frame(1, 32, 24))
    with pytest.raises(SinkError, match=r"/dev/video-emocam-test: sending frame 7 failed .*No such device"):
        sink.write(out_frame(2, 32, 24))
    status = sink.status()
    assert status["frames_sent"] == 2 and "No such device" in status["error"]
    sink.close()
    assert test_backend.OPENED[0].closed == 1


# --- recorder ---


@needs_av
def test_recorder_writes_playable_h264_and_a_matching_log(tmp_path):
    sink = RecorderSink(RecorderSink.Options(queue_seconds=3))  # room for all: this loop is not paced
    ctx = context(tmp_path)
    sink.open(ctx)
    frames = [out_frame(i) for i in range(60)]
    for f in frames:
        sink.write(f)
    sink.close()
    sink.close()

    video = ctx.session_dir / "session.mp4"
    decoded = decode(video)
    assert len(decoded) == 60
    assert decoded[0].shape == (360, 640, 3)
    for i, img in enumerate(decoded):
        assert np.abs(colour(img) - level_of(i)).max() < 4, f"frame {i}: {colour(img)} != {level_of(i)}"
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        keyframes = sum(p.is_keyframe for p in container.demux(video=0) if p.size)
    assert keyframes == 2  # one per second at 30 fps
    assert b"moof" in video.read_bytes()  # fragmented: playable without a trailer

    records = read_frame_log(ctx.session_dir / "frames.jsonl")
    assert [r["frame"] for r in records] == list(range(60))
    assert [r["source_frame"] for r in records] == [f.index for f in frames]
    assert all(r["preset"] == "boxes" and r["captured"] == round(f.captured, 6) for r, f in zip(records, frames))
    assert records[0]["analysis"] == frames[0].analysis.to_json()
    assert records[1]["analysis"] is None
    written = [r["written"] for r in records]
    assert written == sorted(written)

    status = sink.status()
    assert status["frames_written"] == 60 and status["frames_dropped"] == 0 and status["error"] is None
    assert status["bytes"] == video.stat().st_size > 0


@needs_av
def test_recorder_records_at_its_configured_even_size(tmp_path):
    sink = RecorderSink(RecorderSink.Options(width=320, height=180))
    ctx = context(tmp_path, 641, 361)
    sink.open(ctx)
    for i in range(5):
        sink.write(out_frame(i, 641, 361))
    sink.close()
    assert {img.shape for img in decode(ctx.session_dir / "session.mp4")} == {(180, 320, 3)}

    odd = RecorderSink()  # ctx size, made even for yuv420p
    ctx = context(tmp_path / "odd", 641, 361)
    odd.open(ctx)
    for i in range(3):
        odd.write(out_frame(i, 641, 361))
    odd.close()
    assert [img.shape for img in decode(ctx.session_dir / "session.mp4")] == [(360, 640, 3)] * 3


def test_recorder_mjpg_fallback_writes_avi(tmp_path):
    sink = RecorderSink(RecorderSink.Options(codec="mjpg"))
    ctx = context(tmp_path, 320, 180)
    sink.open(ctx)
    for i in range(20):
        sink.write(out_frame(i, 320, 180))
    sink.close()
    cap = cv2.VideoCapture(str(ctx.session_dir / "session.avi"))
    colours = []
    while (ok_img := cap.read())[0]:
        colours.append(colour(ok_img[1]))
    cap.release()
    assert len(colours) == 20
    assert all(np.abs(got - level_of(i)).max() < 4 for i, got in enumerate(colours))
    assert len(read_frame_log(ctx.session_dir / "frames.jsonl")) == 20


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from emocam.sinks import OutputFrame, SinkContext
    from emocam.sinks.recorder import RecorderSink
    sink = RecorderSink()
    sink.open(SinkContext(width=320, height=180, fps=30.0, session_dir=Path(sys.argv[1])))
    rng = np.random.default_rng(0)
    start = time.monotonic()
    for i in range(100000):  # until killed, at 30 fps like the publish thread
        img = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
        sink.write(OutputFrame(image=img, index=i, captured=time.monotonic(), analysis=None, preset="none"))
        time.sleep(max(0.0, start + (i + 1) / 30 - time.monotonic()))
""")


@needs_av
def test_recorder_killed_mid_way_leaves_a_playable_file(tmp_path):
    session = tmp_path / "session"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "child.log", "wb") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(session)], stdout=err, stderr=err, env=env)
        log = session / "frames.jsonl"
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline and child.poll() is None:
                if log.is_file() and log.read_bytes().count(b"\n") >= 75:  # 2.5 s recorded
                    break
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()

    records = read_frame_log(log)
    assert len(records) >= 75
    assert [r["frame"] for r in records] == list(range(len(records)))
    decoded = decode(session / "session.mp4")
    # Everything up to the last keyframe before the kill survives: at most ~1 s (plus the queue) is lost.
    assert len(records) - 60 <= len(decoded) <= len(records)
    assert decoded[0].shape == (180, 320, 3)


def test_read_frame_log_skips_only_a_torn_last_line(tmp_path):
    path = tmp_path / "frames.jsonl"
    path.write_text('{"frame": 0}\n{"frame": 1}\n{"fra')
    assert read_frame_log(path) == [{"frame": 0}, {"frame": 1}]
    path.write_text('{"frame": 0}\n{"frame": 1}')  # killed before the newline
    assert read_frame_log(path) == [{"frame": 0}, {"frame": 1}]
    path.write_text('{"frame": 0}\n{"fra\n{"frame": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_frame_log(path)


@needs_av
def test_slow_encoder_drops_frames_and_never_blocks_write(tmp_path, logs):
    sink = RecorderSink(RecorderSink.Options(queue_seconds=0.1))  # 3 frames of room at 30 fps
    encode = sink._encode

    def slow_encode(img, t):
        time.sleep(0.03)
        encode(img, t)

    sink._encode = slow_encode
    ctx = context(tmp_path, 160, 90)
    sink.open(ctx)
    slowest = 0.0
    for i in range(40):
        frame = out_frame(i, 160, 90)
        t0 = time.perf_counter()
        sink.write(frame)
        slowest = max(slowest, time.perf_counter() - t0)
    dropped = sink.status()["frames_dropped"]
    sink.close()

    assert slowest < 0.01  # a blocked put would take one slow encode, 30 ms
    status = sink.status()
    assert dropped > 20 and status["frames_dropped"] == dropped
    assert status["frames_written"] + dropped == 40
    assert len(decode(ctx.session_dir / "session.mp4")) == status["frames_written"]
    assert len(read_frame_log(ctx.session_dir / "frames.jsonl")) == status["frames_written"]
    warnings = [m for m in logs if "falls behind" in m]
    assert len(warnings) == 1 and "frames dropped so far: 1." in warnings[0]  # logged at the first drop only


@needs_av
def test_disk_full_stops_recording_with_one_clear_error(tmp_path, logs):
    sink = RecorderSink(RecorderSink.Options(queue_seconds=3))
    encode = sink._encode
    calls = []

    def fills_the_disk(img, t):
        calls.append(t)
        if len(calls) > 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        encode(img, t)

    sink._encode = fills_the_disk
    ctx = context(tmp_path, 160, 90)
    sink.open(ctx)
    for i in range(60):
        sink.write(out_frame(i, 160, 90))
    deadline = time.monotonic() + 10
    while sink.status()["error"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.write(out_frame(60, 160, 90))  # after the failure writes are ignored, not raised
    sink.close()
    sink.close()

    errors = [m for m in logs if m.startswith("ERROR")]
    assert len(errors) == 1
    assert "disk full, recording stopped (what reached" in errors[0] and "up to 30 frames" in errors[0]
    assert "Free space on the disk" in errors[0]
    assert sink.status()["error"] == "disk full" and sink.status()["frames_written"] == 30
    assert len(calls) == 31
    assert len(decode(ctx.session_dir / "session.mp4")) == 30
    assert len(read_frame_log(ctx.session_dir / "frames.jsonl")) == 30


@needs_av
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_real_enospc_from_the_muxer_is_reported_as_disk_full(tmp_path, logs):
    ctx = context(tmp_path, 160, 90)
    ctx.session_dir.mkdir()
    (ctx.session_dir / "session.mp4").symlink_to("/dev/full")  # every write fails with ENOSPC
    sink = RecorderSink()
    sink.open(ctx)
    for i in range(5):
        sink.write(out_frame(i, 160, 90))
    sink.close()
    assert sink.status()["error"] == "disk full"
    assert sum("disk full" in m for m in logs) == 1


def test_an_encoder_that_does_not_start_leaves_no_files_and_says_what_to_do(tmp_path, monkeypatch):
    import emocam.sinks.recorder as recorder

    class BrokenBuild:  # a PyAV without libx264 raises its own error types, not OSError
        suffix = ".mp4"

        def __init__(self, path, *args):
            path.write_bytes(b"")  # av.open has already made the file
            raise ValueError("Unknown encoder 'libx264'")

    monkeypatch.setitem(recorder.WRITERS, "h264", BrokenBuild)
    ctx = context(tmp_path)
    sink = RecorderSink()
    with pytest.raises(SinkError, match=r"h264 encoder does not start \(ValueError: Unknown encoder 'libx264'\); "
                                        r"install PyAV .* or set \[sinks.recorder\] codec = \"mjpg\""):
        sink.open(ctx)
    assert list(ctx.session_dir.iterdir()) == []
    assert sink._log is None


def test_recorder_close_before_open_is_harmless():
    sink = RecorderSink()
    sink.close()
    sink.write(out_frame(0, 32, 24))
    assert sink.status()["frames_written"] == 0


# --- preview ---


def test_preview_without_display_fails_at_open(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    sink = PreviewSink()
    assert sink.quit_requested is False
    with pytest.raises(SinkError, match="no display for the preview window .*DISPLAY and WAYLAND_DISPLAY are unset"):
        sink.open(context(tmp_path))
    sink.close()


@pytest.mark.skipif(sys.platform != "linux" or os.path.exists("/tmp/.X11-unix/X87"), reason="needs no X display :87")
def test_preview_with_unreachable_display_fails_without_killing_us(tmp_path, monkeypatch):
    # OpenCV's Qt backend aborts the process here; the sink probes in a subprocess so this raises instead.
    monkeypatch.setenv("DISPLAY", ":87")
    with pytest.raises(SinkError, match="cannot open a window on :87"):
        PreviewSink(PreviewSink.Options(scale=0.5)).open(context(tmp_path))


@needs_av
def test_second_recording_in_a_session_never_overwrites_the_first(tmp_path):
    ctx = context(tmp_path)
    for n in (6, 4):  # record stop, then record start again (OBS `record` commands)
        rec = RecorderSink()
        rec.open(ctx)
        for i in range(n):
            rec.write(out_frame(i))
        rec.close()
    assert len(decode(ctx.session_dir / "session.mp4")) == 6
    assert len(decode(ctx.session_dir / "session-2.mp4")) == 4
    assert len(read_frame_log(ctx.session_dir / "frames.jsonl")) == 6
    assert len(read_frame_log(ctx.session_dir / "frames-2.jsonl")) == 4
