"""YOLOv7-tiny training: WIDER / YOLO label parsers on real files, augmentation, anchors, loss, checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from emocam.errors import EmoCamError
from emocam.nets.yolov7_tiny import YOLOv7Tiny, build_from_state_dict
from emocam.train.detector import (
    FaceDataset, Hyper, TrainOptions, _fit_anchors, _optimizer, collate, load_checkpoint, make_loader, train,
)
from emocam.train.wider import find_training_images, parse_wider_gt, parse_yolo_labels
from emocam.train.yolo_loss import YoloLoss, anchor_fitness, best_possible_recall, bbox_ciou, kmeans_anchors


@pytest.fixture(scope="module")
def boxes_dir(data_dir) -> Path:
    return data_dir / "eval" / "boxes"


# --- parsers --------------------------------------------------------------------------------------------------------

def test_wider_gt_file(boxes_dir):
    images = parse_wider_gt(boxes_dir / "wider_face_val_bbx_gt.txt")
    assert len(images) == 157
    assert sum(len(i.boxes) for i in images) == 2459
    assert sum(int(i.invalid.sum()) for i in images) == 42
    first = images[0]
    assert first.name == "wider_0_Parade_Parade_0_125.jpg" and len(first.boxes) == 13
    assert first.boxes[0].tolist() == [592, 251, 13, 20] and first.attributes[0].tolist() == [1, 0, 1, 0, 0, 0]


def test_training_faces_agree_with_the_csv(boxes_dir):
    """Valid faces of the gt file are exactly the WIDER rows of boxes.csv (whose ignore list holds the 42 invalid
    faces and one of zero width)."""
    images, layout = find_training_images(boxes_dir)
    assert "wider_face_val_bbx_gt.txt" in layout and all(i.path.is_file() for i in images)
    ours = sorted((i.path.name, *map(float, b)) for i in images for b in i.boxes)
    with (boxes_dir / "boxes.csv").open() as f:
        csv_rows = sorted((Path(r["file"]).name, *(float(r[k]) for k in ("x1", "y1", "x2", "y2")))
                          for r in csv.DictReader(f) if Path(r["file"]).name.startswith("wider_"))
    assert len(ours) == 2416 and ours == csv_rows


def test_wider_empty_image_and_errors(tmp_path):
    gt = tmp_path / "wider_face_train_bbx_gt.txt"
    gt.write_text("a/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\nc/d.jpg\n1\n1 2 3 4 0 0 0 1 0 0\n")
    images = parse_wider_gt(gt)
    assert [len(i.boxes) for i in images] == [0, 1] and images[1].invalid.tolist() == [True]
    gt.write_text("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(EmoCamError, match=":4:"):
        parse_wider_gt(gt)


def test_official_wider_layout_and_yolo_layout(tmp_path):
    root = tmp_path / "wider"
    (root / "wider_face_split").mkdir(parents=True)
    (root / "WIDER_train" / "images" / "0--Parade").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text("0--Parade/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    images, _ = find_training_images(root)
    assert images[0].path == root / "WIDER_train" / "images" / "0--Parade" / "x.jpg"
    assert images[0].boxes.tolist() == [[1, 2, 4, 6]]

    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    for name in ("a.jpg", "b.png"):
        (yolo / "images" / name).write_bytes(b"")
    (yolo / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n"
                                          "0 0.1 0.1 0.1 0.1 0.1 0.1 -1 -1 0.2 0.2 0.3 0.3 0.4 0.4\n")
    images, layout = find_training_images(yolo)
    assert "YOLO" in layout and [i.path.name for i in images] == ["a.jpg", "b.png"]
    np.testing.assert_allclose(images[0].boxes[0], [0.4, 0.3, 0.6, 0.7])
    assert images[0].normalised and len(images[1].boxes) == 0  # no label file: a negative image
    assert np.isnan(images[0].landmarks[0]).all() and np.isnan(images[0].landmarks[1, 1]).all()
    assert images[0].landmarks[1, 2].tolist() == pytest.approx([0.2, 0.2])
    with pytest.raises(EmoCamError, match="no detector training data"):
        find_training_images(tmp_path)


def test_yolo_label_with_visibility(tmp_path):
    label = tmp_path / "x.txt"
    label.write_text("0 0.5 0.5 0.2 0.2 " + " ".join("0.4 0.5 2" for _ in range(5)) + "\n")
    boxes, marks = parse_yolo_labels(label)
    assert marks.shape == (1, 5, 2) and marks[0, 4].tolist() == pytest.approx([0.4, 0.5])
    label.write_text("0 0.5 0.5 0.2 0.2 0 0 0 " + " ".join("0.4 0.5 1" for _ in range(4)) + "\n")
    _, marks = parse_yolo_labels(label)  # visibility 0: not labelled, not a point in the corner
    assert np.isnan(marks[0, 0]).all() and marks[0, 1].tolist() == pytest.approx([0.4, 0.5])
    label.write_text("0 0.5 0.5\n")
    with pytest.raises(EmoCamError, match="3 values"):
        parse_yolo_labels(label)


# --- augmentation, anchors, loss ------------------------------------------------------------------------------------

def test_mosaic_targets_are_inside_and_follow_flips(boxes_dir):
    images, _ = find_training_images(boxes_dir)
    ds = FaceDataset(images[:6], 192, Hyper(), augment=True, landmarks=True, seed=3)
    n_faces = 0
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (3, 192, 192) and image.dtype == torch.uint8
        assert t.shape[1] == 16
        xywh = t[:, 2:6]
        assert ((xywh[:, :2] - xywh[:, 2:] / 2) >= -1e-6).all() and ((xywh[:, :2] + xywh[:, 2:] / 2) <= 1 + 1e-6).all()
        assert (xywh[:, 2:] * 192 >= 2 - 1e-4).all()
        n_faces += len(t)
    assert n_faces > 20
    plain = FaceDataset(images[:1], 192, Hyper(), augment=False)
    image, t = plain[0]
    k = 192 / 1024  # the image is 1024 px wide
    wh = (images[0].boxes[:, 2:] - images[0].boxes[:, :2]) * k
    assert len(t) == int((wh >= 2).all(1).sum()) > 0  # letterboxed: only faces under 2 px are left out
    np.testing.assert_allclose(t[:, 4:6].numpy() * 192, wh[(wh >= 2).all(1)], atol=0.01)


def test_ciou():
    a = torch.tensor([[5.0, 5.0, 2.0, 2.0]])
    assert bbox_ciou(a, a).item() == pytest.approx(1.0, abs=1e-6)
    apart = bbox_ciou(a, torch.tensor([[9.0, 5.0, 2.0, 2.0]])).item()
    assert -1 < apart < 0  # no overlap: the centre distance term makes it negative


def test_kmeans_anchors_fit_face_sizes():
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(np.log(20), 0.8, (3000, 1))) * np.array([[1.0, 1.3]]) * rng.uniform(0.9, 1.1, (3000, 2))
    anchors = kmeans_anchors(wh, generations=100)
    assert anchors.shape == (9, 2) and (np.diff(anchors.prod(1)) >= 0).all()
    coco = np.array([10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]).reshape(9, 2)
    assert anchor_fitness(anchors, wh) > anchor_fitness(coco, wh)
    assert best_possible_recall(anchors, wh) > 0.99


def test_training_steps_lower_the_loss(boxes_dir):
    torch.manual_seed(0)
    all_images, _ = find_training_images(boxes_dir)
    # three real photos whose faces stay visible at 128 px
    images = [i for i in all_images if 1 <= len(i.boxes) <= 12 and (i.boxes[:, 2] - i.boxes[:, 0]).min() >= 30][:3]
    ds = FaceDataset(images, 128, Hyper(), augment=False)
    imgs, targets = collate([ds[i] for i in range(len(ds))])
    assert len(images) == 3 and len(targets) >= 3
    model = YOLOv7Tiny(nc=1)
    _fit_anchors(model, all_images, 128, keep_if_fit=False)
    loss_fn = YoloLoss(model, 128)
    opt = _optimizer(model, Hyper(lr0=0.05), 5e-4)  # yolov7's warmup starts biases at 0.1
    x = imgs.float() / 255
    model.train()
    losses = []
    for _ in range(6):
        loss, terms = loss_fn(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


def test_checkpoint_save_and_resume(boxes_dir, tmp_path):
    opts = TrainOptions(data=boxes_dir, out=tmp_path / "run", epochs=1, img_size=96, batch=2, nominal_batch=2,
                        limit=4, max_batches=1)
    rows = train(opts)
    assert [r["epoch"] for r in rows] == [1]
    first = load_checkpoint(opts.out / "last.pt")
    assert first["epoch"] == 0 and first["ema_updates"] == 1
    weights = load_checkpoint(opts.out / "weights.pt")
    # the saved weights rebuild a model whose tensors are those saved
    restored = build_from_state_dict(weights["state_dict"])
    for k, v in restored.state_dict().items():
        assert torch.equal(v, weights["state_dict"][k]), k

    opts.epochs, opts.resume = 2, True
    rows = train(opts)
    assert [r["epoch"] for r in rows] == [2]
    second = load_checkpoint(opts.out / "last.pt")
    assert second["epoch"] == 1 and second["ema_updates"] == 2
    assert torch.equal(second["model"]["model.77.anchors"], first["model"]["model.77.anchors"])
    assert not torch.equal(second["model"]["model.0.conv.weight"], first["model"]["model.0.conv.weight"])
    with (opts.out / "metrics.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    assert train(opts) == []  # already at --epochs
    assert not list(opts.out.glob("*.tmp")) and not list(opts.out.glob("*.part"))

    # --init: fine-tuning starts from the given weights, and keeps their anchors when they fit the data
    tuned = TrainOptions(data=boxes_dir, out=tmp_path / "tuned", epochs=1, img_size=96, batch=2, nominal_batch=2,
                         limit=4, max_batches=1, init=opts.out / "weights.pt")
    train(tuned)
    assert torch.equal(load_checkpoint(tuned.out / "last.pt")["model"]["model.77.anchors"],
                       second["ema"]["model.77.anchors"])

    # transfer from an 80-class model: backbone and neck carried over (the first step's learning rate is 0 in
    # warmup, so they are unchanged), a fresh one-class head
    coco = YOLOv7Tiny(nc=80).state_dict()
    torch.save(coco, tmp_path / "coco.pt")
    tuned.init, tuned.out = tmp_path / "coco.pt", tmp_path / "transfer"
    train(tuned)
    state = load_checkpoint(tuned.out / "last.pt")["model"]
    assert torch.equal(state["model.0.conv.weight"], coco["model.0.conv.weight"])
    assert state["model.77.m.0.weight"].shape[0] == 3 * 6


def test_train_detector_command_line():
    from emocam.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "detector", "--data", "d", "--epochs", "3", "--img-size", "320", "--resume"])
    assert (args.epochs, args.img_size, args.resume, args.init) == (3, 320, True, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "detector", "--data", "d", "--img-size", "300"])


def test_resume_without_checkpoint(boxes_dir, tmp_path):
    with pytest.raises(EmoCamError, match="--resume"):
        train(TrainOptions(data=boxes_dir, out=tmp_path, resume=True, limit=2))


def test_resumed_run_equals_an_uninterrupted_one_and_a_fresh_run_never_overwrites(boxes_dir, tmp_path, monkeypatch):
    import emocam.train.detector as detector

    def opts(out, resume=False):
        return TrainOptions(data=boxes_dir, out=tmp_path / out, epochs=2, img_size=64, batch=2, nominal_batch=2,
                            limit=6, max_batches=2, resume=resume)

    train(opts("straight"))
    write_metrics = detector._append_metrics

    def ctrl_c_after_the_first_epoch(path, row):
        write_metrics(path, row)
        raise KeyboardInterrupt

    monkeypatch.setattr(detector, "_append_metrics", ctrl_c_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(opts("resumed"))
    monkeypatch.setattr(detector, "_append_metrics", write_metrics)
    with pytest.raises(EmoCamError, match="last.pt exists: pass --resume"):
        train(opts("resumed"))  # forgot --resume: the trained epoch stays
    train(opts("resumed", resume=True))
    straight, resumed = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "resumed"))
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_loader_workers_see_each_epochs_augmentation(boxes_dir):
    images, _ = find_training_images(boxes_dir)
    ds = FaceDataset(images[:4], 64, Hyper(), augment=True)
    loader = make_loader(ds, 4, 2, torch.device("cpu"), torch.Generator().manual_seed(0))
    batches = []
    for epoch in range(2):
        ds.epoch = epoch
        batches.append(sorted(img.sum().item() for img in next(iter(loader))[0]))
    assert batches[0] != batches[1]
