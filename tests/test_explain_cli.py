"""`emocam explain` end to end with the real models, and the daemon logging explain statistics per face."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emocam.cli import main
from emocam.explain.maps import FaceMaps

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def models(models_dir, monkeypatch):
    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    monkeypatch.chdir(ROOT)


def run_json(capsys, argv) -> dict:
    code = main(argv + ["--json", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_figure_and_statistics_per_face(capsys, tmp_path, models, astronaut_bgr):
    out = tmp_path / "figs"
    doc = run_json(capsys, ["explain", "skimage:astronaut", "--out", str(out), "--mode", "gradcam"])
    assert doc["mode"] == "gradcam" and len(doc["layers"]) == 15
    face = doc["images"][0]["faces"][0]
    assert face["label"] == "happy"
    figure = cv2.imread(face["figure"])
    assert figure is not None and figure.shape[0] > figure.shape[1] > 800  # 15 rows of 8 columns
    stats = face["explain"]
    assert stats["mode"] == "gradcam" and "class" not in stats  # offline: every class
    assert all(len(rows) == 7 and len(rows[0]) == len(stats["keys"]) for rows in stats["layers"].values())
    x1, y1, x2, y2 = face["window"]
    bx1, by1, bx2, by2 = face["box"]
    assert x1 < bx1 and y1 < by1 and x2 > bx2 and y2 > by2  # fer's window: larger than the box


def test_crops_and_unreadable_files(capsys, tmp_path, models, astronaut_bgr):
    crop = tmp_path / "face.png"
    cv2.imwrite(str(crop), astronaut_bgr[40:190, 150:300])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    code = main(["explain", str(crop), str(tmp_path / "broken.png"), "--crops", "--out", str(tmp_path / "o"),
                 "--json", "-q"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and len(doc["failed"]) == 1
    face = doc["images"][0]["faces"][0]
    assert face["label"] == "happy" and face["window"] == [0, 0, 150, 150]
    assert Path(face["figure"]).name == "face_face1.png" and Path(face["figure"]).is_file()
    assert main(["explain", str(crop), "-q"]) == 2  # --out missing: a one-line error
    assert "--out DIR" in capsys.readouterr().err


def test_faithfulness_runs_on_a_few_fer_faces(capsys, models, data_dir):
    labels = data_dir / "eval" / "emotion" / "labels.csv"
    doc = run_json(capsys, ["explain", "--faithfulness", str(labels), "--limit", "8", "--mode", "cam"])
    assert doc["images"] == 8 and list(doc["modes"]) == ["cam"]
    row = doc["modes"]["cam"]["classifier"]
    assert set(row) == {"top", "random", "blobs", "other", "top_beats_random"}
    assert all(-1 <= row[k] <= 1 for k in ("top", "random", "blobs", "other"))
    assert 0 < doc["occlusion_reference"] <= 1


def test_daemon_logs_maps_and_draws_the_analysis_preset(tmp_path, models_dir, monkeypatch):
    import vcam_backend
    from emocam.config import load_config
    from emocam.daemon import build_pipeline
    from emocam.sinks.recorder import read_frame_log

    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    vcam_backend.reset()
    cfg = load_config(ROOT / "config.toml", [
        "source.name=demo", "source.demo.frames=40", 'sinks.enabled=["virtualcam", "recorder"]',
        f'sinks.virtualcam.backend="{vcam_backend.NAME}"', f'session.root="{tmp_path}"', 'sinks.on_error="exit"',
        'output.preset="analysis"', 'explain.mode="cam"'])
    pipeline = build_pipeline(cfg)
    assert pipeline.explainer is not None
    seen = []
    pipeline.analysis_hooks.append(lambda frame, analysis: seen.append(analysis))
    pipeline.start()
    assert pipeline.wait(60)
    pipeline.close()
    explained = [f for a in seen for f in a.faces]
    assert explained and all(isinstance(f.explanation, FaceMaps) for f in explained)
    records = [r for r in read_frame_log(pipeline.session_dir / "frames.jsonl") if r["analysis"]]
    faces = [f for r in records for f in r["analysis"]["faces"]]
    assert faces and all(f["explain"]["mode"] == "cam" and len(f["explain"]["layers"]) == 15 for f in faces)
    # The analysis preset drew its insets: the top-left corner of the last frame is the dark layer-strip panel.
    last = vcam_backend.SENT[-1].image()
    assert np.median(last[15:40, 15:200]) < 60
    # Explaining off: the same pipeline logs no maps.
    cfg_off = load_config(ROOT / "config.toml", ["source.name=demo", "explain.enabled=false", "sinks.enabled=[]",
                                                 f'session.root="{tmp_path}"'])
    assert build_pipeline(cfg_off).explainer is None


def test_analyze_never_writes_two_images_of_the_same_name_over_each_other(capsys, tmp_path, models, astronaut_bgr):
    for folder, suffix in (("a", ".jpg"), ("b", ".png")):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / f"x{suffix}"), astronaut_bgr)
    out = run_json(capsys, ["analyze", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.png"),
                            "--out", str(tmp_path / "out")])
    written = [Path(record["annotated"]).name for record in out["images"]]
    assert written == ["x_annotated.png", "x_annotated_2.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(written)
