"""`emocam report` on a real recorded session of a shared video, and its parts on synthetic logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emocam.cli import main
from emocam.report.build import cohen_kappa
from emocam.report.session_log import load_session_log, read_truth
from emocam.errors import EmoCamError

ROOT = Path(__file__).resolve().parents[1]
# My own annotation of pyfeat_single_face.mp4 (30 fps), by looking at its frames: a neutral face up to frame 17,
# a broad smile from frame 20 on; the two frames in between are left out.
TRUTH = "start,end,label\n0.0,0.58,neutral\n0.66,2.5,happy\n"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, data_dir, models_dir):
    """`emocam run` on the shared video with recording and export, as a user runs it.

    Paced in real time (2.4 s): with pacing "fast" the file is read in a few milliseconds and the analyser sees
    two of its 72 frames, which leaves nothing to report on."""
    video = data_dir / "eval" / "videos" / "pyfeat_single_face.mp4"
    if not video.is_file():
        pytest.skip(f"{video} not found")
    tmp = tmp_path_factory.mktemp("report")
    env = dict(os.environ, EMOCAM_MODELS=str(models_dir))
    done = subprocess.run(
        [sys.executable, "-m", "emocam", "--config", str(ROOT / "config.toml"), "run", "--source", str(video),
         "--no-vcam", "--record", "--export", "--set", f'session.root="{tmp / "sessions"}"',
         "--set", f'export.root="{tmp / "exports"}"', "--set", f'daemon.status_file="{tmp / "status.json"}"',
         "--set", "export.start_after=3", "--set", "export.every_n_frames=2", "--set", "export.min_free_mb=0",
         "--set", "explain.enabled=true"],  # per-layer statistics into the log, for the activation figures
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (session,) = (tmp / "sessions").iterdir()
    (tmp / "truth.csv").write_text(TRUTH)
    return session, tmp


def test_report_of_a_recorded_session(recorded, capsys):
    session, tmp = recorded
    out = tmp / "report" / "index.html"
    assert main(["report", str(session), "--truth", str(tmp / "truth.csv"), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    figures = tmp / "report" / "index_figures"
    assert sorted(p.name for p in figures.iterdir()) == sorted(
        ["timeline.png", "class_distribution.png", "layer_magnitude.png", "class_activation_histograms.png",
         "export_classes.png", "hog_histograms.png", "confusion.png"])
    assert result["notes"] == []
    for path in figures.iterdir():
        assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5000
    page = out.read_text()
    for name in result["figures"]:
        assert f"index_figures/{name}.png" in page
    assert "Cohen" in page

    log = load_session_log(session)
    assert log.layer_key.startswith("mean") and all(f.layers for f in log.faces)
    assert len(log.faces[-1].layers) >= 10  # every conv layer of mini-XCEPTION, and the class layer
    assert result["analyses"] == len(log.analyses) >= 15 and result["tracks"] == [1]
    assert sum(result["per_class"].values()) == result["faces"]
    assert result["per_class"]["neutral"] > 0 and result["per_class"]["happy"] > 0  # neutral -> smiling
    # The export the daemon wrote for this session is found through session/export.json.
    export = result["export"]
    assert Path(export["path"]).parent == tmp / "exports" and export["patches"] > 10
    assert export["per_class"]["happy"]["episodes"] == 1 and export["hog"]["orientations"] == 9
    status = json.loads((tmp / "status.json").read_text())["export"]  # the daemon's final status
    assert status["written"] == export["patches"] and status["dropped"] == 0 and not status["active"]
    agreement = result["agreement"]
    truth = read_truth(tmp / "truth.csv")
    inside = [t for t, label in log.main_labels() if any(iv.start <= t < iv.end for iv in truth)]
    assert agreement["n"] + agreement["no_face"] == len(inside)
    cm = np.array(agreement["confusion"])
    assert cm.sum() == agreement["n"] and agreement["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-4)
    assert agreement["kappa"] == pytest.approx(cohen_kappa(cm), abs=1e-4)
    assert agreement["kappa"] > 0.5  # a clear neutral -> happy video: the model agrees with me well beyond chance


def test_report_text_output_and_default_location(recorded, capsys):
    session, _ = recorded
    assert main(["report", str(session)]) == 0
    text = capsys.readouterr().out
    assert f"report: {session / 'report.html'}" in text and "timeline" in text
    assert (session / "report_figures" / "timeline.png").is_file()


def write_log(path: Path, faces_per_frame: list[list[dict]]) -> None:
    lines = []
    for i, faces in enumerate(faces_per_frame):
        analysis = {"frame": i, "t": 10.0 + i / 10, "size": [640, 360], "faces": faces}
        lines.append({"frame": i, "source_frame": i, "captured": 10.0 + i / 10, "written": 10.0 + i / 10,
                      "preset": "x", "analysis": analysis})
    path.mkdir(parents=True, exist_ok=True)
    (path / "frames.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def log_face(label: str, layers) -> dict:
    probs = {n: 0.01 for n in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")}
    probs[label] = 0.94
    key = "explain" if "keys" in layers else "layers"
    return {"box": [10, 10, 60, 70], "score": 0.99, "landmarks": None, "track_id": 1, "label": label,
            "probabilities": probs, key: layers}


@pytest.mark.parametrize("style", ["explain", "explain-all", "dict", "list", "plain"])
def test_per_layer_statistics_give_activation_figures(tmp_path, style, capsys):
    def layers(i):
        values = {"conv1": 0.1 * i, "block4": 1.0 + i, "class": 5.0 - i}
        keys = ["mean", "max", "above", "cx", "cy", "eyes", "nose", "mouth"]
        if style == "explain":  # emocam.explain's log entry, statistics of the predicted class's maps
            return {"mode": "cam", "class": "happy", "keys": keys,
                    "layers": {k: [v, 1.0, 0.2, 30.0, 40.0, None, None, None] for k, v in values.items()}}
        if style == "explain-all":  # log_classes = "all": one row per map (7 on the class layer)
            label = "happy" if i < 4 else "sad"
            rows = {k: [[v, 1.0, 0.2, 30.0, 40.0, 0.1, 0.1, 0.1]] for k, v in values.items() if k != "class"}
            rows["class"] = [[values["class"] if n == label else -1.0, 1, 0, 0, 0, 0, 0, 0]
                             for n in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")]
            return {"mode": "gradcam", "keys": keys, "layers": rows}
        if style == "dict":
            return {k: {"mean": v, "max": 2 * v} for k, v in values.items()}
        if style == "list":
            return [{"name": k, "mean": v} for k, v in values.items()]
        return values

    write_log(tmp_path / "s", [[log_face("happy" if i < 4 else "sad", layers(i))] for i in range(6)])
    assert main(["report", str(tmp_path / "s"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"layer_magnitude", "class_activation_histograms"} <= set(result["figures"])
    log = load_session_log(tmp_path / "s")
    assert log.faces[2].layers == {"conv1": pytest.approx(0.2), "block4": 3.0, "class": 3.0}
    assert log.layer_key == {"plain": "value", "explain": "mean (cam maps)",
                             "explain-all": "mean (gradcam maps)"}.get(style, "mean")
    assert any("No export" in n for n in result["notes"])


def test_a_log_without_layer_statistics_says_so(tmp_path, capsys):
    write_log(tmp_path / "s", [[{**log_face("happy", {}), "layers": None}]] * 3)
    assert main(["report", str(tmp_path / "s"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["figures"]) == {"timeline", "class_distribution"}
    assert any("no per-layer statistics" in n for n in result["notes"])
    assert "no per-layer statistics" in (tmp_path / "s" / "report.html").read_text()


def test_cohen_kappa():
    # Two raters, 50 items: agree on 20 yes + 15 no. p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5 -> 0.4
    assert cohen_kappa(np.array([[20, 5], [10, 15]])) == pytest.approx(0.4)
    assert cohen_kappa(np.diag([3, 4, 5])) == pytest.approx(1.0)
    assert cohen_kappa(np.array([[7, 0], [0, 0]])) is None  # one class only: chance explains everything


def test_truth_csv_errors(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("0,1,joy\n")
    with pytest.raises(EmoCamError, match="'joy' is not one of"):
        read_truth(bad)
    bad.write_text("0,x,happy\n")
    with pytest.raises(EmoCamError, match="row 1"):
        read_truth(bad)
    bad.write_text("0,1,happy\n2,1.5,sad\n")
    with pytest.raises(EmoCamError, match="not after start"):
        read_truth(bad)
    bad.write_text("0,2,happy\n1.5,3,sad\n")
    with pytest.raises(EmoCamError, match="overlap"):
        read_truth(bad)


def test_report_without_a_log_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no frames.jsonl" in capsys.readouterr().err
