"""scripts/gpu_train_classifier.sh end to end on the CPU with a few real faces, as the GPU image would run it:
from a packed archive, without pyvirtualcam or obsws-python importable, results in OUT."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from emocam.classify.repvgg import RepVGGClassifier, RepVGGOptions
from emocam.weights import WeightStore

ROOT = Path(__file__).resolve().parents[1]


def test_pack_then_one_call_trains_teachers_and_a_soup_of_students(data_dir, fer_train_dir, models_dir, tmp_path):
    pack = tmp_path / "pack"
    subprocess.run([sys.executable, str(ROOT / "scripts/pack_device.py"), "--data", str(data_dir), "--per-class",
                    "10", "--dest", str(pack)], check=True, capture_output=True, timeout=120)
    blocked = tmp_path / "blocked"
    for name in ("pyvirtualcam", "obsws_python"):  # not on the GPU image
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('no {name} here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocked), "PY": sys.executable, "PACK": str(pack),
           "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "DEVICE": "cpu",
           "TEACHER_S": "1", "STUDENT_S": "1", "THREADS": "1", "STUDENTS": "2"}
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_train_classifier.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    students = ("student-s0", "student-s1")
    assert all(summary[run]["epoch"] >= 1 for run in ("teacher-0", "teacher-1", *students))
    soup = json.loads((out / "soup.json").read_text())
    assert soup["soup"] == [f"{s}/last.pt" for s in students] and summary["soup"]["val_acc"] == soup["val_acc"]
    # all run as classifiers as they come back; the teachers are fer-m, whose shapes face64-m shares
    RepVGGClassifier(RepVGGOptions(weights=str(out / "deploy.pt")), torch.device("cpu"), WeightStore(models_dir))
    for teacher in ("teacher-0-fp16.pt", "teacher-1-fp16.pt"):
        RepVGGClassifier(RepVGGOptions(weights=str(out / teacher), arch="repvggplus-fer-m"), torch.device("cpu"),
                         WeightStore(models_dir))
    recipes = [torch.load(out / f"{s}.pt", weights_only=True)["recipe"] for s in students]
    assert all(r["teachers"] and r["distill_online"] for r in recipes)
    assert [r["seed"] for r in recipes] == [0, 1]
    assert torch.load(out / "soup.pt", weights_only=True)["arch"] == "repvggplus-fer-xw"  # the shipped variant
