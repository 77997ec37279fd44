"""Frame sources: camera lookup (no camera here: a fake sysfs tree and a fake capture), video, images, url, demo."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from emocam.devices import DeviceNotFound, describe_devices, find_device, list_devices, resolve_device
from emocam.sources import SOURCES, SourceLost, SourceUnavailable
from emocam.sources import camera as camera_module
from emocam.sources.camera import CameraOptions, CameraSource
from emocam.sources.demo import ASTRONAUT_FACE, CYCLE, DemoOptions, DemoSource, demo_face_box, placement
from emocam.sources.images import ImagesOptions, ImagesSource
from emocam.sources.url import UrlOptions, UrlSource, redact
from emocam.sources.video import VideoOptions, VideoSource

SINGLE = "eval/videos/pyfeat_single_face.mp4"  # 72 frames, 640x360, 30 fps
MOV = "eval/videos/pyfeat_noface_face.mov"  # 169 frames, 960x540


def read_all(source, limit: int = 10_000) -> list:
    frames = []
    while len(frames) < limit and (frame := source.read()) is not None:
        frames.append(frame)
    return frames


# ---------------------------------------------------------------- registry and options


def test_all_sources_registered_with_strict_documented_options():
    assert {"camera", "video", "images", "url", "demo"} <= set(SOURCES.names())
    for name in ("camera", "video", "images", "url", "demo"):
        options = SOURCES.get(name).Options
        options()  # every field has a default
        assert all(field.description for field in options.model_fields.values()), name
        with pytest.raises(ValidationError):
            options(no_such_option=1)


# ---------------------------------------------------------------- devices and camera


@pytest.fixture
def fake_v4l(tmp_path, monkeypatch):
    """A sysfs tree like a laptop with a built-in camera, a BRIO on USB (two nodes each) and a loopback device."""
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    for number, name, index, physical in [
        (0, "Integrated Camera: Integrated C", 0, True),
        (1, "Integrated Camera: Integrated C", 1, True),
        (2, "Logitech BRIO", 0, True),
        (3, "Logitech BRIO", 1, True),
        (10, "EmoCam", 0, False),
    ]:
        entry = sysfs / "class" / "video4linux" / f"video{number}"
        entry.mkdir(parents=True)
        (entry / "name").write_text(name + "\n")
        (entry / "index").write_text(f"{index}\n")
        if physical:
            (entry / "device").mkdir()
    monkeypatch.setenv("EMOCAM_SYSFS", str(sysfs))
    monkeypatch.setenv("EMOCAM_DEV", str(dev))
    return dev


def test_list_devices_reads_names_nodes_and_loopbacks(fake_v4l):
    (fake_v4l / "video2").touch()
    devices = list_devices()
    assert [d.number for d in devices] == [0, 1, 2, 3, 10]
    brio = devices[2]
    assert (brio.name, brio.path, brio.node_index, brio.virtual, brio.present) == (
        "Logitech BRIO", str(fake_v4l / "video2"), 0, False, True,
    )
    assert devices[3].node_index == 1 and not devices[3].is_capture_node
    assert devices[4].virtual and not devices[0].present
    assert devices[4].to_json()["virtual"] is True


def test_resolve_device_by_index_path_and_name(fake_v4l):
    devices = list_devices()
    assert resolve_device(2, devices) == str(fake_v4l / "video2")
    assert resolve_device("3", devices) == str(fake_v4l / "video3")
    assert resolve_device("/dev/v4l/by-id/usb-cam-video-index0", devices) == "/dev/v4l/by-id/usb-cam-video-index0"
    # A part of the name picks the capture node, not the metadata node with the same name.
    assert resolve_device("brio", devices) == str(fake_v4l / "video2")
    assert resolve_device("Integrated Camera", devices) == str(fake_v4l / "video0")
    assert resolve_device("emocam", devices) == str(fake_v4l / "video10")
    with pytest.raises(DeviceNotFound, match="Sony"):
        resolve_device("Sony", devices)
    assert find_device(str(fake_v4l / "video2"), devices).name == "Logitech BRIO"


def test_no_cameras_message(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOCAM_SYSFS", str(tmp_path / "sys"))
    monkeypatch.setenv("EMOCAM_DEV", str(tmp_path / "dev"))
    assert list_devices() == []
    with pytest.raises(SourceUnavailable, match=r"no cameras found \(no /dev/video\*\).*plugged in"):
        CameraSource().open()
    assert "--device /dev/video0" in describe_devices([])


def test_missing_camera_lists_the_cameras_found(fake_v4l):
    with pytest.raises(SourceUnavailable) as err:
        CameraSource(CameraOptions(device="Sony")).open()
    message = str(err.value)
    assert "no camera named 'Sony'" in message and "'Logitech BRIO'" in message and "'EmoCam' [virtual" in message
    with pytest.raises(SourceUnavailable, match=r"video2: no such camera.*BRIO' \[no device node here\]"):
        CameraSource(CameraOptions(device="BRIO")).open()


def test_a_node_that_is_not_a_camera_is_unavailable(fake_v4l):
    (fake_v4l / "video2").write_bytes(b"not a device")
    with pytest.raises(SourceUnavailable, match="could not open it as a V4L2 camera"):
        CameraSource(CameraOptions(device=2)).open()


class FakeCapture:
    """Stands in for cv2.VideoCapture on a camera that negotiates `gives` and then delivers `frames` frames."""

    instances: list["FakeCapture"] = []

    def __init__(self, path, api, gives=("MJPG", 1920, 1080, 30.0), frames=3):
        self.path, self.api, self.gives, self.left = path, api, gives, frames
        self.sets: list[tuple[int, float]] = []
        self.released = False
        FakeCapture.instances.append(self)

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.sets.append((prop, value))
        return True

    def get(self, prop):
        fourcc, width, height, fps = self.gives
        return {cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*fourcc)), cv2.CAP_PROP_FPS: fps}.get(prop, 0.0)

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((self.gives[2], self.gives[1], 3), np.uint8)

    def release(self):
        self.released = True


def test_camera_negotiates_reads_loses_and_reopens(fake_v4l, monkeypatch):
    (fake_v4l / "video2").touch()
    FakeCapture.instances = []
    monkeypatch.setattr(camera_module.cv2, "VideoCapture", FakeCapture)
    source = CameraSource(CameraOptions(device="BRIO"))
    info = source.open()
    cap = FakeCapture.instances[-1]
    assert cap.path == str(fake_v4l / "video2") and cap.api == cv2.CAP_V4L2
    assert cap.sets[0] == (cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
    assert (cv2.CAP_PROP_BUFFERSIZE, 2) in cap.sets
    assert (info.width, info.height, info.fps) == (1920, 1080, 30.0)
    assert info.description.endswith("'Logitech BRIO' MJPG 1920x1080 @ 30.0")
    # open() spent one of the 3 frames checking that the camera streams.
    assert [source.read().index, source.read().index] == [0, 1]
    with pytest.raises(SourceLost, match="stopped delivering"):
        source.read()
    source.close()
    assert cap.released
    source.open()
    assert source.read().index == 2  # indices keep growing across a reconnect


def test_camera_reports_what_it_got_not_what_was_asked(fake_v4l, monkeypatch):
    (fake_v4l / "video0").touch()
    monkeypatch.setattr(
        camera_module.cv2, "VideoCapture", functools.partial(FakeCapture, gives=("YUYV", 1280, 720, 10.0))
    )
    info = CameraSource().open()
    assert (info.width, info.height, info.fps) == (1280, 720, 10.0)
    assert "YUYV 1280x720 @ 10.0" in info.description


# ---------------------------------------------------------------- video


def test_video_fast_delivers_every_frame_once(data_dir):
    source = VideoSource(VideoOptions(path=data_dir / SINGLE, pacing="fast"))
    info = source.open()
    assert (info.width, info.height, info.fps) == (640, 360, 30.0)
    frames = read_all(source)
    assert [f.index for f in frames] == list(range(72))
    assert all(f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(a.timestamp <= b.timestamp for a, b in zip(frames, frames[1:]))
    assert source.read() is None and source.read() is None
    source.close()


def test_video_mov_and_resize(data_dir):
    source = VideoSource(VideoOptions(path=data_dir / MOV, pacing="fast"))
    assert len(read_all(source)) == 0  # not opened yet
    info = source.open()
    assert (info.width, info.height) == (960, 540)
    assert len(read_all(source)) == 169
    source = VideoSource(VideoOptions(path=data_dir / SINGLE, pacing="fast", width=1920, height=1080))
    assert "resized from 640x360" in source.open().description
    assert source.read().image.shape == (1080, 1920, 3)
    source = VideoSource(VideoOptions(path=data_dir / SINGLE, pacing="fast", height=720))
    assert (source.open().width, source.read().image.shape) == (1280, (720, 1280, 3))


def test_video_loop_keeps_indices_growing(data_dir):
    source = VideoSource(VideoOptions(path=data_dir / SINGLE, pacing="fast", loop=True))
    source.open()
    frames = read_all(source, limit=80)
    assert [f.index for f in frames] == list(range(80))
    assert np.array_equal(frames[72].image, frames[0].image)
    assert np.array_equal(frames[79].image, frames[7].image)


def test_video_realtime_paces_at_fps(data_dir):
    source = VideoSource(VideoOptions(path=data_dir / SINGLE, fps=60.0))
    assert source.open().fps == 60.0
    started = time.monotonic()
    frames = read_all(source, limit=31)
    elapsed = time.monotonic() - started
    assert 0.4 < frames[-1].timestamp - frames[0].timestamp < 1.5  # 30 periods of 1/60 s; generous when busy
    assert 0.4 < elapsed < 2.0
    assert [f.index for f in frames] == list(range(31))


def test_video_realtime_skips_ahead_when_the_reader_is_late(data_dir):
    reference = VideoSource(VideoOptions(path=data_dir / SINGLE, pacing="fast"))
    reference.open()
    expected = [f.image for f in read_all(reference)]
    source = VideoSource(VideoOptions(path=data_dir / SINGLE, fps=50.0))
    source.open()
    source.read()
    time.sleep(0.3)  # 15 periods late
    frame = source.read()
    assert frame.index == 1  # indices count delivered frames
    assert 10 <= source.dropped <= 50
    assert np.array_equal(frame.image, expected[1 + source.dropped])  # the frame due now, not the next one
    started = time.monotonic()
    for _ in range(3):
        source.read()
    assert time.monotonic() - started > 0.03  # no burst to catch up: 3 more frames take 2-3 periods


def test_video_that_decodes_slower_than_it_plays_does_not_fall_further_behind(data_dir):
    # stepping over a frame costs as much as decoding it: skipping to catch up used to drop 0, 2, 7, 17, 37, 75...
    source = VideoSource(VideoOptions(path=data_dir / SINGLE, fps=120.0, loop=True))
    source.open()
    advance = source._advance

    def slow_decoder(keep):
        time.sleep(0.015)  # longer than the 8.3 ms a frame lasts at 120 fps
        return advance(keep)

    source._advance = slow_decoder
    frames = [source.read() for _ in range(8)]
    assert all(f is not None for f in frames)
    assert source.dropped <= 4  # it plays as fast as it decodes instead


def test_video_mjpeg_emulation_decodes_what_was_encoded(data_dir):
    plain = VideoSource(VideoOptions(path=data_dir / SINGLE, pacing="fast", width=1280, height=720))
    plain.open()
    expected = read_all(plain)
    source = VideoSource(
        VideoOptions(path=data_dir / SINGLE, pacing="fast", width=1280, height=720, mjpeg_emulation=True, loop=True)
    )
    assert "MJPG emulation q85" in source.open().description
    frames = read_all(source, limit=75)
    assert [f.index for f in frames] == list(range(75))
    assert frames[0].image.shape == (720, 1280, 3)
    assert not np.array_equal(frames[10].image, expected[10].image)  # really went through JPEG
    assert np.abs(frames[10].image.astype(int) - expected[10].image).mean() < 3
    assert np.array_equal(frames[73].image, frames[1].image)


def test_video_mjpeg_cache_limit(data_dir):
    source = VideoSource(VideoOptions(path=data_dir / MOV, pacing="fast", mjpeg_emulation=True, mjpeg_cache_mb=16,
                                      width=1920, height=1080, jpeg_quality=100))  # fmt: skip
    with pytest.raises(SourceUnavailable, match="too long for mjpeg_emulation"):
        source.open()


def test_video_unreadable_files(tmp_path):
    with pytest.raises(SourceUnavailable, match="path is not set"):
        VideoSource().open()
    with pytest.raises(SourceUnavailable, match="no such video file"):
        VideoSource(VideoOptions(path=tmp_path / "missing.mp4")).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceUnavailable, match="not a readable video"):
        VideoSource(VideoOptions(path=junk)).open()


# ---------------------------------------------------------------- images


def make_images(folder: Path) -> None:
    """img1, img2, img10 filled with 10, 20, 100 (img10 at another size), a corrupt JPEG and a text file."""
    folder.mkdir()
    for number, size in [(1, (60, 80)), (2, (60, 80)), (10, (120, 120))]:
        cv2.imwrite(str(folder / f"img{number}.png"), np.full((*size, 3), number * 10, np.uint8))
    (folder / "img3.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image")


def test_images_natural_order_skip_corrupt_and_letterbox(tmp_path):
    make_images(tmp_path / "shots")
    source = ImagesSource(ImagesOptions(path=str(tmp_path / "shots"), pacing="fast"))
    info = source.open()
    assert (info.width, info.height) == (80, 60)
    frames = read_all(source)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [int(f.image[30, 40, 0]) for f in frames] == [10, 20, 100]  # img1, img2, img10: not img10 first
    assert all(f.image.shape == (60, 80, 3) for f in frames)
    assert frames[2].image[30, 5, 0] == 0  # the square img10 is letterboxed, not stretched
    assert source.skipped == 1
    assert source.read() is None


def test_images_glob_loop_and_resize(tmp_path):
    make_images(tmp_path / "shots")
    source = ImagesSource(ImagesOptions(path=str(tmp_path / "shots" / "img*.png"), pacing="fast", loop=True,
                                        width=160, height=120))  # fmt: skip
    assert source.open().width == 160
    frames = read_all(source, limit=7)
    assert [f.index for f in frames] == list(range(7))
    assert [int(f.image[60, 80, 0]) for f in frames] == [10, 20, 100, 10, 20, 100, 10]
    assert source.skipped == 0


def test_images_an_unreadable_file_is_skipped_like_a_corrupt_one(tmp_path, monkeypatch):
    import emocam.imageio

    make_images(tmp_path / "shots")
    fromfile = np.fromfile

    def no_permission(path, dtype):  # as a file of another account (this runs as root, so chmod cannot show it)
        if Path(path).name == "img2.png":
            raise PermissionError(13, "Permission denied", str(path))
        return fromfile(path, dtype=dtype)

    monkeypatch.setattr(emocam.imageio.np, "fromfile", no_permission)
    source = ImagesSource(ImagesOptions(path=str(tmp_path / "shots"), pacing="fast"))
    source.open()
    assert [int(f.image[30, 40, 0]) for f in read_all(source)] == [10, 100]
    assert source.skipped == 2


def test_images_realtime_skips_when_late(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for number in range(100):
        cv2.imwrite(str(folder / f"f{number:03d}.png"), np.full((8, 8, 3), number, np.uint8))
    source = ImagesSource(ImagesOptions(path=str(folder), fps=50.0))
    source.open()
    source.read()
    time.sleep(0.2)
    frame = source.read()
    assert frame.index == 1 and source.dropped >= 5
    assert int(frame.image[0, 0, 0]) == 1 + source.dropped


def test_images_nothing_readable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceUnavailable, match="no images found"):
        ImagesSource(ImagesOptions(path=str(tmp_path / "empty"))).open()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
    with pytest.raises(SourceUnavailable, match="none of the 1 images is readable"):
        ImagesSource(ImagesOptions(path=str(tmp_path / "bad"))).open()


# ---------------------------------------------------------------- url


def test_redact_hides_passwords():
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://admin:***@10.0.0.5:554/stream1"
    assert redact("http://cam.local/video.mjpg") == "http://cam.local/video.mjpg"
    assert redact("rtsp://admin@cam.local/live") == "rtsp://admin@cam.local/live"  # no password
    # characters that urlsplit takes for the end of the host
    for password in ("pa#ss", "p/ss", "p?ss", "p@ss", "p:ss"):
        assert redact(f"rtsp://admin:{password}@10.0.0.2/live") == "rtsp://admin:***@10.0.0.2/live"
    assert redact("rtsp://admin:s3cret@[fe80::1]:554/live") == "rtsp://admin:***@[fe80::1]:554/live"
    assert (redact("http://cam.local/cgi?user=admin&password=s3cret&res=hd")
            == "http://cam.local/cgi?user=admin&password=***&res=hd")
    assert redact("https://cam.local/live.m3u8?token=abc123") == "https://cam.local/live.m3u8?token=***"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_url_errors():
    with pytest.raises(SourceUnavailable, match="url is not set"):
        UrlSource().open()
    with pytest.raises(SourceUnavailable, match="for a file use source 'video'"):
        UrlSource(UrlOptions(url="/home/me/clip.mp4")).open()
    source = UrlSource(UrlOptions(url=f"http://user:pw@127.0.0.1:{free_port()}/x.mp4", open_timeout_s=3))
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"user:\*\*\*@127.0.0.1.*could not open the stream") as err:
        source.open()
    assert "pw" not in str(err.value)
    assert time.monotonic() - started < 5
    with pytest.raises(SourceLost):
        source.read()


class MjpegHandler(http.server.BaseHTTPRequestHandler):
    """An IP camera's HTTP MJPEG stream: multipart JPEGs (grey levels 0, 5, 10, ...), then it hangs up."""

    frames = [cv2.imencode(".jpg", np.full((180, 320, 3), i * 5, np.uint8))[1].tobytes() for i in range(20)]

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for jpeg in self.frames:
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
            self.wfile.write(jpeg + b"\r\n")

    def log_message(self, *args):
        pass


