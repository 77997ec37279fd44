"""YOLOv7-tiny face detector: architecture, fusion, export, weight files, the detector backend and evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from emocam.detect import yolov7_tiny as yolov7_tiny_module
from emocam.detect.yolov7_tiny import (YOLOv7TinyDetector, YOLOv7TinyOptions, letterbox, load_official_checkpoint,
                                       load_weights)
from emocam.errors import WeightsError
from emocam.evaluate.detection import ImageDetections, evaluate_detections
from emocam.nets.yolov7_tiny import STRIDES, YOLOv7Tiny, build_from_state_dict, export_onnx
from emocam.weights import WeightStore

CPU = torch.device("cpu")


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Freshly built BatchNorms are identities; give them statistics so that folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def model() -> YOLOv7Tiny:
    torch.manual_seed(0)
    m = YOLOv7Tiny(nc=1)
    randomise_batchnorm(m)
    return m.eval()


def test_parameter_count_matches_official_configuration():
    # Official yolov7-tiny (80 classes, IDetect head): per-layer counts of its model summary, e.g. the P3 ELAN
    # (layers 52-57) and the first bottom-up conv (58); the whole model is the paper's 6.2 M.
    coco = YOLOv7Tiny(nc=80)
    assert [params(coco.model[i]) for i in range(52, 59)] == [4160, 4160, 9280, 9280, 0, 8320, 73984]
    assert params(coco) == 6_228_762
    # One class: the head shrinks from 3 x 85 to 3 x 6 outputs per cell; landmarks add 3 x 10 per scale.
    assert params(YOLOv7Tiny(nc=1)) == 6_014_988
    assert params(YOLOv7Tiny(nc=1, landmarks=True)) == 6_041_958


def test_three_scales_and_decoded_shape(model):
    x = torch.rand(2, 3, 160, 224)
    with torch.no_grad():
        raw = model(x)
        pred = model.predict(x)
    assert [tuple(r.shape) for r in raw] == [(2, 3, 160 // s, 224 // s, 6) for s in STRIDES]
    assert pred.shape == (2, 3 * sum((160 // s) * (224 // s) for s in STRIDES), 6)
    assert (pred[..., 2] > pred[..., 0]).all() and (pred[..., 4:] >= 0).all() and (pred[..., 4:] <= 1).all()


def test_fused_equals_unfused():
    torch.manual_seed(1)
    for landmarks in (False, True):
        m = YOLOv7Tiny(nc=1, landmarks=landmarks)
        randomise_batchnorm(m)
        m.eval()
        x = torch.rand(1, 3, 128, 96)
        with torch.no_grad():
            before = m.predict(x)
            m.fuse()
            after = m.predict(x)
        assert not any(isinstance(k, nn.BatchNorm2d) for k in m.modules())
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_fused_weights_reload(model, tmp_path):
    fused = build_from_state_dict(model.state_dict()).fuse().eval()
    again = build_from_state_dict(fused.state_dict()).eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(again.predict(x), fused.predict(x))


def test_onnx_export_runs_in_onnxruntime(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    fused = build_from_state_dict(model.state_dict()).fuse().eval()
    path = export_onnx(fused, tmp_path / "yolov7_tiny.onnx", img_size=128)
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 96, 160)  # another size than the export's: the axes are dynamic
    (out,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = fused.predict(x).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)


# --- weight files ---------------------------------------------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_official_checkpoint_read_without_running_code(model, tmp_path):
    """An official-style checkpoint: the whole model pickled in half precision, anchors in grid units beside a
    pixel anchor_grid, plus an object whose unpickling would run a shell command."""
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        ref = model.predict(x)
    official = build_from_state_dict(model.state_dict())
    head = official.head
    head.register_buffer("anchor_grid", head.anchors.clone().view(3, 1, 3, 1, 1, 2))
    head.anchors.div_(torch.tensor(STRIDES, dtype=torch.float32)[:, None, None])
    del head._buffers["stride"]
    marker = tmp_path / "ran"
    torch.save({"epoch": -1, "model": official.half(), "optimizer": None, "payload": _RunsCode(marker)},
               tmp_path / "official.pt")

    state = load_weights(tmp_path / "official.pt")
    assert not marker.exists()
    loaded = build_from_state_dict(state).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(x), ref, rtol=2e-2, atol=2e-2)  # half precision on the way


def test_a_checkpoint_cannot_change_the_functions_it_names(tmp_path):
    """BUILD on a named global would set attributes on it (a function's __name__, torch's dump_patches, which
    makes torch's legacy loader write files next to it): a zip checkpoint that tries is refused, unchanged."""
    import pickle
    import zipfile

    torch.save({"a": torch.zeros(1)}, tmp_path / "good.pt")
    # GLOBAL torch._utils._rebuild_tensor_v2, then BUILD with the state {"dump_patches": True}
    evil = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00\x00dump_patches\x88s"
            + pickle.BUILD + pickle.STOP)
    with zipfile.ZipFile(tmp_path / "good.pt") as src, zipfile.ZipFile(tmp_path / "evil.pt", "w") as dst:
        for item in src.infolist():
            dst.writestr(item, evil if item.filename.endswith("data.pkl") else src.read(item))
    with pytest.raises(WeightsError, match="evil.pt"):
        load_weights(tmp_path / "evil.pt")
    assert not hasattr(torch._utils._rebuild_tensor_v2, "dump_patches")
    assert not hasattr(yolov7_tiny_module._rebuild_tensor, "dump_patches")
    # torch's legacy (pre-zip) format is refused before anything in it is read
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="not a zip checkpoint"):
        load_official_checkpoint(legacy)


