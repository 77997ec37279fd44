"""8-bit integer inference for a deploy-form RepVGG-Plus on x86 CPUs (post-training static quantization).

A deploy-form RepVGG-Plus is a stack of 3x3 convolutions and ReLUs, the textbook case for int8: weights per
output channel, activations per tensor with ranges measured once on training faces ("calibration"). Only those
ranges are stored (the observers' state, ~150 KB); the float weights stay in their own file, so a calibration
names the sha256 of the weights it was measured with.

torch 2.13 marks this API (torch.ao FX quantization) deprecated for torchao's, which is not a dependency here;
the warnings are silenced where it is called, and a torch without it gets a clear error from the backend.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from emocam.nets.repvgg_plus import normalise_u8

# v2: each conv followed by a ReLU is fused with it, so the observers sit after the ReLUs (v1's sat before them, on
# ranges half spent on negatives): a v1 file does not fit the v2 graph and is measured again
FORMAT = "emocam-repvgg-int8-v2"
FORMAT_FAMILY = "emocam-repvgg-int8-"
# torch's x86 recipe: per-channel symmetric weights, and 7-bit activation ranges ("reduce_range") so that CPUs
# without VNNI, whose int8 dot products add pairs into 16 bits, cannot overflow. A CPU with VNNI adds into 32 bits
# and gets the full 8 bits (full_range()): fer-xw agrees with its float model on 96.6 % of PublicTest instead of
# 94.2 %, and its int8 kernels match their saturation-free float emulation more closely, not less (measured).
# The observers' state is the same either way, so one calibration file serves both.
QCONFIG = "x86"
# The quantized kernels: x86 (fbgemm or oneDNN chosen per layer) where torch has it, else fbgemm.
ENGINES = ("x86", "fbgemm")


@contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # observer notes (reduce_range, qparams before calibration): about choices made here on purpose; only
        # these calls run under it
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input size is fixed by design
        yield


def engine() -> str | None:
    """The quantized engine this torch offers for int8 convolutions on this CPU; None where it has none, or no
    longer has the FX quantization API this module uses."""
    try:
        import torch.ao.quantization.quantize_fx  # noqa: F401
    except ImportError:
        return None
    supported = set(torch.backends.quantized.supported_engines)
    return next((e for e in ENGINES if e in supported), None)


@contextmanager
def _engine():
    """torch's quantized engine set to engine() while weights are packed, then put back: it is process-wide."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine()
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def full_range() -> bool:
    """Whether this CPU's int8 dot products accumulate in 32 bits (AVX512-VNNI), so 8-bit activations are safe."""
    # a private torch helper (torch >= 2.1): a torch without it gets the safe 7 bits
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(probe and probe())


def qconfig_mapping(full: bool):
    """torch's x86 mapping, with 8-bit instead of 7-bit activation ranges where `full`."""
    from torch.ao.quantization import HistogramObserver, get_default_qconfig_mapping

    mapping = get_default_qconfig_mapping(QCONFIG)
    if not full:
        return mapping
    reduced = mapping.global_qconfig.activation
    # the ops that follow the global qconfig (conv, mul, ...) or share its activation observer get the full one;
    # sigmoid and the like keep their fixed ranges
    widened = HistogramObserver.with_args(reduce_range=False)
    mapping.set_global(mapping.global_qconfig._replace(activation=widened))
    for kind, qconfig in list(mapping.object_type_qconfigs.items()):
        if qconfig is not None and qconfig.activation is reduced:
            mapping.set_object_type(kind, qconfig._replace(activation=widened))
    return mapping


def prepare(model: torch.nn.Module, size: int, full: bool | None = None) -> torch.nn.Module:
    """The float deploy model with observers after each layer (on the CPU, in eval mode); 8-bit activation ranges
    where `full` (default: full_range())."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    full = full_range() if full is None else full
    eager = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    with _quiet(), _engine():
        return prepare_fx(eager, qconfig_mapping(full), example_inputs=(torch.zeros(1, 1, size, size),))


@torch.inference_mode()
def calibrate(prepared: torch.nn.Module, faces_u8: np.ndarray, batch: int = 256) -> dict[str, torch.Tensor]:
    """Run (N, S, S) uint8 faces through the observers; returns their state (what a calibration file stores)."""
    for i in range(0, len(faces_u8), batch):
        prepared(normalise_u8(torch.from_numpy(faces_u8[i:i + batch]).unsqueeze(1)))
    return observer_state(prepared)


def observer_state(prepared: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in prepared.state_dict().items() if ".activation_post_process" in f".{k}"}


def load_observers(prepared: torch.nn.Module, observers: dict[str, torch.Tensor]) -> None:
    """Put a calibration's observer state into a freshly prepared model; raises ValueError if they do not fit."""
    expected = set(observer_state(prepared))
    if set(observers) != expected:
        raise ValueError(f"the calibration has {len(observers)} observer tensors, this network {len(expected)}")
    try:
        prepared.load_state_dict(observers, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"the calibration does not fit this network ({str(exc).splitlines()[0]})") from None


def convert(prepared: torch.nn.Module, size: int) -> torch.jit.ScriptModule:
    """The int8 network, frozen into a TorchScript graph (at one face a call ~40 % less CPU than unfrozen). Uses
    up `prepared` (its observers become quantize steps): take observer_state() first if it is needed."""
    from torch.ao.quantization.quantize_fx import convert_fx

    example = torch.zeros(1, 1, size, size)
    with _quiet(), _engine(), torch.inference_mode():
        graph = torch.jit.freeze(torch.jit.trace(convert_fx(prepared), example))
        graph(example)
    return graph