def test_url_reads_an_mjpeg_stream_then_reports_it_lost():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MjpegHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        source = UrlSource(UrlOptions(url=f"http://127.0.0.1:{server.server_address[1]}/video.mjpg", width=640))
        info = source.open()
        assert (info.width, info.height) == (640, 360)
        frames = []
        with pytest.raises(SourceLost, match="stopped delivering"):
            while len(frames) < 100:
                frames.append(source.read())
        # open() spent the first frame checking the stream; the rest arrive in order.
        assert [f.index for f in frames] == list(range(19))
        assert frames[0].image.shape == (360, 640, 3)
        assert [round(float(f.image.mean()) / 5) for f in frames] == list(range(1, 20))
        source.close()
        source.open()
        assert source.read().index == 19  # indices keep growing across a reconnect
        source.close()
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- demo


def test_demo_is_deterministic_and_finite():
    a = DemoSource(DemoOptions(pacing="fast", frames=5))
    b = DemoSource(DemoOptions(pacing="fast", frames=5))
    info = a.open()
    b.open()
    assert (info.width, info.height, info.fps) == (1280, 720, 30.0)
    frames_a, frames_b = read_all(a), read_all(b)
    assert [f.index for f in frames_a] == list(range(5))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(frames_a, frames_b))
    assert not np.array_equal(frames_a[0].image, frames_a[4].image)  # it moves
    assert a.read() is None