def test_unreadable_weights_are_a_weights_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        load_weights(bad)


# --- detector backend -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights_file(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "weights.pt"
    torch.save({"format": "emocam-yolov7-tiny/1", "state_dict": model.state_dict()}, path)
    return path


def test_weights_of_another_network_are_one_clear_error(tmp_path, models_dir):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, other)
    partial = tmp_path / "partial.pt"
    state = YOLOv7Tiny(nc=1).state_dict()
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("model.3.")}}, partial)
    for path in (other, partial):
        with pytest.raises(WeightsError, match=f"{path.name}: not YOLOv7-tiny face weights .*emocam train detector"):
            YOLOv7TinyDetector(YOLOv7TinyOptions(weights=str(path)), torch.device("cpu"), WeightStore(models_dir))


def test_detector_boxes_in_image_pixels(weights_file, tmp_path):
    opts = YOLOv7TinyOptions(weights=str(weights_file), conf_threshold=0.0, img_size=160, max_detections=50)
    det = YOLOv7TinyDetector(opts, CPU, WeightStore(tmp_path))
    image = np.random.default_rng(0).integers(0, 255, (90, 200, 3), dtype=np.uint8)
    faces = det.detect(image)
    assert 0 < len(faces) <= 50
    boxes = np.array([f.box for f in faces])
    assert (boxes[:, [0, 2]] <= 200).all() and (boxes[:, [1, 3]] <= 90).all() and (boxes >= 0).all()
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert det.weights_sha256["yolov7_tiny"]


def test_letterbox_pads_to_the_stride():
    image = np.full((120, 250, 3), 255, np.uint8)
    x, scale, (left, top) = letterbox(image, 160)
    # 250 x 120 -> 160 x 77, padded to 160 x 96 with 19 grey rows, 9 of them above
    assert x.shape == (1, 3, 96, 160) and scale == pytest.approx(160 / 250) and (left, top) == (0, 9)
    grey = torch.tensor(114 / 255)
    assert torch.all(x[0, :, 9:86] == 1.0) and torch.all(x[0, :, :9] == grey) and torch.all(x[0, :, 86:] == grey)


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match="emocam train detector"):
        YOLOv7TinyDetector(YOLOv7TinyOptions(), CPU, WeightStore(tmp_path))
    with pytest.raises(WeightsError, match="emocam train detector"):
        YOLOv7TinyDetector(YOLOv7TinyOptions(weights=str(tmp_path / "none.pt")), CPU, WeightStore(tmp_path))


# --- evaluation -----------------------------------------------------------------------------------------------------

def test_ap_by_face_width():
    small, large = [0, 0, 15, 15], [100, 100, 200, 200]
    # the large face is found with the best score; a false small box outranks the small face's detection
    images = [ImageDetections([small, large], [], [large, [50, 50, 62, 62], small], [0.9, 0.8, 0.7])]
    by = {b.name: b for b in evaluate_detections(images).by_size}
    assert by[">=80"].ap == pytest.approx(1.0)  # the small false box does not count against large faces
    assert by["10-20"].ap == pytest.approx(0.5)  # the false box outranks the only small face: precision 1/2
    assert by["<10"].ap is None


def test_eval_command_with_weights(data_dir, weights_file, capsys):
    from emocam.cli import main

    boxes = data_dir / "eval" / "boxes" / "boxes.csv"
    code = main(["eval", "detector", "--boxes", str(boxes), "--detector", "yolov7-tiny", "--weights",
                 str(weights_file), "--limit", "2", "--json", "--set", "detector.yolov7-tiny.img_size=160"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["detector"] == "yolov7-tiny" and report["images"] == 2
    assert {b["width"] for b in report["by_size"]} == {"<10", "10-20", "20-40", "40-80", ">=80"}
    assert all("ap50" in b for b in report["by_size"])


def test_eval_weights_option_needs_a_backend_with_weights(data_dir, weights_file, capsys):
    from emocam.cli import main

    boxes = data_dir / "eval" / "boxes" / "boxes.csv"
    assert main(["eval", "detector", "--boxes", str(boxes), "--detector", "mtcnn", "--weights",
                 str(weights_file), "--limit", "1"]) == 2
    assert "no weights option" in capsys.readouterr().err
