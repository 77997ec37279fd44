"""`emocam dataset summarize|export` on an export that a reviewer relabelled and pruned."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from emocam.cli import main
from emocam.export.exporter import Exporter
from emocam.export.hog import orientation_histogram
from emocam.export.manifest import read_manifest
from emocam.export.options import ExportConfig, HogOptions
from emocam.sources import Frame
from emocam.types import EMOTIONS, Analysis, Face


def face(label: str, track: int, box) -> Face:
    probs = np.full(7, 0.01, np.float32)
    probs[EMOTIONS.index(label)] = 0.94
    return Face(np.array(box, np.float32), 0.99, None, probs, track)


@pytest.fixture
def reviewed(tmp_path, astronaut_bgr):
    """Two sessions; in the first a reviewer moved one happy patch to surprise and deleted one sad patch."""
    root = tmp_path / "exports"
    image = np.ascontiguousarray(np.tile(astronaut_bgr, (1, 2, 1)))
    for labels in (["happy"] * 4 + ["sad"] * 3, ["happy"] * 2):
        exporter = Exporter(ExportConfig(start_after=1, every_n_frames=1, min_free_mb=0), root)
        exporter.start()
        for i, label in enumerate(labels):
            faces = (face(label, 1, (180, 60, 270, 172)), face("neutral", 2, (700, 60, 790, 172)))
            exporter.on_analysis(Frame(image, i, i / 30), Analysis(i, i / 30, (1024, 512), faces))
        exporter.close()
    s1 = root / "s0001"
    shutil.move(s1 / "happy" / "s0001_000001_1.png", s1 / "surprise" / "s0001_000001_1.png")
    (s1 / "sad" / "s0001_000005_1.png").unlink()
    return root


def test_summarize_counts_reviewed_folders_and_hog_histograms(reviewed, tmp_path, capsys):
    assert main(["dataset", "summarize", str(reviewed), "--json", "--plots", str(tmp_path / "plots")]) == 0
    summary = json.loads(capsys.readouterr().out)
    per_class = {k: (v["patches"], v["episodes"]) for k, v in summary["per_class"].items() if v["patches"]}
    # s0001: happy 0,2,3 (1 moved) + surprise 1 + sad 4,6 + neutral 0-6; s0002: happy 0,1 + neutral 0,1
    assert per_class == {"happy": (5, 2), "surprise": (1, 1), "sad": (2, 1), "neutral": (9, 2)}
    assert summary["patches"] == 17 and summary["relabelled"] == 1 and summary["removed"] == 1
    assert summary["episodes"] == 5  # s0001: happy (one patch now in surprise), sad, neutral; s0002: two
    assert summary["sessions"] == ["s0001", "s0002"]
    # The per-class HOG histogram is the mean of the patches' own histograms, from the stored vectors.
    s1 = reviewed / "s0001"
    sad_rows = [r for r in read_manifest(s1) if r["label"] == "sad" and r["frame"] in (4, 6)]
    vectors = np.load(s1 / sad_rows[0]["hog_file"])[[r["hog_index"] for r in sad_rows]]
    expected = orientation_histogram(vectors, HogOptions()).mean(axis=0)
    np.testing.assert_allclose(summary["hog"]["per_class_histogram"]["sad"], expected, atol=1e-5)
    assert set(summary["hog"]["per_class_histogram"]) == {"happy", "surprise", "sad", "neutral"}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"class_distribution.png", "hog_histograms.png"}

    assert main(["dataset", "summarize", str(reviewed / "s0002")]) == 0
    text = capsys.readouterr().out
    assert "4 patches in 2 episodes from 1 session(s)" in text
    assert any(line.startswith("happy") and line.split()[1] == "2" for line in text.splitlines())


def test_export_imagefolder_uses_the_reviewed_labels_and_never_overwrites(reviewed, tmp_path, capsys):
    out = tmp_path / "train"
    assert main(["dataset", "export", str(reviewed), "--to", "imagefolder", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["patches"] == 17
    assert sorted(p.name for p in (out / "surprise").iterdir()) == ["s0001_000001_1.png"]
    assert len(list((out / "happy").iterdir())) == 5 and len(list((out / "sad").iterdir())) == 2
    assert (out / "happy" / "s0001_000000_1.png").read_bytes() == \
        (reviewed / "s0001" / "happy" / "s0001_000000_1.png").read_bytes()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert main(["dataset", "export", str(reviewed), "--to", "imagefolder", "--out", str(out)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before


def test_export_csv(reviewed, tmp_path, capsys):
    out = tmp_path / "train.csv"
    assert main(["dataset", "export", str(reviewed / "s0001"), "--to", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 13
    moved = next(r for r in rows if r["path"].endswith("s0001_000001_1.png"))
    assert moved["label"] == "surprise" and moved["model_label"] == "happy" and moved["episode"] == "1"
    assert all(Path(r["path"]).is_file() for r in rows)


def test_a_damaged_manifest_line_is_one_clear_error(reviewed, capsys):
    with open(reviewed / "s0002" / "manifest.jsonl", "a") as f:
        f.write("{not json\n")
    assert main(["dataset", "summarize", str(reviewed)]) == 2
    err = capsys.readouterr().err
    assert "manifest.jsonl: line 5 is not JSON (edited by hand?)" in err and "Traceback" not in err


def test_summarize_without_a_session_is_a_clear_error(tmp_path, capsys):
    assert main(["dataset", "summarize", str(tmp_path)]) == 2
    assert "no export session" in capsys.readouterr().err