def test_demo_face_box_moves_and_stays_detectable_size():
    boxes = np.array([demo_face_box(i, 1280, 720) for i in range(CYCLE)])
    heights = boxes[:, 3] - boxes[:, 1]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert heights.min() >= 80 and heights.max() / heights.min() > 2  # a zoom phase
    assert np.ptp(centres[:, 0]) > 400 and np.ptp(centres[:, 1]) > 50
    assert np.abs(np.diff(centres, axis=0)).max() < 12  # smooth: a few pixels per frame
    assert np.allclose(demo_face_box(CYCLE + 7, 1280, 720), boxes[7])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 1280).all() and (boxes[:, 3] <= 720).all()
    assert np.allclose(demo_face_box(123, 1920, 1080), demo_face_box(123, 1280, 720) * 1.5, atol=2)


@pytest.mark.parametrize("index", [0, 150, 230, 560])
def test_demo_face_box_is_where_the_face_is_drawn(astronaut_bgr, index):
    source = DemoSource(DemoOptions(pacing="fast", width=1920, height=1080))
    source.open()
    source._index = index  # jump there instead of rendering every frame before it
    frame = source.read()
    x1, y1, x2, y2 = demo_face_box(index, 1920, 1080).round().astype(int)
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    drawn = cv2.resize(frame.image[y1:y2, x1:x2], (fx2 - fx1, fy2 - fy1), interpolation=cv2.INTER_AREA)
    gain = placement(index, 1920, 1080)[3]
    original = np.clip(astronaut_bgr[fy1:fy2, fx1:fx2] * gain, 0, 255)
    assert np.abs(drawn.astype(float) - original).mean() < 12


