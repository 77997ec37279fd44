"""Patch export: episode logic, files and manifest, crash safety under SIGKILL, quota, numbering, throughput."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from loguru import logger

from emocam.config import Config
from emocam.control import Control, ControlState
from emocam.errors import EmoCamError
from emocam.export.episodes import EpisodeTracker
from emocam.export.exporter import LINK, Exporter, attach_exporter
from emocam.export.hog import read_shape
from emocam.export.manifest import CSV, CSV_COLUMNS, JSONL, read_manifest
from emocam.export.options import ExportConfig
from emocam.sources import Frame
from emocam.types import EMOTIONS, Analysis, Face

ROOT = Path(__file__).resolve().parents[1]
PNG_END = b"IEND\xaeB`\x82"  # the last 8 bytes of every complete PNG


def probs(label: str, p: float = 0.9) -> np.ndarray:
    out = np.full(7, (1 - p) / 6, np.float32)
    out[EMOTIONS.index(label)] = p
    return out


def face(label: str | None, track: int = 1, box=(800, 300, 1100, 660), p: float = 0.9) -> Face:
    x1, y1, x2, y2 = box
    landmarks = np.array([[x1 + 0.3 * (x2 - x1), y1 + 0.4 * (y2 - y1)], [x1 + 0.7 * (x2 - x1), y1 + 0.4 * (y2 - y1)],
                          [(x1 + x2) / 2, y1 + 0.6 * (y2 - y1)], [x1 + 0.35 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
                          [x1 + 0.65 * (x2 - x1), y1 + 0.8 * (y2 - y1)]], np.float32)
    return Face(np.array(box, np.float32), 0.99, landmarks, None if label is None else probs(label, p), track)


@pytest.fixture(scope="module")
def frame_1080p(astronaut_bgr) -> np.ndarray:
    """The astronaut at 3x on a 1080p canvas: her face is about 270 x 330 px at (540-810, 180-510)."""
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    canvas[:, 300:1836] = cv2.resize(astronaut_bgr, (1536, 1536))[:1080]
    return canvas


ASTRONAUT_BOX = (840, 183, 1104, 516)


def options(**changes) -> ExportConfig:
    base = dict(start_after=1, every_n_frames=1, min_free_mb=0)
    return ExportConfig(**(base | changes))


def feed(exporter: Exporter, image: np.ndarray, faces_per_frame: list[list[Face]], first: int = 0) -> None:
    size = (image.shape[1], image.shape[0])
    for i, faces in enumerate(faces_per_frame, first):
        t = 100.0 + i / 30
        exporter.on_analysis(Frame(image, i, t), Analysis(i, t, size, tuple(faces)))


def png_names(session: Path) -> set[str]:
    return {p.name for p in session.rglob("*.png")}


# ---- episodes ------------------------------------------------------------------------------------------------

def run_script(tracker: EpisodeTracker, script: list[list[Face]]) -> list[tuple[int, int, str, int]]:
    """(frame, episode id, episode label, track) of every patch the tracker asks to save."""
    saved = []
    for frame, faces in enumerate(script):
        for f, episode in tracker.update(frame, frame / 30, faces):
            saved.append((frame, episode.id, episode.label, f.track_id))
    return saved


def test_episode_boundaries_on_a_scripted_sequence():
    labels = (["neutral"] * 6  # 0-5: neutral is dominant from frame 2 (start_after=3): episode 1
              + ["happy"] * 2  # 6-7: not yet dominant long enough: episode 1 goes on, nothing saved
              + ["neutral"] * 3  # 8-10: still episode 1 (no new episode: same emotion)
              + ["happy"] * 5  # 11-15: happy dominant at 13: episode 2
              + [None] * 2  # 16-17: no dominant emotion (below min_probability): episode 2 goes on, unsaved
              + ["happy"] * 3)  # 18-20
    script = [[face(label, p=0.9)] if label else [face("sad", p=0.3)] for label in labels]
    saved = run_script(EpisodeTracker(start_after=3, min_probability=0.4, every_n_frames=2), script)
    assert saved == [(2, 1, "neutral", 1), (4, 1, "neutral", 1), (8, 1, "neutral", 1), (10, 1, "neutral", 1),
                     (13, 2, "happy", 1), (15, 2, "happy", 1), (18, 2, "happy", 1), (20, 2, "happy", 1)]


def test_episodes_are_per_track_and_end_when_the_face_leaves():
    script = ([[face("happy", 1), face("sad", 2)]] * 3  # both start (start_after=2) at frame 1
              + [[face("sad", 2)]]  # track 1 leaves: its episode ends
              + [[face("happy", 1), face("sad", 2)]] * 2)  # track 1 back: needs 2 frames again -> new episode
    saved = run_script(EpisodeTracker(start_after=2, every_n_frames=1), script)
    assert [s for s in saved if s[3] == 1] == [(1, 1, "happy", 1), (2, 1, "happy", 1), (5, 3, "happy", 1)]
    assert [s for s in saved if s[3] == 2] == [(1, 2, "sad", 2), (2, 2, "sad", 2), (3, 2, "sad", 2),
                                                (4, 2, "sad", 2), (5, 2, "sad", 2)]


def test_rate_per_second():
    tracker = EpisodeTracker(start_after=1, per_second=2.0)
    saved = [frame for frame in range(60) for _ in tracker.update(frame, frame / 30, [face("happy")])]
    assert saved == [0, 15, 30, 45]


# ---- files and manifest --------------------------------------------------------------------------------------

def test_patches_manifest_and_hog_rows_match(tmp_path, frame_1080p):
    daemon_session = tmp_path / "sessions" / "20250101-120000"
    daemon_session.mkdir(parents=True)
    models = {"detector": "mtcnn", "detector_weights": {"pnet": "ab" * 32}, "classifier": "mini-xception",
              "classifier_weights": {"mini_xception": "cd" * 32}}
    exporter = Exporter(options(every_n_frames=2, aligned=True), tmp_path / "exports", models=models,
                        source_session=daemon_session)
    exporter.start()
    script = [[face("happy", 1, ASTRONAUT_BOX), face("neutral", 2, (100, 100, 300, 340))]] * 6 \
        + [[face("sad", 1, ASTRONAUT_BOX)]] * 3
    feed(exporter, frame_1080p, script)
    exporter.close()
    session = tmp_path / "exports" / "s0001"
    rows = read_manifest(session)
    # every 2nd frame per episode: happy 0,2,4 / neutral 0,2,4 / sad 6,8
    assert sorted((r["label"], r["frame"], r["track"], r["episode"]) for r in rows) == sorted(
        [("happy", f, 1, 1) for f in (0, 2, 4)] + [("neutral", f, 2, 2) for f in (0, 2, 4)]
        + [("sad", f, 1, 3) for f in (6, 8)])
    assert {r["file"] for r in rows} == {f"{r['label']}/s0001_{r['frame']:06d}_{r['track']}.png" for r in rows}
    assert png_names(session) == {Path(r["file"]).name for r in rows}  # main copies and aligned copies
    for r in rows:
        patch = cv2.imread(str(session / r["file"]))
        x1, y1, x2, y2 = r["crop"]
        np.testing.assert_array_equal(patch, frame_1080p[y1:y2, x1:x2])  # full resolution, lossless
        bx1, by1, bx2, by2 = r["box"]
        assert x1 == int(bx1 - 0.2 * (bx2 - bx1)) and y2 == int(np.ceil(by2 + 0.2 * (by2 - by1)))
        assert cv2.imread(str(session / r["aligned_file"])).shape == (112, 112, 3)
        assert r["probabilities"]["happy"] == pytest.approx(float(probs(r["label"])[3]), abs=1e-6)
        assert r["detector"] == "mtcnn" and r["classifier_weights"] == {"mini_xception": "cd" * 32}
        assert r["source_session"] == "20250101-120000" and len(r["landmarks"]) == 5
        assert r["time"] - r["t"] == pytest.approx(time.time() - time.monotonic(), abs=5)
    assert sorted((r["hog_file"], r["hog_index"]) for r in rows) == sorted(
        [("hog/episode_000001.npy", i) for i in range(3)] + [("hog/episode_000002.npy", i) for i in range(3)]
        + [("hog/episode_000003.npy", i) for i in range(2)])
    lines = (session / CSV).read_text().splitlines()
    assert lines[0].split(",") == CSV_COLUMNS and len(lines) == 1 + len(rows)
    info = json.loads((session / "export.json").read_text())
    assert info["hog_length"] == 1764 and info["source_session"] == str(daemon_session)
    assert json.loads((daemon_session / LINK).read_text())["export_session"] == str(session.resolve())
    assert not (session / ".writing").exists()  # closed cleanly


def test_hog_vectors_equal_skimage_on_the_saved_patches(tmp_path, frame_1080p):
    from skimage.feature import hog

    exporter = Exporter(options(hog={"size": 48, "orientations": 12, "pixels_per_cell": 6, "cells_per_block": 3}),
                        tmp_path)
    exporter.start()
    feed(exporter, frame_1080p, [[face("happy", 1, (840 + 7 * i, 183, 1104, 516 - 5 * i))] for i in range(5)])
    exporter.close()
    session = tmp_path / "s0001"
    rows = read_manifest(session)
    assert len(rows) == 5
    stored = np.load(session / rows[0]["hog_file"])
    for r in rows:
        gray = cv2.cvtColor(cv2.imread(str(session / r["file"])), cv2.COLOR_BGR2GRAY)
        expected = hog(cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA), orientations=12,
                       pixels_per_cell=(6, 6), cells_per_block=(3, 3), block_norm="L2-Hys", feature_vector=True)
        np.testing.assert_array_equal(stored[r["hog_index"]], expected.astype(np.float32))


def test_never_overwrites_and_numbering_continues_across_restarts(tmp_path, frame_1080p):
    (tmp_path / "s0007").mkdir()
    (tmp_path / "notes").mkdir()
    first = Exporter(options(), tmp_path)
    first.start()
    feed(first, frame_1080p, [[face("happy")]])
    first.close()
    second = Exporter(options(), tmp_path)  # a restart: the pipeline numbers frames from 0 again
    second.start()
    feed(second, frame_1080p, [[face("happy")]])
    second.close()
    assert [len(read_manifest(tmp_path / s)) for s in ("s0008", "s0009")] == [1, 1]
    # A name already taken inside a session is skipped and counted, never replaced.
    third = Exporter(options(), tmp_path)
    third.start()
    target = third.session_dir / "happy" / "s0010_000000_1.png"
    target.write_bytes(b"reviewer's file")
    feed(third, frame_1080p, [[face("happy")]])
    third.close()
    assert target.read_bytes() == b"reviewer's file"
    assert third.skipped_existing == 1 and read_manifest(third.session_dir) == []


def pipeline_with_exporter(tmp_path: Path, export_root: Path):
    """What attach_exporter needs of a pipeline and a config, and the exporter it attaches."""

    class Named:
        def __init__(self, name):
            self.name, self.weights_sha256 = name, {name: "00" * 32}

    class Analyzer:
        detector, classifier = Named("det"), Named("cls")

    class Cfg:
        export = options(root=export_root)

        def resolve(self, path):
            return Path(path)

    class FakePipeline:
        analyzer = Analyzer()
        analysis_hooks = []
        control = ControlState(Control("emotions"))
        session_dir = tmp_path

    pipeline = FakePipeline()
    return pipeline, attach_exporter(pipeline, Cfg())


def test_control_starts_and_stops_export(tmp_path, frame_1080p):
    pipeline, exporter = pipeline_with_exporter(tmp_path, tmp_path / "exports")
    hook = pipeline.analysis_hooks[0]
    hook(Frame(frame_1080p, 0, 1.0), Analysis(0, 1.0, (1920, 1080), (face("happy"),)))
    assert exporter.session_dir is None  # export is off by default
    pipeline.control.update(exporting=True)
    hook(Frame(frame_1080p, 1, 1.1), Analysis(1, 1.1, (1920, 1080), (face("happy"),)))
    pipeline.control.update(exporting=False)
    hook(Frame(frame_1080p, 2, 1.2), Analysis(2, 1.2, (1920, 1080), (face("happy"),)))
    pipeline.control.update(exporting=True)  # a new episode: the first one ended when export stopped
    hook(Frame(frame_1080p, 3, 1.3), Analysis(3, 1.3, (1920, 1080), (face("happy"),)))
    exporter.close()
    rows = read_manifest(exporter.session_dir)
    assert [(r["frame"], r["episode"], r["detector"]) for r in rows] == [(1, 1, "det"), (3, 2, "det")]


def test_a_failed_start_leaves_nothing_half_made_and_a_later_start_exports(tmp_path, frame_1080p, monkeypatch):
    import emocam.export.exporter as exporter_module

    real_write = exporter_module.write_json_atomic

    def disk_full(path, doc):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporter_module, "write_json_atomic", disk_full)
    root = tmp_path / "exports"
    exporter = Exporter(options(), root)
    with pytest.raises(EmoCamError, match="No space left on device; set export.root to a writable folder"):
        exporter.start()
    assert exporter.session_dir is None and not exporter.active
    assert list(root.iterdir()) == []  # no session folder and no lock left behind
    monkeypatch.setattr(exporter_module, "write_json_atomic", real_write)
    exporter.start()  # the disk has room again
    feed(exporter, frame_1080p, [[face("happy")]])
    exporter.close()
    assert len(read_manifest(exporter.session_dir)) == 1
    assert not any(root.rglob(".writing*"))


def test_control_says_export_is_off_when_it_could_not_start(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    pipeline, _ = pipeline_with_exporter(tmp_path, tmp_path / "file")
    pipeline.control.update(exporting=True)
    assert pipeline.control.get().exporting is False


# ---- quota ---------------------------------------------------------------------------------------------------

class Logs:
    def __init__(self):
        self.lines: list[str] = []
        self._id = logger.add(lambda m: self.lines.append(m.record["message"]), level="INFO")

    def close(self):
        logger.remove(self._id)


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_quota_pauses_export_with_a_warning_and_resumes(tmp_path, frame_1080p):
    logs = Logs()
    try:
        exporter = Exporter(options(max_mb=0.5), tmp_path)  # a patch here is about 200 KB
        exporter.start()
        exporter.quota.recount_s = 0.1  # look at the disk again soon after pausing (default 5 s)
        feed(exporter, frame_1080p, [[face("happy", 1, ASTRONAUT_BOX)]] * 8)
        wait_for(lambda: exporter.written + exporter.skipped_paused == 8)
        assert 2 <= exporter.written <= 4 and exporter.paused and "export.max_mb" in exporter.paused
        assert sum("export paused" in line for line in logs.lines) == 1
        # Frames keep coming while paused: the hook skips them without queueing.
        feed(exporter, frame_1080p, [[face("happy", 1, ASTRONAUT_BOX)]] * 4, first=8)
        assert exporter.skipped_paused >= 8 - exporter.written + 4
        # Room again (a reviewer deleted patches): export resumes by itself.
        for p in (tmp_path / "s0001" / "happy").glob("*.png"):
            p.unlink()
        wait_for(lambda: exporter.paused is None)
        before = exporter.written
        feed(exporter, frame_1080p, [[face("happy", 1, ASTRONAUT_BOX)]], first=20)
        exporter.close()
        assert exporter.written == before + 1 and exporter.errors == 0
        assert any("export resumed" in line for line in logs.lines)
    finally:
        logs.close()


def test_min_free_space_pauses_export(tmp_path, frame_1080p):
    exporter = Exporter(options(min_free_mb=1e12), tmp_path)  # no disk has an exabyte free
    exporter.start()
    feed(exporter, frame_1080p, [[face("happy")]] * 3)
    exporter.close()
    assert exporter.written == 0 and exporter.skipped_paused == 3 and "export.min_free_mb" in exporter.paused
    assert read_manifest(tmp_path / "s0001") == []


# ---- crash safety --------------------------------------------------------------------------------------------

CHILD = r'''
import os, signal, sys, time
import numpy as np
from emocam.export import exporter as ex, manifest
from emocam.export.options import ExportConfig
from emocam.sources import Frame
from emocam.types import Analysis, Face

root, mode = sys.argv[1], sys.argv[2]
def die():
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "after-png":  # the patch and its HOG row are on disk, its manifest row is not
    write = manifest.ManifestWriter.write
    def write_then_die(self, row, n=[0]):
        n[0] += 1
        if n[0] == 12:
            die()
        write(self, row)
    manifest.ManifestWriter.write = write_then_die
elif mode == "mid-png":  # half of the PNG written under its temporary name
    def half_png(path, image, n=[0]):
        n[0] += 1
        ok, buf = ex.cv2.imencode(".png", image)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(buf.tobytes()[: buf.size // 2] if n[0] == 12 else buf.tobytes())
        if n[0] == 12:
            die()
        os.replace(tmp, path)
        return buf.size
    ex._write_png = half_png
elif mode == "mid-row":  # a torn manifest line
    write = manifest.ManifestWriter.write
    def torn(self, row, n=[0]):
        n[0] += 1
        if n[0] == 12:
            os.write(self._jsonl, manifest.json.dumps(row)[:40].encode())
            die()
        write(self, row)
    manifest.ManifestWriter.write = torn

exporter = ex.Exporter(ExportConfig(start_after=1, every_n_frames=1, min_free_mb=0), root)
exporter.start()
rng = np.random.default_rng(0)
image = rng.integers(0, 255, (720, 1280, 3), np.uint8)
print("started", flush=True)
for i in range(100000):
    faces = tuple(Face(np.array([100 + 200 * k, 100, 260 + 200 * k, 300], np.float32), 0.9, None,
                       np.eye(7, dtype=np.float32)[3], k + 1) for k in range(4))
    exporter.on_analysis(Frame(image, i, i / 30), Analysis(i, i / 30, (1280, 720), faces))
    time.sleep(0.01)
'''


def check_after_kill(session: Path) -> int:
    """What must hold right after a kill, before any repair; returns the number of patches without a row."""
    rows = read_manifest(session)
    assert rows, "the child wrote nothing before it was killed"
    for r in rows:  # no row points nowhere, and every patch a row names is complete
        assert (session / r["file"]).read_bytes().endswith(PNG_END)
        assert r["hog_index"] < read_shape(session / r["hog_file"])[0]
    for png in session.rglob("*.png"):  # no half file under a final name
        assert png.read_bytes().endswith(PNG_END), png
    return len(png_names(session) - {Path(r["file"]).name for r in rows})


def assert_one_to_one(session: Path) -> None:
    rows = read_manifest(session)
    assert png_names(session) == {Path(r["file"]).name for r in rows}
    assert len({r["file"] for r in rows}) == len(rows)
    assert not list(session.rglob("*.part")) and not (session / ".writing").exists()
    assert len((session / CSV).read_text().splitlines()) == 1 + len(rows)
    assert (session / JSONL).read_bytes().endswith(b"\n")
    for hog_file in {r["hog_file"] for r in rows}:
        used = max(r["hog_index"] for r in rows if r["hog_file"] == hog_file) + 1
        assert np.load(session / hog_file).shape == (used, 1764)


def test_a_disk_that_fills_half_way_through_a_patch_leaves_no_patch_without_its_row(tmp_path, frame_1080p,
                                                                                     monkeypatch):
    import emocam.export.manifest as manifest_module

    write = os.write
    exporter = Exporter(options(), tmp_path / "exports")
    exporter.start()

    def csv_hits_a_full_disk(fd, data):
        if fd == exporter._manifest._csv:  # by then the patch's PNG, HOG row and JSONL line are written
            write(fd, data[:7])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data)

    monkeypatch.setattr(manifest_module.os, "write", csv_hits_a_full_disk)
    feed(exporter, frame_1080p, [[face("happy")]])
    wait_for(lambda: exporter.errors or exporter.written)
    monkeypatch.setattr(manifest_module.os, "write", write)
    exporter.close()
    session = exporter.session_dir
    assert exporter.errors == 1 and exporter.written == 0
    assert png_names(session) == set() and read_manifest(session) == []  # the patch is gone as a whole
    assert (session / JSONL).read_bytes() == b"" and len((session / CSV).read_text().splitlines()) == 1


def test_repair_deletes_only_the_exporters_own_orphans_not_pictures_added_by_hand(tmp_path, frame_1080p):
    root = tmp_path / "exports"
    first = Exporter(options(), root)
    first.start()
    feed(first, frame_1080p, [[face("happy")]])
    first.close()
    session = first.session_dir
    (session / ".writing").write_text("")  # as if the daemon had been killed
    orphan = session / "happy" / f"{session.name}_000099_1.png"  # saved, then killed before its manifest row
    own = session / "sad" / "my_own_sad_face.png"  # a reviewer's addition
    for path in (orphan, own):
        path.write_bytes((session / read_manifest(session)[0]["file"]).read_bytes())
    restart = Exporter(options(), root)
    restart.start()  # repairs s0001 before opening s0002
    restart.close()
    assert not orphan.exists() and own.exists()
    assert len(read_manifest(session)) == 1


@pytest.mark.parametrize("mode", ["random", "after-png", "mid-png", "mid-row"])
def test_sigkill_mid_export_leaves_manifest_and_files_one_to_one(tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path / "exports"), mode], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    session = tmp_path / "exports" / "s0001"
    try:
        if mode == "random":  # killed from outside while the writer is busy
            wait_for(lambda: len(read_manifest(session)) >= 30, timeout=60)
            child.send_signal(signal.SIGKILL)
        child.wait(60)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    orphans, parts = check_after_kill(session), len(list(session.rglob("*.part")))
    if mode == "random":  # one writer thread: only the patch being saved at the kill can be left over
        assert orphans + parts <= 1
    else:
        assert (orphans, parts) == {"after-png": (1, 0), "mid-png": (0, 1), "mid-row": (1, 0)}[mode]
    # The next exporter on this root (a daemon restart) repairs the session and goes on with s0002.
    restart = Exporter(options(), tmp_path / "exports")
    restart.start()
    restart.close()
    assert restart.session_dir.name == "s0002"
    assert_one_to_one(session)
    assert len(read_manifest(session)) >= (11 if mode != "random" else 30)


def test_sigkill_of_the_daemon_mid_export(tmp_path, models_dir):
    """`emocam run --export` on the demo camera, killed with SIGKILL while it exports every analysed frame."""
    env = dict(os.environ, EMOCAM_MODELS=str(models_dir))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "emocam", "--config", str(ROOT / "config.toml"), "run", "--source", "demo",
         "--no-vcam", "--export", "--set", f'session.root="{tmp_path / "sessions"}"',
         "--set", f'export.root="{tmp_path / "exports"}"', "--set", f'daemon.status_file="{tmp_path / "st.json"}"',
         "--set", "export.start_after=1", "--set", "export.every_n_frames=1", "--set", "export.min_free_mb=0"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    session = tmp_path / "exports" / "s0001"
    try:
        wait_for(lambda: len(read_manifest(session)) >= 15, timeout=60)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
    finally:
        daemon.kill()
    assert daemon.returncode == -signal.SIGKILL, daemon.stderr.read()
    assert check_after_kill(session) + len(list(session.rglob("*.part"))) <= 1
    rows = read_manifest(session)
    assert {r["label"] for r in rows} == {"happy"} and rows[0]["detector"] == Config().detector.name
    restart = Exporter(options(), tmp_path / "exports")
    restart.start()
    restart.close()
    assert_one_to_one(session)


# ---- throughput ----------------------------------------------------------------------------------------------

def test_writer_keeps_up_with_30_patches_per_second(tmp_path, frame_1080p):
    """Full-resolution 1080p face patches (about 370 x 470 px with the margin): PNG, HOG, manifest."""
    n = 150
    exporter = Exporter(options(queue_size=n), tmp_path)
    exporter.start()
    started = time.perf_counter()
    feed(exporter, frame_1080p, [[face("happy", 1, ASTRONAUT_BOX)]] * n)
    enqueue_s = time.perf_counter() - started
    exporter.close()
    rate = exporter.written / (time.perf_counter() - started)
    print(f"export: {rate:.0f} patches/s ({n} patches of {exporter.bytes_written / n / 1024:.0f} KB); "
          f"the hook took {1000 * enqueue_s / n:.3f} ms per analysis")
    assert exporter.written == n and exporter.dropped == 0
    assert rate >= 30
    assert enqueue_s / n < 0.005  # the analysis thread only copies the patch and queues it


def test_training_on_exported_patches_sees_faces_framed_as_the_live_classifier_does(tmp_path, frame_1080p,
                                                                                   models_dir):
    from emocam.classify.repvgg import RepVGGClassifier, RepVGGOptions
    from emocam.train.emotion_data import find_samples, load_faces
    from emocam.weights import WeightStore

    boxes = [ASTRONAUT_BOX, (-40, 200, 230, 560)]  # a face cut by the frame's left edge too
    exporter = Exporter(options(), tmp_path / "exports")
    exporter.start()
    for i, box in enumerate(boxes):
        feed(exporter, frame_1080p, [[face("happy", track=i + 1, box=box)]], first=10 * i)
    exporter.close()
    trained_on = load_faces(find_samples(tmp_path / "exports"), 48).images
    live = RepVGGClassifier(RepVGGOptions(), torch.device("cpu"), WeightStore(models_dir))
    for image, box in zip(trained_on, boxes):
        seen_live = live.crop(frame_1080p, face("happy", box=box)).astype(np.int16)
        # the same window; only the resampling differs, and the padding where it reaches outside the frame (the
        # live crop fills with the mean of the frame's last rows, which a patch does not have): compared inside
        inside = slice(16, None) if box[0] < 0 else slice(None)
        assert np.abs(image.astype(np.int16) - seen_live)[:, inside].mean() < 6
