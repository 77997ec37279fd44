"""A RepVGG-Plus classifier in 8-bit integers on an x86 CPU: repvgg-fer's crop and loading, classified by an int8
network whose activation ranges `emocam train quantize` measured on training faces (emocam/nets/quantize.py).
Its default weights are fer-xl, wider than repvgg-fer's fer-xw, which int8 makes cheaper than mini-xception
(`emocam eval speed`, models/repvgg_fer.md). Explain maps come from the float model, as with repvgg-fer; their
probabilities are the float model's too.
"""

from __future__ import annotations

import torch

from emocam.classify import CLASSIFIERS
from emocam.classify.repvgg import RepVGGClassifier, RepVGGOptions
from emocam.errors import ConfigError, WeightsError
from emocam.nets import quantize


class RepVGGInt8Options(RepVGGOptions):
    # fer-xl (fer-xw 1.5x as wide): more accurate, and in int8 still well under mini-xception's CPU a face
    weights: str = "repvgg_fer_xl"
    # `emocam train quantize` output for these weights: a name in models/manifest.toml or a file.
    calibration: str = "repvgg_fer_xl_int8"


@CLASSIFIERS.register("repvgg-fer-int8")
class RepVGGInt8Classifier(RepVGGClassifier):
    Options = RepVGGInt8Options
    cpu_graph_kind = None  # the int8 graph is this backend's own

    def __init__(self, options: RepVGGInt8Options, device: torch.device, weights):
        if device.type != "cpu":
            raise ConfigError(f"classifier repvgg-fer-int8 runs on a CPU, not {device.type}: use repvgg-fer there "
                              "(or runtime.device = \"cpu\")")
        if quantize.engine() is None:
            raise ConfigError("classifier repvgg-fer-int8 needs torch's x86 int8 kernels and FX quantization, which "
                              "this torch or CPU lacks (quantized engines: "
                              f"{', '.join(torch.backends.quantized.supported_engines)}); use repvgg-fer")
        super().__init__(options, device, weights)
        where = f"classifier.repvgg-fer-int8.calibration = {options.calibration!r}"
        doc, self._calibration_sha256 = _load_calibration(options.calibration, weights, where)
        if doc.get("arch") != self.arch:  # one file can fit two variants (fer-m, face64-m) of other input sizes
            raise WeightsError(f"{where}: measured for {doc.get('arch')}, these weights run as {self.arch}; run "
                               "`emocam train quantize` (with --arch) for them")
        if doc.get("weights_sha256") != self._sha256:
            raise WeightsError(f"{where}: measured for other weights (sha256 {str(doc.get('weights_sha256'))[:12]}..."
                               f", these are {self._sha256[:12]}...); run `emocam train quantize` for them")
        prepared = quantize.prepare(self.model, self.size)
        try:
            quantize.load_observers(prepared, doc["observers"])
        except ValueError as exc:
            raise WeightsError(f"{where}: {exc}; run `emocam train quantize` for these weights") from None
        self.graph = quantize.convert(prepared, self.size)  # what Classifier.predict_crops runs

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {**super().weights_sha256, self.options.calibration: self._calibration_sha256}


def _load_calibration(ref: str, store, where: str) -> tuple[dict, str]:
    try:
        path, sha = store.locate(ref)
    except WeightsError as exc:
        raise WeightsError(f"{where}: {exc}; write one with `emocam train quantize`") from None
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise WeightsError(f"{where}: not a calibration file ({type(exc).__name__}); write one with "
                           "`emocam train quantize`") from None
    written = doc.get("format") if isinstance(doc, dict) else None
    if isinstance(written, str) and written.startswith(quantize.FORMAT_FAMILY) and written != quantize.FORMAT:
        raise WeightsError(f"{where}: measured for an earlier int8 graph ({written}; this EmoCam's is "
                           f"{quantize.FORMAT}); measure it again with `emocam train quantize`")
    if written != quantize.FORMAT or not isinstance(doc.get("observers"), dict):
        raise WeightsError(f"{where}: not a calibration file from `emocam train quantize`")
    return doc, sha