def test_demo_realtime_pacing():
    source = DemoSource(DemoOptions(fps=100.0, frames=21))
    source.open()
    frames = read_all(source)
    assert len(frames) == 21
    assert 0.15 < frames[-1].timestamp - frames[0].timestamp < 1.0


@pytest.mark.weights
def test_demo_face_is_found_by_mtcnn(models_dir):
    import torch

    from emocam.detect.mtcnn import MTCNNDetector, MTCNNOptions
    from emocam.weights import WeightStore

    detector = MTCNNDetector(MTCNNOptions(), torch.device("cpu"), WeightStore(models_dir))
    heights = {i: demo_face_box(i, 1280, 720)[3] - demo_face_box(i, 1280, 720)[1] for i in range(CYCLE)}
    smallest, largest = min(heights, key=heights.get), max(heights, key=heights.get)
    source = DemoSource(DemoOptions(pacing="fast"))
    source.open()
    for index in (0, smallest, largest):
        source._index = index
        small = cv2.resize(source.read().image, (640, 360), interpolation=cv2.INTER_AREA)  # as the analyser sees it
        faces = detector.detect(small)
        assert faces, f"no face found in demo frame {index}"
        found, expected = faces[0].box * 2, demo_face_box(index, 1280, 720)
        inter = np.prod(np.clip(np.minimum(found[2:], expected[2:]) - np.maximum(found[:2], expected[:2]), 0, None))
        union = np.prod(found[2:] - found[:2]) + np.prod(expected[2:] - expected[:2]) - inter
        assert inter / union > 0.7, (index, found, expected)


def test_source_option_takes_any_file_name(tmp_path, data_dir):
    from emocam.config import load_config
    from emocam.daemon import source_overrides

    video = tmp_path / "talk 🎥 \"final\" ü.mp4"  # an emoji, a quote, a space and an umlaut
    video.write_bytes((data_dir / SINGLE).read_bytes())
    cfg = load_config(None, source_overrides(str(video)))
    assert cfg.source.name == "video" and cfg.source.options("video").path == video.resolve()


def test_skimage_names_only_its_shipped_sample_pictures():
    from emocam.imageio import UnreadableImage, read_bgr

    assert read_bgr("skimage:astronaut").shape == (512, 512, 3)
    for name in ("download_all", "lbp_frontal_face_cascade_filename", "nope"):  # a download, a path, nothing
        with pytest.raises(UnreadableImage, match=f"skimage:{name}: not one of the sample images .*astronaut"):
            read_bgr(f"skimage:{name}")
