"""`emocam train classifier`: data sources, augmentation, schedule, learning, checkpoints and resume, the CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import time

import cv2
import numpy as np
import pytest
import torch

from conftest import PER_CLASS
from emocam.cli import main
from emocam.errors import EmoCamError
from emocam.nets.repvgg_plus import build_repvgg_plus, load_deployed, normalise_u8
from emocam.train import emotion_data
from emocam.train.classifier import (Recipe, Trainer, augment, build_teacher, class_weights, cpu_bf16_supported,
                                     load_init, lr_factor, teacher_networks, teacher_probabilities)
from emocam.train.emotion_data import (FaceArrays, affectnet_samples, find_samples, image_folder_samples,
                                       labels_csv_samples, load_faces)
from emocam.types import EMOTIONS

@pytest.fixture(scope="module")
def faces(fer_folder) -> FaceArrays:
    return load_faces(image_folder_samples(fer_folder), 48)


def tiny_recipe(**kw) -> Recipe:
    return Recipe(**{"epochs": 4, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0.5, **kw})


# ---- data sources ------------------------------------------------------------------------------------------------
def test_image_folder_reads_the_seven_emotions_only(fer_folder, faces):
    samples = image_folder_samples(fer_folder)
    assert len(samples) == 7 * PER_CLASS
    assert all(EMOTIONS[s.label] == s.path.parent.name for s in samples)
    assert faces.images.shape == (7 * PER_CLASS, 48, 48) and faces.images.dtype == np.uint8
    assert faces.class_counts().tolist() == [PER_CLASS] * 7
    first = cv2.imread(str(samples[0].path), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(faces.images[0], first)


def test_affectnet_csv_boxes_codes_and_dropped_rows(fer_files, tmp_path):
    """Real faces pasted into larger images at known boxes; codes 0-6 map to our classes, 7-10 are dropped."""
    codes = {"neutral": 0, "happy": 1, "sad": 2, "surprise": 3, "fear": 4, "disgust": 5, "angry": 6}
    rows, expected = [], []
    rng = np.random.default_rng(0)
    (tmp_path / "101").mkdir()
    for i, (emotion, code) in enumerate(list(codes.items()) + [("happy", 7), ("sad", 8), ("fear", 10)]):
        face = cv2.imread(str(fer_files[emotion][i % PER_CLASS]), cv2.IMREAD_GRAYSCALE)
        side = 96  # the face at twice its size, so the crop must be found and scaled back
        canvas = rng.integers(0, 256, (200, 240), dtype=np.uint8)
        x, y = int(rng.integers(0, 240 - side)), int(rng.integers(0, 200 - side))
        canvas[y:y + side, x:x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_NEAREST)
        name = f"101/img{i}.jpg"
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
        rows.append([name, x, y, side, side, "1.0;2.0", code, "0.5", "-0.1"])
        if code <= 6:
            expected.append((emotion, face))
    csv_path = tmp_path / "training.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
                    "expression", "valence", "arousal"])
        w.writerows(rows)
    samples = find_samples(csv_path)
    assert samples == affectnet_samples(csv_path)
    assert [EMOTIONS[s.label] for s in samples] == [e for e, _ in expected]
    loaded = load_faces(samples, 48)
    for (_, face), got in zip(expected, loaded.images):
        assert np.abs(got.astype(int) - face.astype(int)).mean() < 4  # JPEG and resampling, nothing more


def test_affectnet_csv_with_bad_rows_is_a_user_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("subDirectory_filePath,face_x,face_y,face_width,face_height,expression\na.jpg,1,2,x,4,0\n")
    with pytest.raises(EmoCamError, match="bad.csv:2"):
        affectnet_samples(path)
    (tmp_path / "cols.csv").write_text("subDirectory_filePath,expression\na.jpg,0\n")
    with pytest.raises(EmoCamError, match="face_x"):
        find_samples(tmp_path / "cols.csv")


def test_labels_csv_with_prefix_filter(data_dir):
    samples = labels_csv_samples(data_dir / "eval/emotion/labels.csv", "fer2013_PublicTest_")
    assert samples and all(s.path.name.startswith("fer2013_PublicTest_") and s.path.is_file() for s in samples[:20])
    assert len(samples) < sum(1 for _ in open(data_dir / "eval/emotion/labels.csv")) - 1


def test_export_sessions_use_the_reviewed_folder(fer_files, tmp_path):
    """An EmoCam export session: the emotion folder a patch is in now is its label (here: moved to sad)."""
    session = tmp_path / "s0001"
    (session / "happy").mkdir(parents=True)
    (session / "sad").mkdir()
    (session / "manifest.jsonl").write_text("")
    for i, f in enumerate(fer_files["happy"][:3]):
        (session / ("happy" if i else "sad") / f"p{i}.png").write_bytes(
            cv2.imencode(".png", cv2.imread(str(f)))[1].tobytes())
    labels = sorted(EMOTIONS[s.label] for s in find_samples(tmp_path))
    assert labels == ["happy", "happy", "sad"]


def test_faces_are_cached_and_reread(fer_folder, tmp_path, monkeypatch):
    samples = image_folder_samples(fer_folder)[:50]
    first = load_faces(samples, 48, tmp_path)
    assert len(list(tmp_path.glob("faces-48-50-*.npy"))) == 1
    monkeypatch.setattr(emotion_data, "decode", lambda *a: pytest.fail("decoded again despite the cache"))
    again = load_faces(samples, 48, tmp_path)
    np.testing.assert_array_equal(first.images, again.images)


def test_an_image_replaced_under_the_same_name_is_decoded_again(tmp_path):
    folder = tmp_path / "faces" / "happy"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), np.zeros((48, 48), np.uint8))
    assert load_faces(find_samples(tmp_path / "faces"), 48, tmp_path / "cache").images.mean() == 0
    cv2.imwrite(str(folder / "a.png"), np.full((48, 48), 255, np.uint8))
    os.utime(folder / "a.png", ns=(1, 10**18))  # a clearly different modification time, whatever the clock
    assert load_faces(find_samples(tmp_path / "faces"), 48, tmp_path / "cache").images.mean() == 255


def test_csv_files_with_a_byte_order_mark_and_bad_affectnet_rows(tmp_path, data_dir):
    labels = tmp_path / "labels.csv"
    labels.write_text("\ufefffile,label\nx.png,happy\n", encoding="utf-8")  # as Excel saves it
    assert [s.label for s in labels_csv_samples(labels)] == [EMOTIONS.index("happy")]
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    for row in ("1/b.jpg,0,0,10", "1/b.jpg,0,0,inf,10,,1,0,0"):  # short; infinite
        bad = tmp_path / "bad.csv"
        bad.write_text(f"{header}\n{row}\n")
        with pytest.raises(EmoCamError, match="bad.csv:2: expression and face box must be numbers"):
            affectnet_samples(bad)


def test_unknown_data_is_a_user_error(tmp_path):
    with pytest.raises(EmoCamError, match="no labelled faces"):
        find_samples(tmp_path)


# ---- augmentation, schedule, weights ------------------------------------------------------------------------------
def test_augment_without_randomness_is_identity_or_mirror(faces):
    x = torch.from_numpy(faces.images[:16]).unsqueeze(1).float() / 255
    off = Recipe(max_rotation_deg=0, scale_range=(1, 1), max_shift=0, brightness=0, contrast=0, erase_prob=0)
    out = augment(x, off, torch.Generator().manual_seed(0))
    for a, b in zip(out, x):
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a, b.flip(-1), atol=1e-5)
    full = augment(x, Recipe(erase_prob=1.0), torch.Generator().manual_seed(0))
    assert full.shape == x.shape and float(full.min()) >= 0 and float(full.max()) <= 1
    erased = (full == 0.5).flatten(1).float().mean(1)
    assert float(erased.min()) >= 0.01  # every image got its gray rectangle
    again = augment(x, Recipe(erase_prob=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(full, again)  # the generator alone decides: resumable


def test_schedule_warms_up_then_decays_to_zero():
    r = Recipe(epochs=10, warmup_epochs=1)
    f = [lr_factor(s, 100, r) for s in range(1000)]
    assert f[0] < 0.05 and max(f) == pytest.approx(1.0, abs=0.01) and f.index(max(f)) <= 101
    assert all(a >= b for a, b in zip(f[100:], f[101:])) and f[-1] < 1e-4


def test_class_weights_favour_rare_classes_and_average_one():
    counts = np.array([4000, 400, 4000, 7000, 5000, 3000, 5000])
    w = class_weights(counts, 0.5).numpy()
    assert w[1] == w.max() and w[3] == w.min()
    assert float((w * counts).sum() / counts.sum()) == pytest.approx(1.0)
    assert np.allclose(class_weights(counts, 0.0).numpy(), 1.0)


# ---- learning, checkpoints ---------------------------------------------------------------------------------------
def batch_loss(trainer: Trainer, faces: FaceArrays) -> float:
    """Plain cross-entropy of the whole set as one batch in training mode (batch statistics, a fixed dropout
    mask), so that it measures the weights, not how far BatchNorm's running statistics have caught up."""
    trainer.model.train()
    torch.manual_seed(123)
    with torch.no_grad():
        logits = trainer.model(normalise_u8(torch.from_numpy(faces.images).unsqueeze(1)))
    return float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(faces.labels)))


