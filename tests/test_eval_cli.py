"""`emocam eval classifier|speed|detector` end to end: stand-in backends on made-up data, and the real models."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from emocam.classify import CLASSIFIERS, Classifier
from emocam.cli import main
from emocam.detect import DETECTORS, Detector
from emocam.errors import ConfigError
from emocam.evaluate.speed import time_per_face
from emocam.nets import quantize
from emocam.types import EMOTIONS, Face


class BlobDetector(Detector):
    """Finds bright rectangles on black; the score is the brightness, so a test sets the ranking."""

    name = "test-blobs"

    def detect(self, image_bgr):
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        contours, _ = cv2.findContours((gray > 100).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        faces = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            faces.append(Face(np.array([x, y, x + w, y + h], np.float32), float(gray[y, x]) / 255))
        return sorted(faces, key=lambda f: -f.score)


class GrayClassifier(Classifier):
    """Class k for a crop whose mean gray level lies in [32k, 32k + 32)."""

    name = "test-gray"

    def predict_crops(self, crops_bgr):
        probs = np.zeros((len(crops_bgr), 7), np.float32)
        for i, crop in enumerate(crops_bgr):
            probs[i, min(int(crop.mean()) // 32, 6)] = 1.0
        return probs


@pytest.fixture
def stand_ins(monkeypatch):
    monkeypatch.setitem(DETECTORS._items, BlobDetector.name, BlobDetector)
    monkeypatch.setitem(CLASSIFIERS._items, GrayClassifier.name, GrayClassifier)
    return ["--set", f"detector.name={BlobDetector.name}", "--set", f"classifier.name={GrayClassifier.name}"]


def run_json(capsys, argv):
    code = main(argv + ["--json"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    return code, json.loads(captured.out)


def write_csv(path, header, rows):
    path.write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")


# --- classifier --------------------------------------------------------------------------------------------------

@pytest.fixture
def crops(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    for k, name in enumerate(EMOTIONS):  # one crop per class, labelled right, in images/
        cv2.imwrite(str(tmp_path / "images" / f"set1_{k}.png"), np.full((48, 48), 32 * k + 10, np.uint8))
        rows.append((f"set1_{k}.png", name))
    # Next to the CSV, looks happy, labelled sad: wrong. Then a missing file and a corrupt one.
    cv2.imwrite(str(tmp_path / "set2_happy.png"), np.full((48, 48), 32 * 3 + 10, np.uint8))
    (tmp_path / "set2_corrupt.jpg").write_bytes(b"not a jpeg")
    rows += [("set2_happy.png", "sad"), ("set2_missing.png", "angry"), ("set2_corrupt.jpg", "fear")]
    write_csv(tmp_path / "labels.csv", "file,label", rows)
    return tmp_path / "labels.csv"


def test_classifier_json(capsys, stand_ins, crops, tmp_path):
    code, r = run_json(capsys, ["eval", "classifier", "--labels", str(crops), "--plot", str(tmp_path / "cm.png"),
                                *stand_ins])
    assert code == 0
    assert r["classifier"] == "test-gray"
    # 8 readable crops, 7 right: accuracy 7/8. sad: 2 true, one predicted (right); happy: 1 true, predicted twice.
    assert (r["n"], r["unreadable"], r["accuracy"]) == (8, 2, 0.875)
    assert sorted(r["unreadable_files"]) == ["set2_corrupt.jpg", "set2_missing.png"]
    assert r["per_class"]["sad"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert r["per_class"]["happy"] == {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}
    # macro-F1: five classes at 1, happy and sad at 2/3 -> (5 + 4/3) / 7.
    assert r["macro_f1"] == pytest.approx((5 + 4 / 3) / 7, abs=1e-4)
    assert r["confusion"]["labels"] == list(EMOTIONS)
    assert r["confusion"]["matrix"][4][3] == 1 and sum(map(sum, r["confusion"]["matrix"])) == 8
    assert r["images_per_s"] > 0
    assert cv2.imread(r["plot"]) is not None


def test_classifier_filter_limit_and_table(capsys, stand_ins, crops):
    code, r = run_json(capsys, ["eval", "classifier", "--labels", str(crops), "--filter-prefix", "set2_", *stand_ins])
    assert (r["n"], r["unreadable"], r["accuracy"]) == (1, 2, 0.0)
    code, r = run_json(capsys, ["eval", "classifier", "--labels", str(crops), "--limit", "3", *stand_ins])
    assert (r["n"], r["accuracy"]) == (3, 1.0)

    assert main(["eval", "classifier", "--labels", str(crops), *stand_ins]) == 0
    text = capsys.readouterr().out
    assert "accuracy 0.875" in text and "confusion (rows true, columns predicted)" in text


def test_classifier_bad_input_is_one_line_error(capsys, stand_ins, tmp_path):
    write_csv(tmp_path / "bad.csv", "file,label", [("a.png", "bored")])
    assert main(["eval", "classifier", "--labels", str(tmp_path / "bad.csv"), *stand_ins]) == 2
    assert "bad.csv:2: unknown label 'bored'" in capsys.readouterr().err
    write_csv(tmp_path / "cols.csv", "path,emotion", [("a.png", "sad")])
    assert main(["eval", "classifier", "--labels", str(tmp_path / "cols.csv"), *stand_ins]) == 2
    assert "no column file, label" in capsys.readouterr().err
    assert main(["eval", "classifier", "--labels", str(tmp_path / "none.csv"), *stand_ins]) == 2
    assert main(["eval", "classifier", "--labels", str(tmp_path / "bad.csv"), "--filter-prefix", "x", *stand_ins]) == 2
    assert "no rows to evaluate" in capsys.readouterr().err


# --- detector ----------------------------------------------------------------------------------------------------

@pytest.fixture
def scenes(tmp_path):
    (tmp_path / "images").mkdir()

    def scene(name, blobs):
        img = np.zeros((240, 320, 3), np.uint8)
        for (x1, y1, x2, y2), value in blobs:
            img[y1:y2, x1:x2] = value
        cv2.imwrite(str(tmp_path / "images" / name), img)

    scene("a.png", [((10, 10, 60, 60), 250)])  # face found (score .98); a 30 px face beside it is missed
    scene("b.png", [((10, 10, 90, 90), 200), ((200, 200, 210, 210), 240)])  # face found (.78); blob on ignore (.94)
    scene("c.png", [((50, 50, 80, 80), 220)])  # no faces: a false positive (.86)
    (tmp_path / "images" / "d.png").write_bytes(b"corrupt")  # its face is left out with it
    write_csv(tmp_path / "boxes.csv", "file,x1,y1,x2,y2",
              [("a.png", 10, 10, 60, 60), ("a.png", 100, 10, 130, 40), ("b.png", 10, 10, 90, 90),
               ("d.png", 0, 0, 50, 50)])
    write_csv(tmp_path / "ignore.csv", "file,x1,y1,x2,y2", [("b.png", 200, 200, 210, 210)])
    write_csv(tmp_path / "images.csv", "file,width,height", [(f"{n}.png", 320, 240) for n in "abcd"])
    return tmp_path


def test_detector_json(capsys, stand_ins, scenes):
    # The CSVs name files without images/; they resolve to images/ beside the CSV.
    argv = ["eval", "detector", "--boxes", str(scenes / "boxes.csv"), "--ignore", str(scenes / "ignore.csv"),
            "--images", str(scenes / "images.csv"), *stand_ins]
    code, r = run_json(capsys, argv)
    assert code == 0
    # Ranked without the ignored blob: TP .98, FP .86, TP .78 over 3 faces.
    # recall 1/3 1/3 2/3, precision 1 1/2 2/3 -> envelope 1, 2/3, 2/3 -> AP = 1/3 + 1/3 * 2/3 = 5/9.
    assert r["ap50"] == pytest.approx(5 / 9, abs=1e-4)
    assert (r["images"], r["unreadable"], r["unreadable_files"]) == (3, 1, ["d.png"])
    assert (r["n_gt"], r["n_ignore"], r["detections"]) == (3, 1, 4)
    assert (r["true_positives"], r["false_positives"], r["ignored_detections"]) == (2, 1, 1)
    assert r["recall"] == pytest.approx(2 / 3, abs=1e-4)
    by_size = {b["width"]: (b["n_gt"], b["found"]) for b in r["by_size"]}
    assert by_size == {"<10": (0, 0), "10-20": (0, 0), "20-40": (1, 0), "40-80": (1, 1), ">=80": (1, 1)}

    # --min-size 40: the missed 30 px face becomes ignore. recall 1/2 1/2 1, precision 1 1/2 2/3
    # -> AP = 1/2 + 1/2 * 2/3 = 5/6.
    code, r = run_json(capsys, argv + ["--min-size", "40"])
    assert r["ap50"] == pytest.approx(5 / 6, abs=1e-4) and (r["n_gt"], r["n_ignore"]) == (2, 2)


def test_detector_finds_images_csv_beside_boxes_and_limits(capsys, stand_ins, scenes):
    boxes = str(scenes / "boxes.csv")
    write_csv(scenes / "images.csv", "file", [(f"images/{n}.png",) for n in "cba"])
    write_csv(scenes / "boxes.csv", "file,x1,y1,x2,y2", [("images/b.png", 10, 10, 90, 90)])
    code, r = run_json(capsys, ["eval", "detector", "--boxes", boxes, *stand_ins])
    # c (FP .86), a (FP .98, its face is not in this CSV), b (face .78, blob .94 FP without --ignore).
    # Ranked: FP .98, FP .94, FP .86, TP .78 -> AP = 1 * 1/4.
    assert r["images_csv"] == str(scenes / "images.csv")
    assert (r["images"], r["n_gt"], r["ap50"]) == (3, 1, 0.25)
    code, r = run_json(capsys, ["eval", "detector", "--boxes", boxes, "--limit", "1", *stand_ins])
    assert (r["images"], r["n_gt"], r["ap50"], r["false_positives"]) == (1, 0, None, 1)

    assert main(["eval", "detector", "--boxes", boxes, *stand_ins]) == 0
    assert "AP@0.5 0.250" in capsys.readouterr().out


def test_detector_max_side_maps_boxes_back(capsys, stand_ins, scenes):
    write_csv(scenes / "boxes.csv", "file,x1,y1,x2,y2", [("b.png", 10, 10, 90, 90)])
    write_csv(scenes / "images.csv", "file", [("b.png",)])
    code, r = run_json(capsys, ["eval", "detector", "--boxes", str(scenes / "boxes.csv"), "--ignore",
                                str(scenes / "ignore.csv"), "--max-side", "160", *stand_ins])
    assert (r["max_side"], r["true_positives"], r["ap50"]) == (160, 1, 1.0)


def test_detector_where_turns_other_rows_into_ignore_boxes(capsys, stand_ins, scenes):
    write_csv(scenes / "boxes.csv", "file,x1,y1,x2,y2,blur",
              [("a.png", 10, 10, 60, 60, "0"), ("a.png", 100, 10, 130, 40, "2"), ("b.png", 10, 10, 90, 90, "")])
    argv = ["eval", "detector", "--boxes", str(scenes / "boxes.csv"), "--ignore", str(scenes / "ignore.csv"),
            "--images", str(scenes / "images.csv"), *stand_ins]
    code, r = run_json(capsys, argv + ["--where", "blur=0,1"])
    # The blurred 30 px face is ignored; the face without the attribute stays.
    assert (r["where"], r["n_gt"], r["n_ignore"], r["true_positives"]) == (["blur=0,1"], 2, 2, 2)
    code, r = run_json(capsys, argv + ["--where", "blur=2"])
    assert (r["n_gt"], r["true_positives"]) == (2, 1)
    assert main(argv + ["--where", "blur"]) == 2
    assert "expected COLUMN=VALUE" in capsys.readouterr().err
    assert main(argv + ["--where", "pose=0"]) == 2
    assert "no column pose" in capsys.readouterr().err


def test_detector_as_height_scales_image_and_boxes(capsys, stand_ins, scenes):
    # b.png is 320x240 with an 80x80 face at (10, 10); as a 480 px high frame everything doubles: a 160x160 face
    # at (20, 20), which --min-height 100 keeps (it would drop the original 80 px one) and the width bins see as
    # >=80. With --max-side 160 the detector sees 160x120, a quarter of the frame; its box maps back to the frame.
    write_csv(scenes / "boxes.csv", "file,x1,y1,x2,y2", [("b.png", 10, 10, 90, 90)])
    write_csv(scenes / "images.csv", "file", [("b.png",)])
    argv = ["eval", "detector", "--boxes", str(scenes / "boxes.csv"), "--ignore", str(scenes / "ignore.csv"),
            "--min-height", "100", *stand_ins]
    code, r = run_json(capsys, argv)
    assert (r["as_height"], r["min_height"], r["n_gt"], r["n_ignore"]) == (None, 100, 0, 2)
    for extra in ([], ["--max-side", "160"]):
        code, r = run_json(capsys, argv + ["--as-height", "480", *extra])
        assert (r["as_height"], r["n_gt"], r["n_ignore"], r["true_positives"], r["ap50"]) == (480, 1, 1, 1, 1.0)
        # The 10 px blob on the ignore box is 20 px in the frame, and the ignore box scaled with it.
        assert (r["ignored_detections"], r["false_positives"]) == (1, 0)
        assert [b["n_gt"] for b in r["by_size"]] == [0, 0, 0, 0, 1]
    assert main(argv + ["--as-height", "480", "--max-side", "160"]) == 0
    assert "(as 480px high, min-height 100px, max-side 160px)" in capsys.readouterr().out


class ResetCounter(BlobDetector):
    name = "test-reset-counter"
    resets = 0

    def reset(self):
        type(self).resets += 1


def test_detector_is_reset_before_each_image(capsys, monkeypatch, scenes):
    monkeypatch.setitem(DETECTORS._items, ResetCounter.name, ResetCounter)
    code, r = run_json(capsys, ["eval", "detector", "--boxes", str(scenes / "boxes.csv"), "--detector",
                                ResetCounter.name])
    assert r["images"] == 3 and ResetCounter.resets == 3


# --- speed -------------------------------------------------------------------------------------------------------

def test_speed_times_each_classifier_at_each_thread_count(capsys, stand_ins, crops):
    code, r = run_json(capsys, ["eval", "speed", "--labels", str(crops), "--classifiers", "test-gray",
                                "--threads", "1,2", "--rounds", "2", "--warmup", "1", *stand_ins])
    assert code == 0
    assert (r["faces"], r["unreadable"], r["rounds"]) == (8, 2, 2)
    assert [(t["classifier"], t["threads"]) for t in r["per_face"]] == [("test-gray", 1), ("test-gray", 2)]
    for t in r["per_face"]:
        assert 0 < t["wall_ms_min"] <= t["wall_ms"] and 0 <= t["cpu_ms_min"] <= t["cpu_ms"]
    assert "progress" not in capsys.readouterr().out  # progress goes to stderr, the JSON alone to stdout


def test_timing_builds_for_each_thread_count_and_puts_the_callers_back():
    before = torch.get_num_threads()
    made_with = []

    def build(threads):
        made_with.append((threads, torch.get_num_threads()))
        torch.set_num_threads(5)  # as select_device does with the configured count
        return {"gray": GrayClassifier(None, torch.device("cpu"), None)} if threads == 1 else {}

    try:
        torch.set_num_threads(3)
        times = time_per_face(build, [np.zeros((48, 48), np.uint8)] * 4, [1, 2], rounds=2, warmup=0)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert made_with == [(1, 1), (2, 2)]
    assert [(t.classifier, t.threads) for t in times] == [("gray", 1)]  # nothing to time at 2: left out


def test_speed_times_a_classifier_mirrored_beside_itself(capsys, stand_ins, crops, monkeypatch):
    mirrored_calls = []

    class Recording(GrayClassifier):
        def predict_crops(self, crops_bgr):
            mirrored_calls.append(self.mirror)
            return super().predict_crops(crops_bgr)

    monkeypatch.setitem(CLASSIFIERS._items, GrayClassifier.name, Recording)
    code, r = run_json(capsys, ["eval", "speed", "--labels", str(crops), "--classifiers", "test-gray,test-gray+mirror",
                                "--threads", "1", "--rounds", "1", "--warmup", "0", *stand_ins])
    assert code == 0 and [t["classifier"] for t in r["per_face"]] == ["test-gray", "test-gray+mirror"]
    assert mirrored_calls.count(True) == mirrored_calls.count(False) == 8  # 8 faces, each once a round
    assert main(["eval", "speed", "--labels", str(crops), "--classifiers", "nope+mirror", *stand_ins]) == 2
    assert "nope" in capsys.readouterr().err


def test_speed_table_compares_with_the_first_classifier(capsys, stand_ins, crops, monkeypatch):
    class SlowGray(GrayClassifier):
        name = "test-gray-slow"

        def predict_crops(self, crops_bgr):
            deadline = time.process_time() + 0.002
            while time.process_time() < deadline:  # CPU time, not sleep: the table compares CPU
                pass
            return super().predict_crops(crops_bgr)

    monkeypatch.setitem(CLASSIFIERS._items, SlowGray.name, SlowGray)
    code = main(["eval", "speed", "--labels", str(crops), "--classifiers", "test-gray,test-gray-slow",
                 "--threads", "1", "--rounds", "1", "--warmup", "0", *stand_ins])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "8 faces x 1 rounds" in lines[0] and lines[1].endswith("CPU / test-gray")
    first, slow = lines[2].split(), lines[3].split()
    assert first[1] == "test-gray" and first[-1] == "1.00"
    assert slow[1] == "test-gray-slow" and float(slow[4]) >= 2.0 and float(slow[-1]) > 1.0


def test_speed_leaves_out_a_registered_classifier_that_cannot_run_here(capsys, crops, monkeypatch, tmp_path):
    class Unavailable(GrayClassifier):
        name = "test-unavailable"

        def __init__(self, *args):
            raise ConfigError("needs a kernel this machine lacks")

    monkeypatch.setattr(CLASSIFIERS, "_items", {GrayClassifier.name: GrayClassifier, Unavailable.name: Unavailable})
    monkeypatch.setattr(CLASSIFIERS, "_discovered", True)
    # the project's config names backends that this test's registry lacks
    (tmp_path / "config.toml").write_text('[classifier]\nname = "test-gray"\n')
    code = main(["eval", "speed", "--labels", str(crops), "--threads", "1,2", "--rounds", "1", "--warmup", "0",
                 "--config", str(tmp_path / "config.toml"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and [t["classifier"] for t in json.loads(out)["per_face"]] == ["test-gray", "test-gray"]
    assert err.count("test-unavailable is left out: needs a kernel this machine lacks") == 1  # not once per count
    code = main(["eval", "speed", "--labels", str(crops), "--classifiers", "test-unavailable",
                 "--config", str(tmp_path / "config.toml")])
    assert code == 2 and "needs a kernel this machine lacks" in capsys.readouterr().err  # named: an error
    monkeypatch.setattr(CLASSIFIERS, "_items", {GrayClassifier.name: Unavailable, Unavailable.name: Unavailable})
    code = main(["eval", "speed", "--labels", str(crops), "--config", str(tmp_path / "config.toml")])
    err = capsys.readouterr().err
    assert code == 2 and "none of the classifiers can be built here" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads: expected counts of 1 or more"),
    (["--classifiers", " , "], "--classifiers: expected one or more names"),
])
def test_speed_bad_arguments(capsys, crops, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "speed", "--labels", str(crops), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_speed_bad_input_is_one_line_error(capsys, stand_ins, crops, tmp_path):
    code = main(["eval", "speed", "--labels", str(crops), "--classifiers", "test-gray,nope", *stand_ins])
    err = capsys.readouterr().err
    assert code != 0 and "unknown classifier 'nope'" in err and "Traceback" not in err
    write_csv(tmp_path / "none.csv", "file,label", [("set2_corrupt.jpg", "fear")])
    code = main(["eval", "speed", "--labels", str(tmp_path / "none.csv"), *stand_ins])
    err = capsys.readouterr().err
    assert code != 0 and "none of the listed images could be read" in err and "Traceback" not in err


# --- the real models ---------------------------------------------------------------------------------------------

@pytest.mark.data
@pytest.mark.weights
def test_mini_xception_on_fer2013_public_test(capsys, data_dir, models_dir, monkeypatch):
    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    code, r = run_json(capsys, ["eval", "classifier", "--labels", str(data_dir / "eval/emotion/labels.csv"),
                                "--filter-prefix", "fer2013_PublicTest_", "--limit", "64",
                                "--classifier", "mini-xception"])
    assert code == 0 and r["classifier"] == "mini-xception"
    assert (r["n"], r["unreadable"]) == (64, 0)
    # Published ~0.66 on the whole split; 64 images leave a standard error of ~0.06.
    assert r["accuracy"] > 0.4
    assert set(r["per_class"]) == set(EMOTIONS) and len(r["confusion"]["matrix"]) == 7


@pytest.mark.data
@pytest.mark.weights
def test_mtcnn_on_boxes(capsys, data_dir, models_dir, monkeypatch):
    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    boxes = data_dir / "eval/boxes"
    # The first 4 images of images.csv are dlib's examples: 18 faces 37-45 px wide, clearly visible.
    code, r = run_json(capsys, ["eval", "detector", "--boxes", str(boxes / "boxes.csv"), "--ignore",
                                str(boxes / "boxes_ignore.csv"), "--limit", "4", "--detector", "mtcnn"])
    assert code == 0 and r["detector"] == "mtcnn"
    assert (r["images"], r["unreadable"], r["n_gt"]) == (4, 0, 18)
    assert r["ap50"] > 0.8 and r["recall"] > 0.8


@pytest.mark.data
@pytest.mark.weights
def test_mtcnn_as_height_equals_really_resized_images(capsys, data_dir, models_dir, monkeypatch, tmp_path):
    """--as-height on the shared images scores as the same images really resized to that height would."""
    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    shared = data_dir / "eval/boxes"
    # 500x375 (upscaled 2.88x: seven ~37 px faces become ~110 px) and 1024x577 (1.87x: 5 of 7 faces >= 80 px,
    # the other 2 ignored).
    names = ["images/dlib_2007_007763.jpg", "images/wider_13_Interview_Interview_Sequences_13_209.jpg"]
    height = 1080
    rows = [r for r in csv.DictReader((shared / "boxes.csv").open()) if r["file"] in names]
    kept = 0
    originals, resized = [], []
    for name in names:
        image = cv2.imread(str(shared / name))
        h, w = image.shape[:2]
        k = height / h
        big = cv2.resize(image, (round(w * k), height), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(tmp_path / Path(name).with_suffix(".png").name), big)
        for r in (r for r in rows if r["file"] == name):
            x1, y1, x2, y2 = (float(r[c]) for c in ("x1", "y1", "x2", "y2"))
            originals.append((shared / name, x1, y1, x2, y2))
            resized.append((Path(name).with_suffix(".png").name, x1 * k, y1 * k, x2 * k, y2 * k))
            kept += (y2 - y1) * k >= 80
    (tmp_path / "orig").mkdir()
    write_csv(tmp_path / "orig/boxes.csv", "file,x1,y1,x2,y2", originals)
    write_csv(tmp_path / "boxes.csv", "file,x1,y1,x2,y2", resized)

    def scores(boxes, *extra):
        code, r = run_json(capsys, ["eval", "detector", "--boxes", str(boxes), "--detector", "mtcnn",
                                    "--min-height", "80", *extra])
        assert code == 0 and r["images"] == 2
        return r

    keys = ("n_gt", "n_ignore", "detections", "true_positives", "false_positives", "ap50", "recall")
    # At full resolution both ways hand mtcnn the same pixels: the same numbers.
    ours = scores(tmp_path / "orig/boxes.csv", "--as-height", str(height))
    assert ours["n_gt"] == kept == 12
    assert ours["true_positives"] >= 10
    assert {k: ours[k] for k in keys} == pytest.approx({k: scores(tmp_path / "boxes.csv")[k] for k in keys})
    # With --max-side 640 ours resizes once, the other way twice: nearly the same pixels.
    ours = scores(tmp_path / "orig/boxes.csv", "--as-height", str(height), "--max-side", "640")
    theirs = scores(tmp_path / "boxes.csv", "--max-side", "640")
    assert (ours["n_gt"], ours["n_ignore"]) == (theirs["n_gt"], theirs["n_ignore"]) == (kept, 2)
    assert abs(ours["true_positives"] - theirs["true_positives"]) <= 1
    assert ours["ap50"] == pytest.approx(theirs["ap50"], abs=0.1)


@pytest.mark.data
@pytest.mark.weights
def test_speed_of_the_real_classifiers(capsys, data_dir, models_dir, monkeypatch):
    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    code, r = run_json(capsys, ["eval", "speed", "--labels", str(data_dir / "eval/emotion/labels.csv"),
                                "--filter-prefix", "fer2013_PublicTest_", "--limit", "20", "--threads", "1",
                                "--rounds", "1", "--warmup", "2"])
    assert code == 0 and r["faces"] == 20 and r["device"] == "cpu"
    runs_here = [n for n in CLASSIFIERS.names() if quantize.engine() or not n.endswith("-int8")]
    assert [t["classifier"] for t in r["per_face"]] == runs_here
    assert all(t["cpu_ms"] > 0 for t in r["per_face"])
