"""repvgg-fer-int8: `emocam train quantize` measures activation ranges on real faces, the backend runs the int8
network they define, close to the float one, and refuses calibrations that do not belong to its weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emocam.backends import build_classifier
from emocam.classify.repvgg import RepVGGClassifier, RepVGGOptions
from emocam.classify.repvgg_int8 import RepVGGInt8Classifier, RepVGGInt8Options
from emocam.cli import main
from emocam.config import Config
from emocam.errors import ConfigError, WeightsError
from emocam.evaluate.classification import classification_metrics
from emocam.explain.explainer import Explainer
from emocam.nets import quantize
from emocam.nets.repvgg_plus import build_repvgg_plus, deploy_state_dict, normalise_u8
from emocam.train.emotion_data import labels_csv_samples, load_faces
from emocam.types import EMOTIONS, Face
from emocam.weights import WeightStore

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.weights,
              pytest.mark.skipif(quantize.engine() is None, reason="this torch has no x86 int8 kernels")]


@pytest.fixture(scope="module")
def store(models_dir) -> WeightStore:
    store = WeightStore(models_dir)
    if "repvgg_fer_int8" not in store.manifest():
        pytest.skip("no repvgg_fer_int8 entry in the manifest")
    return store


@pytest.fixture(scope="module")
def public_test(data_dir):
    return load_faces(labels_csv_samples(data_dir / "eval/emotion/labels.csv", "fer2013_PublicTest_")[:400], 48)


def test_shipped_int8_model_agrees_with_the_float_one(store, public_test):
    int8 = RepVGGInt8Classifier(RepVGGInt8Options(), torch.device("cpu"), store)
    float32 = RepVGGClassifier(RepVGGOptions(weights="repvgg_fer_xl"), torch.device("cpu"), store)
    crops = list(public_test.images)
    p8, p32 = int8.predict_crops(crops), float32.predict_crops(crops)
    assert p8.shape == (400, 7) and np.allclose(p8.sum(1), 1, atol=1e-5)
    # measured (fer-xl, 8-bit activations, conv and ReLU fused): the same class for 0.98 of these 400 faces (0.978
    # of all 2,831), probabilities 0.006 apart on average; with 7-bit activations, unfused, fer-xw agreed on 0.91
    assert (p8.argmax(1) == p32.argmax(1)).mean() > 0.88
    assert np.abs(p8 - p32).max() < 0.5 and np.abs(p8 - p32).mean() < 0.02
    assert classification_metrics(public_test.labels, p8.argmax(1), EMOTIONS).accuracy > 0.6
    assert set(int8.weights_sha256) == {"repvgg_fer_xl", "repvgg_fer_xl_int8"}


@pytest.mark.skipif(not quantize.full_range(), reason="this CPU has no AVX512-VNNI: int8 keeps 7-bit activations")
@pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max")  # torch's reference conversion says it
def test_8_bit_activations_on_a_vnni_cpu_do_not_overflow_and_follow_the_float_model_closer(store, public_test):
    """Saturating 16-bit sums would show as int8 logits far from torch's float emulation of the same quantized
    network (the "reference" model: dequantize, float op, quantize). One calibration serves both ranges."""
    from torch.ao.quantization.quantize_fx import convert_to_reference_fx

    float32 = RepVGGClassifier(RepVGGOptions(), torch.device("cpu"), store)
    observers = torch.load(store.path("repvgg_fer_int8"), weights_only=True)["observers"]
    x = normalise_u8(torch.from_numpy(public_test.images).unsqueeze(1))
    with torch.inference_mode():
        exact = float32.model(x)
    result = {}
    for full in (False, True):
        prepared = quantize.prepare(float32.model, 48, full)
        quantize.load_observers(prepared, observers)
        with torch.inference_mode():
            emulated = convert_to_reference_fx(copy.deepcopy(prepared))(x)
            kernels = quantize.convert(prepared, 48)(x)
        result[full] = ((kernels - emulated).abs().max().item(),
                        (kernels.argmax(1) == exact.argmax(1)).float().mean().item())
    # measured on 400 faces: kernels within 0.17 (8-bit) and 0.35 (7-bit) of their emulation; agreement with the
    # float model 0.96 and 0.92
    assert result[True][0] < 0.3 and result[False][0] < 0.6
    assert result[True][1] > result[False][1]


def test_a_torch_that_cannot_tell_vnni_keeps_7_bit_activations(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_vnni_supported", raising=False)
    assert quantize.full_range() is False


def test_explain_maps_and_their_probabilities_come_from_the_float_model(store, astronaut_bgr):
    int8 = RepVGGInt8Classifier(RepVGGInt8Options(), torch.device("cpu"), store)
    float32 = RepVGGClassifier(RepVGGOptions(weights="repvgg_fer_xl"), torch.device("cpu"), store)
    face = Face(np.array([150, 20, 330, 220], np.float32), 0.99)
    explained = Explainer(int8).classify(astronaut_bgr, [face])[0]
    assert explained.explanation is not None and len(explained.explanation.maps) == len(int8.model.blocks) + 1
    np.testing.assert_allclose(explained.probs, float32.classify(astronaut_bgr, [face])[0].probs, atol=1e-5)
    assert not np.allclose(explained.probs, int8.classify(astronaut_bgr, [face])[0].probs, atol=1e-5)


def test_the_daemon_with_explain_maps_drops_the_int8_network_and_says_so(models_dir, monkeypatch, tmp_path):
    from loguru import logger

    from emocam.config import load_config
    from emocam.daemon import build_pipeline

    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    base = ["source.name=demo", "sinks.enabled=[]", f'session.root="{tmp_path}"', "classifier.name=repvgg-fer-int8"]
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        explained = build_pipeline(load_config(ROOT / "config.toml", base))
        plain = build_pipeline(load_config(ROOT / "config.toml", [*base, "explain.enabled=false"]))
    finally:
        logger.remove(sink)
    assert explained.explainer is not None and explained.analyzer.classifier.graph is None
    assert plain.explainer is None and plain.analyzer.classifier.graph is not None
    assert len(lines) == 1 and "explain.enabled = false" in lines[0]


def test_a_calibration_of_another_variant_is_refused(store, tmp_path):
    doc = torch.load(store.path("repvgg_fer_int8"), weights_only=True)
    torch.save({**doc, "arch": "repvggplus-fer-xs"}, tmp_path / "xs.pth")
    with pytest.raises(WeightsError, match="measured for repvggplus-fer-xs.*--arch"):
        RepVGGInt8Classifier(RepVGGInt8Options(calibration=str(tmp_path / "xs.pth")), torch.device("cpu"), store)


def test_a_calibration_of_other_weights_is_refused(store, tmp_path):
    other = build_repvgg_plus("repvggplus-fer-xw").eval().reparameterize()
    torch.save(deploy_state_dict(other), tmp_path / "other.pt")
    options = RepVGGInt8Options(weights=str(tmp_path / "other.pt"), calibration="repvgg_fer_int8")
    with pytest.raises(WeightsError, match="measured for other weights.*emocam train quantize"):
        RepVGGInt8Classifier(options, torch.device("cpu"), store)


@pytest.mark.parametrize("content, message", [
    (b"not a torch file", "not a calibration file"),
    ({"format": "something else", "observers": {}}, "not a calibration file from `emocam train quantize`"),
    ({"format": "emocam-repvgg-int8-v1", "observers": {}}, "earlier int8 graph.*again with `emocam train quantize`"),
])
def test_a_wrong_calibration_file_is_named_with_what_to_do(store, tmp_path, content, message):
    path = tmp_path / "calibration.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(WeightsError, match=message):
        RepVGGInt8Classifier(RepVGGInt8Options(calibration=str(path)), torch.device("cpu"), store)
    with pytest.raises(WeightsError, match="no such file"):
        RepVGGInt8Classifier(RepVGGInt8Options(calibration=str(tmp_path / "none.pth")), torch.device("cpu"), store)


def test_calibration_missing_layers_is_refused(store, tmp_path):
    doc = torch.load(store.path("repvgg_fer_int8"), weights_only=True)
    doc["observers"] = dict(list(doc["observers"].items())[:-5])
    torch.save(doc, tmp_path / "short.pth")
    with pytest.raises(WeightsError, match="observer tensors"):
        RepVGGInt8Classifier(RepVGGInt8Options(weights="repvgg_fer", calibration=str(tmp_path / "short.pth")),
                             torch.device("cpu"), store)


def test_int8_runs_on_a_cpu_only(store):
    with pytest.raises(ConfigError, match="runs on a CPU.*repvgg-fer"):
        RepVGGInt8Classifier(RepVGGInt8Options(), torch.device("cuda"), store)


def test_a_torch_without_int8_kernels_gets_one_line_of_advice(store, fer_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(quantize, "engine", lambda: None)
    with pytest.raises(ConfigError, match="int8 kernels and FX quantization.*use repvgg-fer"):
        RepVGGInt8Classifier(RepVGGInt8Options(), torch.device("cpu"), store)
    assert main(["train", "quantize", "--data", str(fer_folder), "--out", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert "int8 inference is not available here" in err and "Traceback" not in err
    assert not (tmp_path / "x.pth").exists()


def test_quantize_cli_writes_a_calibration_the_backend_runs(store, fer_folder, data_dir, tmp_path, capsys,
                                                            monkeypatch):
    out = tmp_path / "int8.pth"
    args = ["train", "quantize", "--data", str(fer_folder), "--faces", "64", "--out", str(out), "--threads", "1",
            "--val-labels", str(data_dir / "eval/emotion/labels.csv"), "--val-filter-prefix", "fer2013_PublicTest_"]
    monkeypatch.setenv("EMOCAM_MODELS", str(store.root))
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["faces"], report["arch"], report["val"]["faces"]) == (64, "repvggplus-fer-xw", 2831)
    assert report["val"]["float"]["val_acc"] > 0.6 and report["val"]["int8"]["val_acc"] > 0.6
    assert abs(report["val"]["float"]["val_acc"] - report["val"]["int8"]["val_acc"]) < 0.03
    cfg = Config.model_validate({"classifier": {"name": "repvgg-fer-int8",
                                                "repvgg-fer-int8": {"weights": "repvgg_fer",
                                                                    "calibration": str(out)}}})
    classifier = build_classifier(cfg)
    assert classifier.weights_sha256["repvgg_fer"] == store.sha256("repvgg_fer")
    assert classifier.weights_sha256[str(out)] == report["sha256"]
    assert main(args) == 2 and "another --out" in capsys.readouterr().err  # never overwrites a calibration


def test_each_conv_runs_fused_with_its_relu():
    """A conv and the ReLU after it are one int8 op whose output range starts at 0, so the activations after a
    ReLU get all 8 bits (a separate ReLU would leave the conv's range half spent on negatives, and cost a pass)."""
    model = build_repvgg_plus("repvggplus-fer-xw").eval().reparameterize()  # SE in the last block only
    prepared = quantize.prepare(model, 48)
    quantize.calibrate(prepared, np.random.default_rng(0).integers(0, 256, (8, 48, 48), dtype=np.uint8))
    graph = str(quantize.convert(prepared, 48).graph)
    assert graph.count("quantized::conv2d_relu") == 8  # 7 blocks without SE, and the SE's own down projection
    assert "relu(" not in graph.replace("conv2d_relu(", "").replace("mul_relu(", "")