@pytest.mark.parametrize("cpu_bf16", [False, True], ids=["float32", "bfloat16"])
def test_a_few_steps_on_real_faces_lower_the_loss(faces, cpu_bf16):
    """32 steps on 64 real faces, augmentation and smoothing off: the loss can only reflect learning."""
    if cpu_bf16 and not cpu_bf16_supported():
        pytest.skip("this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
    torch.set_num_threads(1)  # on a busy 2-core machine a second thread mostly waits for the first
    pick = np.concatenate([np.flatnonzero(faces.labels == c)[:10] for c in range(7)])[:64]
    few = FaceArrays(faces.images[pick], faces.labels[pick])
    plain = tiny_recipe(epochs=8, batch_size=16, lr=0.05, label_smoothing=0.0, class_weight_power=0.0,
                        max_rotation_deg=0, scale_range=(1, 1), max_shift=0, brightness=0, contrast=0, erase_prob=0,
                        cpu_bf16=cpu_bf16)
    trainer = Trainer(plain, few, "unused", torch.device("cpu"))
    before = batch_loss(trainer, few)
    losses = [trainer.train_epoch()["train_loss"] for _ in range(plain.epochs)]
    assert trainer.scheduler.last_epoch == 32
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.3
    assert batch_loss(trainer, few) < before - 0.5


def test_resume_continues_exactly_where_the_run_stopped(faces, tmp_path):
    torch.set_num_threads(1)
    small = FaceArrays(faces.images[::2], faces.labels[::2])
    straight = Trainer(tiny_recipe(epochs=2), small, tmp_path / "a", torch.device("cpu"))
    straight.fit()
    interrupted = Trainer(tiny_recipe(epochs=2), small, tmp_path / "b", torch.device("cpu"))
    interrupted.fit(until=1)  # as if killed during epoch 2: only OUT/last.pt of epoch 1 counts
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    resumed = Trainer(tiny_recipe(epochs=2), small, tmp_path / "b", torch.device("cpu"))
    resumed.load_state(state)
    assert resumed.epoch == 1 and len(resumed.recipe.history) == 1
    resumed.fit()
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch
    assert torch.equal(resumed.gen.get_state(), straight.gen.get_state())


def test_a_time_budget_sets_the_length_after_the_warm_up_epoch(faces, tmp_path):
    torch.set_num_threads(1)
    small = FaceArrays(faces.images[::4], faces.labels[::4])
    planned = Trainer(tiny_recipe(epochs=3, warmup_epochs=1.0), small, tmp_path / "a", torch.device("cpu"))
    planned.fit(until=1)
    squeezed = Trainer(tiny_recipe(epochs=3, warmup_epochs=1.0), small, tmp_path / "b", torch.device("cpu"))
    assert squeezed.fit(time_budget=1e-6)["epochs"] == 1  # nothing more fits: the warm-up epoch is the run
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["recipe"]["epochs"] == 1
    for key, value in planned.model.state_dict().items():  # the warm-up does not depend on the run's length
        torch.testing.assert_close(squeezed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    roomy = Trainer(tiny_recipe(epochs=2, warmup_epochs=1.0), small, tmp_path / "c", torch.device("cpu"))
    assert roomy.fit(time_budget=1e6)["epochs"] == 2  # --epochs stays the cap


def test_a_time_budget_counts_later_epochs_without_the_first_steps_one_off_costs(faces, tmp_path, monkeypatch):
    """On a GPU the first epoch's first steps also pay kernel selection and lazy set-up (5.5 s against 4 s later
    for fer-m on an H200): sizing by the whole first epoch left a quarter of the budget unused."""
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def epoch(self):  # 10 s, of which 6 s one-off: later epochs cost 4 s
        clock[0] += 10.0 if self.epoch == 0 else 4.0
        self.start_up_seconds = 6.0 if self.epoch == 0 else 0.0
        return {"train_loss": 1.0, "train_acc": 0.5, "seconds": 10.0 if self.epoch == 0 else 4.0}

    monkeypatch.setattr(Trainer, "train_epoch", epoch)
    small = FaceArrays(faces.images[:16], faces.labels[:16])
    trainer = Trainer(tiny_recipe(epochs=100, warmup_epochs=1.0), small, tmp_path, torch.device("cpu"))
    assert trainer.fit(time_budget=30)["epochs"] == 6  # 10 s + 5 x 4 s (by the whole first epoch: 3)
    assert clock[0] == 30.0


def test_best_epoch_export_and_init(faces, tmp_path):
    """best.pt/deploy.pt/metrics.csv after fit; --init loads training weights and refuses deploy ones."""
    few = FaceArrays(faces.images[::4], faces.labels[::4])
    trainer = Trainer(tiny_recipe(epochs=2), few, tmp_path, torch.device("cpu"), val=few)
    trainer.fit()
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(r["val_acc"] and r["train_loss"] for r in rows)
    # deploy.pt is the best epoch reparameterised: it reproduces that epoch's validation accuracy
    best = trainer.best()
    deployed = load_deployed("repvggplus-fer-xs", torch.load(tmp_path / "deploy.pt", weights_only=True))
    pred = trainer.predict(few.images, deployed)
    assert float((pred == few.labels).mean()) == pytest.approx(best["val_acc"], abs=1e-4)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == best["epoch"]
    fresh = build_repvgg_plus("repvggplus-fer-xs")
    load_init(fresh, tmp_path / "best.pt")
    for key, value in torch.load(tmp_path / "best.pt", weights_only=True)["model"].items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # deploy weights (all a shipped model has) start a fine-tune too: the same predictions in eval mode
    images = torch.from_numpy(few.images)
    from_deploy = build_repvgg_plus("repvggplus-fer-xs")
    load_init(from_deploy, tmp_path / "deploy.pt", images)
    assert (trainer.predict(few.images, from_deploy) == pred).all()
    with pytest.raises(EmoCamError, match="need training faces"):
        load_init(build_repvgg_plus("repvggplus-fer-xs"), tmp_path / "deploy.pt")
    with pytest.raises(EmoCamError, match="another variant"):
        load_init(build_repvgg_plus("repvggplus-fer-xw"), tmp_path / "deploy.pt", images)


def image_folder(fer_files, root, per_class: int):
    """An image folder of the first `per_class` real faces of each emotion (symlinks)."""
    for emotion, files in fer_files.items():
        (root / emotion).mkdir(parents=True)
        for f in files[:per_class]:
            (root / emotion / f.name).symlink_to(f)
    return root


def test_cli_trains_resumes_and_refuses_to_overwrite(fer_files, tmp_path, capsys):
    data = image_folder(fer_files, tmp_path / "faces", 8)
    out = tmp_path / "run"
    args = ["train", "classifier", "--data", str(data), "--out", str(out), "--teacher", "mini-xception",
            "--epochs", "1", "--weight-decay", "1e-4", "--erase-prob", "0.25", "--batch-size", "16", "--threads", "1"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["epochs"] == 1 and (out / "deploy.pt").is_file() and list((out / "cache").glob("*.npy"))
    recipe = torch.load(out / "last.pt", weights_only=True)["recipe"]
    assert (recipe["weight_decay"], recipe["erase_prob"]) == (1e-4, 0.25)
    assert (list(recipe["teachers"]), recipe["distill_weight"]) == (["mini-xception"], 0.5)
    assert list((out / "cache").glob("teachers-*.npy"))
    assert main(args) == 2  # last.pt exists: a second run must say --resume instead of overwriting it
    assert "--resume" in capsys.readouterr().err
    assert main(args[:-6] + ["--epochs", "2", "--resume"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["epochs"] == 2
    assert math.isfinite(report["best"]["train_loss"])


# ---- distillation ------------------------------------------------------------------------------------------------
def test_teacher_probabilities_average_teachers_and_mirrors_and_are_cached(faces, models_dir, tmp_path, monkeypatch):
    from emocam.backends import build_classifier
    from emocam.config import load_config

    cfg = load_config(None, [f"runtime.models_dir={str(models_dir)!r}"])
    few = FaceArrays(faces.images[::20], faces.labels[::20])
    probs = teacher_probabilities(("mini-xception", "repvgg-fer"), few, cfg, tmp_path)
    assert probs.shape == (len(few), 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    crops = [cv2.cvtColor(g, cv2.COLOR_GRAY2BGR) for g in few.images]
    mirrored = [c[:, ::-1].copy() for c in crops]
    expected = sum(build_classifier(cfg, n).predict_crops(c) for n in ("mini-xception", "repvgg-fer")
                   for c in (crops, mirrored)) / 4
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    import emocam.classify.base as base

    monkeypatch.setattr(base.Classifier, "predict_crops", lambda *a: pytest.fail("teachers ran again"))
    np.testing.assert_array_equal(teacher_probabilities(("mini-xception", "repvgg-fer"), few, cfg, tmp_path), probs)


def test_a_teacher_may_be_a_deploy_file(faces, models_dir):
    """A bigger model trained first teaches through its deploy.pt, without a manifest entry."""
    from emocam.config import load_config

    cfg = load_config(None, [f"runtime.models_dir={str(models_dir)!r}"])
    few = FaceArrays(faces.images[:40], faces.labels[:40])
    by_file = teacher_probabilities((str(models_dir / "repvgg_fer.pth"),), few, cfg, None)
    np.testing.assert_allclose(by_file, teacher_probabilities(("repvgg-fer",), few, cfg, None), atol=1e-6)
    with pytest.raises(EmoCamError, match="neither a classifier"):
        teacher_probabilities(("no-such-teacher",), few, cfg, None)


def test_a_deploy_file_of_an_ambiguous_shape_teaches_as_the_variant_it_was_trained_as(tmp_path, models_dir):
    """fer-m and face64-m share their deploy shapes: the best.pt training writes beside deploy.pt names the
    variant, else --set classifier.repvgg-fer.arch does; with neither the user is told to set it."""
    from emocam.classify.repvgg import RepVGGClassifier, RepVGGOptions
    from emocam.config import load_config
    from emocam.nets.repvgg_plus import deploy_state_dict
    from emocam.weights import WeightStore

    deploy = tmp_path / "run" / "deploy.pt"
    deploy.parent.mkdir()
    torch.save(deploy_state_dict(build_repvgg_plus("repvggplus-fer-m").eval().reparameterize()), deploy)
    cfg = load_config(None, [f"runtime.models_dir={str(models_dir)!r}"])
    with pytest.raises(EmoCamError, match="fit repvggplus-fer-m and repvggplus-face64-m; set classifier"):
        build_teacher(cfg, str(deploy))
    configured = load_config(None, [f"runtime.models_dir={str(models_dir)!r}",
                                    "classifier.repvgg-fer.arch='repvggplus-face64-m'"])
    assert build_teacher(configured, str(deploy)).size == 64
    torch.save({"arch": "repvggplus-fer-m", "epoch": 1, "model": {}}, deploy.with_name("best.pt"))
    assert build_teacher(cfg, str(deploy)).size == 48
    assert build_teacher(configured, str(deploy)).size == 48  # what training recorded wins
    # the classifier itself reads the record too: eval and the daemon take OUT/deploy.pt without an arch
    assert RepVGGClassifier(RepVGGOptions(weights=str(deploy)), torch.device("cpu"), WeightStore(models_dir)).size == 48


def test_distillation_pulls_the_student_towards_the_teacher(faces):
    """Soft targets that contradict the labels (each face's target is the next class): with distill_weight 1 the
    student learns the targets, not the labels."""
    torch.set_num_threads(1)
    pick = np.concatenate([np.flatnonzero(faces.labels == c)[:10] for c in range(7)])[:64]
    few = FaceArrays(faces.images[pick], faces.labels[pick])
    target = (few.labels + 1) % 7
    soft = np.full((len(few), 7), 0.02, np.float32)
    soft[np.arange(len(few)), target] = 0.88
    plain = tiny_recipe(epochs=8, batch_size=16, lr=0.05, label_smoothing=0.0, class_weight_power=0.0,
                        max_rotation_deg=0, scale_range=(1, 1), max_shift=0, brightness=0, contrast=0, erase_prob=0,
                        teachers=("given",), distill_weight=1.0)
    trainer = Trainer(plain, few, "unused", torch.device("cpu"), soft_targets=soft)
    for _ in range(plain.epochs):
        trainer.train_epoch()
    trainer.model.train()  # batch statistics, as in batch_loss: 32 steps do not settle BN's running ones
    torch.manual_seed(123)
    with torch.no_grad():
        pred = trainer.model(normalise_u8(torch.from_numpy(few.images).unsqueeze(1))).argmax(1).numpy()
    assert (pred == target).mean() > 0.5 and (pred == few.labels).mean() < 0.2
    with pytest.raises(ValueError, match="soft targets"):
        Trainer(plain, few, "unused", torch.device("cpu"))


class LookUpTeacher(torch.nn.Module):
    """Says each known face is the class after its label (as the soft targets above): a function of the image."""

    def __init__(self, faces: FaceArrays):
        super().__init__()
        self.known = normalise_u8(torch.from_numpy(faces.images).unsqueeze(1)).flatten(1)
        self.logits = torch.nn.functional.one_hot(torch.from_numpy((faces.labels + 1) % 7), 7).float() * 8
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        nearest = torch.cdist(x.flatten(1).float(), self.known).argmin(1)
        return self.logits[nearest]


def test_online_distillation_follows_the_teacher_on_the_batches_the_student_sees(faces):
    torch.set_num_threads(1)
    pick = np.concatenate([np.flatnonzero(faces.labels == c)[:10] for c in range(7)])[:64]
    few = FaceArrays(faces.images[pick], faces.labels[pick])
    teacher = LookUpTeacher(few)
    plain = tiny_recipe(epochs=8, batch_size=16, lr=0.05, label_smoothing=0.0, class_weight_power=0.0,
                        max_rotation_deg=0, scale_range=(1, 1), max_shift=0, brightness=0, contrast=0, erase_prob=0,
                        teachers=("look-up",), distill_weight=1.0, distill_online=True)
    trainer = Trainer(plain, few, "unused", torch.device("cpu"), teachers=[teacher])
    seen = []
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    for _ in range(plain.epochs):
        trainer.train_epoch()
    # the teacher was asked about exactly the (mirrored at random) faces the student trained on
    assert len(teacher.inputs) == len(seen) == 32
    assert all(torch.equal(t, s) for t, s in zip(teacher.inputs, seen))
    trainer.model.train()
    torch.manual_seed(123)
    with torch.no_grad():
        pred = trainer.model(normalise_u8(torch.from_numpy(few.images).unsqueeze(1))).argmax(1).numpy()
    target = (few.labels + 1) % 7
    assert (pred == target).mean() > 0.5 and (pred == few.labels).mean() < 0.2
    with pytest.raises(ValueError, match="one of them"):
        Trainer(plain, few, "unused", torch.device("cpu"), soft_targets=np.zeros((64, 7), np.float32),
                teachers=[teacher])


def test_mirrored_online_teachers_average_each_batch_and_its_mirror_image(faces):
    few = FaceArrays(faces.images[:16], faces.labels[:16])
    teacher = LookUpTeacher(few)
    recipe = tiny_recipe(teachers=("look-up",), distill_weight=0.5, distill_online=True, distill_mirror=True)
    trainer = Trainer(recipe, few, "unused", torch.device("cpu"), teachers=[teacher])
    x = normalise_u8(torch.from_numpy(few.images[:4]).unsqueeze(1))
    targets = trainer.teach(x)
    assert [tuple(t.shape) for t in teacher.inputs] == [(4, 1, 48, 48)] * 2
    assert torch.equal(teacher.inputs[0], x) and torch.equal(teacher.inputs[1], x.flip(3))
    expected = (torch.softmax(teacher(x), 1) + torch.softmax(teacher(x.flip(3)), 1)) / 2
    torch.testing.assert_close(targets, expected)


def test_cli_mirror_teachers_and_bfloat16_are_checked(fer_files, tmp_path, capsys, monkeypatch):
    data = image_folder(fer_files, tmp_path / "faces", 8)
    base = ["train", "classifier", "--data", str(data), "--epochs", "1", "--batch-size", "16", "--threads", "1"]
    assert main(base + ["--out", str(tmp_path / "a"), "--teacher", "repvgg-fer", "--distill-mirror"]) == 2
    assert "--distill-mirror: for --teacher with --distill-online" in capsys.readouterr().err
    monkeypatch.setattr("emocam.train.classifier.cpu_bf16_supported", lambda: False)
    assert main(base + ["--out", str(tmp_path / "b"), "--cpu-bf16", "--device", "cpu"]) == 2
    assert "--cpu-bf16: this CPU has no fast bfloat16" in capsys.readouterr().err
    assert not (tmp_path / "b" / "last.pt").exists()


def test_online_teachers_are_repvgg_networks_of_the_students_input(models_dir):
    from emocam.config import load_config

    cfg = load_config(None, [f"runtime.models_dir={str(models_dir)!r}"])
    (network,) = teacher_networks(("repvgg-fer",), cfg, 48)
    assert not network.training and network.deployed
    with pytest.raises(EmoCamError, match="--teacher mini-xception: --distill-online takes RepVGG-Plus teachers"):
        teacher_networks(("mini-xception",), cfg, 48)
    with pytest.raises(EmoCamError, match="student's 64x64 gray input"):
        teacher_networks(("repvgg-fer",), cfg, 64)


# ---- soups -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fine_tunes(faces, tmp_path_factory):
    """Two short fine-tunes of one base run on real faces that differ only in their seed, as soup ingredients."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("soup")
    few = FaceArrays(faces.images[::2], faces.labels[::2])
    Trainer(tiny_recipe(epochs=1), few, root / "base", torch.device("cpu")).fit()
    for seed in (1, 2):
        trainer = Trainer(tiny_recipe(epochs=1, seed=seed, lr=0.02), few, root / f"ft{seed}", torch.device("cpu"))
        load_init(trainer.model, root / "base" / "last.pt")
        trainer.fit()
    return root


def test_a_soup_averages_the_weights_and_measures_batch_norm_again(fine_tunes, faces):
    from emocam.train.soup import make_soup

    paths = [fine_tunes / "ft1" / "last.pt", fine_tunes / "ft2" / "best.pt"]
    states = [torch.load(p, weights_only=True)["model"] for p in paths]
    soup, report = make_soup(paths, faces.images, FaceArrays(faces.images[1::2], faces.labels[1::2]))
    got = soup.state_dict()
    for key in ("blocks.0.dense.conv.weight", "classifier.weight"):
        assert not torch.equal(states[0][key], states[1][key])
        torch.testing.assert_close(got[key], (states[0][key] + states[1][key]) / 2)
    bn = next(k for k in got if k.endswith("running_mean"))
    assert not torch.allclose(got[bn], (states[0][bn] + states[1][bn]) / 2, atol=1e-4)
    assert report["soup"] == [str(p) for p in paths] and len(report["ingredients"]) == 2
    assert all(0 <= row["val_acc"] <= 1 for row in report["ingredients"]) and 0 <= report["val_acc"] <= 1


def first_bn_output(model, images: np.ndarray) -> torch.Tensor:
    """(channels, N*H*W) outputs of the first batch norm in eval mode."""
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    handle = bn.register_forward_hook(lambda m, i, o: seen.append(o))
    model.eval()
    with torch.no_grad():
        model(normalise_u8(torch.from_numpy(images).unsqueeze(1)))
    handle.remove()
    return seen[0].transpose(0, 1).flatten(1)


def test_recalibrated_batch_norm_normalises_the_calibration_faces(fine_tunes, faces):
    """Whatever the statistics were, the first batch norm measured on faces maps them to mean beta, deviation gamma."""
    from emocam.train.classifier import recalibrate_bn
    from emocam.train.soup import load_ingredient

    model = build_repvgg_plus("repvggplus-fer-xs")
    model.load_state_dict(load_ingredient(fine_tunes / "ft1" / "last.pt")[1])
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(9.0)
    recalibrate_bn(model, torch.from_numpy(faces.images), batch=len(faces.images))
    out = first_bn_output(model, faces.images)
    torch.testing.assert_close(out.mean(1), bn.bias.detach(), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(1), bn.weight.detach().abs(), atol=1e-3, rtol=1e-3)
    assert bn.momentum == 0.1


def test_training_measures_batch_norm_on_unaugmented_faces_after_each_epoch(faces, tmp_path):
    """With calibration the statistics fit the clean calibration faces; training's own running averages of
    augmented batches do not (erasing and contrast jitter shift them)."""
    torch.set_num_threads(1)
    few = FaceArrays(faces.images[::2], faces.labels[::2])
    deviation, weights = {}, {}
    for n in (0, len(few)):
        trainer = Trainer(tiny_recipe(epochs=2, bn_calibration_faces=n), few, tmp_path / str(n), torch.device("cpu"))
        trainer.fit()
        bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        out = first_bn_output(trainer.model, few.images)
        deviation[n] = float((out.mean(1) - bn.bias.detach()).abs().max())
        weights[n] = {k: v for k, v in trainer.model.state_dict().items()
                      if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert deviation[len(few)] < 1e-3 < deviation[0]
    # it changes no training step: the second epoch trains the same weights (dropout draws nothing for it)
    for key, value in weights[0].items():
        assert torch.equal(value, weights[len(few)][key]), key


def test_a_run_from_before_calibration_resumes_without_it(fer_files, tmp_path, capsys):
    data = image_folder(fer_files, tmp_path / "faces", 4)
    out = tmp_path / "run"
    args = ["train", "classifier", "--data", str(data), "--out", str(out), "--batch-size", "14", "--threads", "1"]
    assert main(args + ["--epochs", "1"]) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    del state["recipe"]["bn_calibration_faces"]
    torch.save(state, out / "last.pt")
    assert main(args + ["--resume", "--epochs", "2"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["recipe"]["bn_calibration_faces"] == 0
    capsys.readouterr()


def test_soup_cli_writes_a_deploy_file_the_classifier_runs(fine_tunes, fer_folder, data_dir, tmp_path, capsys):
    out = tmp_path / "soup"
    args = ["train", "soup", str(fine_tunes / "ft1" / "last.pt"), str(fine_tunes / "ft2" / "last.pt"),
            str(fine_tunes / "base" / "best.pt"), "--data", str(fer_folder), "--out", str(out), "--greedy",
            "--bn-calibration-faces", "100", "--val-labels", str(data_dir / "eval" / "emotion" / "labels.csv"),
            "--val-filter-prefix", "fer2013_PublicTest_", "--threads", "1"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "soup.json").read_text())
    assert report["calibration_faces"] == 100 and 1 <= len(report["soup"]) <= 3
    best_single = max(row["val_acc"] for row in report["ingredients"])
    assert report["soup"][0] == next(row["checkpoint"] for row in report["ingredients"]
                                     if row["val_acc"] == best_single)
    assert report["val_acc"] >= best_single  # greedy keeps an ingredient only when the soup does not lose
    # deploy.pt is soup.pt reparameterised, and --init takes soup.pt for further fine-tuning
    val = load_faces(labels_csv_samples(data_dir / "eval" / "emotion" / "labels.csv", "fer2013_PublicTest_"), 48)
    trained = build_repvgg_plus("repvggplus-fer-xs")
    load_init(trained, out / "soup.pt")
    deployed = load_deployed("repvggplus-fer-xs", torch.load(out / "deploy.pt", weights_only=True))
    trainer = Trainer(tiny_recipe(), FaceArrays(val.images[:8], val.labels[:8]), "unused", torch.device("cpu"))
    assert float((trainer.predict(val.images, deployed) == val.labels).mean()) == pytest.approx(report["val_acc"],
                                                                                                 abs=1e-4)
    assert np.array_equal(trainer.predict(val.images, deployed), trainer.predict(val.images, trained))
    assert main(args) == 2 and "another --out" in capsys.readouterr().err  # never overwrites a soup
    args[args.index("fer2013_PublicTest_")] = "no_such_prefix_"
    args[args.index(str(out))] = str(tmp_path / "empty")
    assert main(args) == 2 and "no faces selected" in capsys.readouterr().err


def test_greedy_keeps_an_ingredient_that_changes_nothing(fine_tunes, faces):
    """The greedy baseline is measured like every candidate (batch norm measured again), so a second copy of the
    best checkpoint, which leaves the soup as it was, is kept."""
    from emocam.train.soup import make_soup

    path = fine_tunes / "ft1" / "last.pt"
    val = FaceArrays(faces.images[1::2], faces.labels[1::2])
    _, report = make_soup([path, path], faces.images[:3], val, greedy=True)
    assert report["soup"] == [str(path), str(path)]


def test_soups_refuse_mixed_variants_deploy_files_and_blind_greedy(fine_tunes, faces, tmp_path):
    from emocam.train.soup import make_soup

    other = tmp_path / "s.pt"
    torch.save({"arch": "repvggplus-fer-xw", "model": build_repvgg_plus("repvggplus-fer-xw").state_dict()}, other)
    with pytest.raises(EmoCamError, match="different variants"):
        make_soup([fine_tunes / "ft1" / "last.pt", other], faces.images)
    with pytest.raises(EmoCamError, match="reparameterised weights cannot be averaged"):
        make_soup([fine_tunes / "ft1" / "deploy.pt"], faces.images)
    with pytest.raises(EmoCamError, match="not a best.pt or last.pt"):
        torch.save({"blocks.0.dense.conv.weight": torch.zeros(1)}, tmp_path / "bare.pt")
        make_soup([tmp_path / "bare.pt"], faces.images)
    with pytest.raises(EmoCamError, match="--val-labels"):
        make_soup([fine_tunes / "ft1" / "last.pt"], faces.images, greedy=True)
    state = torch.load(fine_tunes / "ft1" / "last.pt", weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("classifier.")}
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(EmoCamError, match="not those of repvggplus-fer-xs"):
        make_soup([fine_tunes / "ft1" / "last.pt", tmp_path / "old.pt"], faces.images)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EmoCamError, match="not readable"):
        make_soup([tmp_path / "junk.pt"], faces.images)
