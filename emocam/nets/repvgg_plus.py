"""RepVGG-Plus (Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", and its RepVGGplus follow-up) sized
for face crops, in PyTorch.

Training-time blocks sum three branches, 3x3 conv+BN, 1x1 conv+BN and (when the shapes allow) a bare BN, then apply
squeeze-excitation and ReLU. `reparameterize()` folds each block's branches into one 3x3 convolution with bias,
which is what ships: a plain stack of 3x3 convs that runs fast on CPUs. The head is a 1x1 conv giving one map per
class whose spatial mean is the logit (global average pooling and a linear layer, reordered), so class activation
maps come for free, as with mini-XCEPTION.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RepVGGPlusConfig:
    in_channels: int  # 1 for gray faces, 3 for RGB
    input_size: int  # the side the variant is meant for (the net itself accepts any size)
    stem_width: int
    stem_stride: int
    widths: tuple[int, ...]  # per stage; each stage starts with a stride-2 block
    depths: tuple[int, ...]
    # Squeeze-excitation in every block, or per stage with the stem first. At batch 1 on a CPU each SE costs about
    # as much as a small conv (four tiny ops), so the CPU-sized variants keep it where the maps are smallest.
    se: bool | tuple[bool, ...] = True
    dropout: float = 0.0

    def __post_init__(self):
        if not isinstance(self.se, bool) and len(self.se) != 1 + len(self.widths):
            raise ValueError(f"se per stage needs {1 + len(self.widths)} entries (the stem first), has {self.se}")

    def se_of_stage(self, stage: int) -> bool:
        """Whether stage `stage`'s blocks (0: the stem, 1..: the stages in `widths`) have squeeze-excitation."""
        return self.se if isinstance(self.se, bool) else self.se[stage]


VARIANTS: dict[str, RepVGGPlusConfig] = {
    # Face-crop variants: FER2013's native 48x48 gray; the stem keeps full resolution because faces are small.
    "repvggplus-fer-xs": RepVGGPlusConfig(1, 48, 24, 1, (32, 64, 128, 256), (1, 2, 3, 1), dropout=0.2),
    # fer-xs's CPU time a face with ~2x its parameters: stages 3-4 widened, squeeze-excitation in stage 4 only.
    "repvggplus-fer-xw": RepVGGPlusConfig(1, 48, 24, 1, (32, 64, 192, 384), (1, 2, 3, 1),
                                          se=(False, False, False, False, True), dropout=0.2),
    # fer-xw 1.5x as wide (2.2x its multiply-adds), sized for int8: 0.40 ms CPU a face against fer-xw's 0.24 ms
    # (both int8 before conv+ReLU fusion, one thread; mini-xception 0.82 ms float). Without SE outside stage 4 it
    # stays cheap in int8, where every SE gate is a round trip through float (fer-s, SE everywhere, ~2.2x fer-xw's
    # work: 0.83 ms).
    "repvggplus-fer-xl": RepVGGPlusConfig(1, 48, 32, 1, (48, 96, 288, 576), (1, 2, 3, 1),
                                          se=(False, False, False, False, True), dropout=0.2),
    "repvggplus-fer-s": RepVGGPlusConfig(1, 48, 32, 1, (48, 96, 192, 384), (2, 3, 4, 1), dropout=0.3),
    "repvggplus-fer-m": RepVGGPlusConfig(1, 48, 48, 1, (64, 128, 256, 512), (2, 4, 6, 1), dropout=0.3),
    "repvggplus-face64-m": RepVGGPlusConfig(1, 64, 48, 2, (64, 128, 256, 512), (2, 4, 6, 1), dropout=0.3),
    "repvggplus-face112-rgb": RepVGGPlusConfig(3, 112, 64, 2, (64, 128, 256, 512), (2, 4, 8, 1), dropout=0.3),
    # The published RepVGGplus-L2pSE layout (ImageNet, 224x224 RGB): widths 2.5x/5x of 64..512, depths 8-14-24-1.
    "repvggplus-l2pse": RepVGGPlusConfig(3, 224, 64, 2, (160, 320, 640, 2560), (8, 14, 24, 1), dropout=0.0),
}


def normalise_u8(gray_u8: torch.Tensor) -> torch.Tensor:
    """uint8 gray faces (N, 1, S, S) -> float32 in [-1, 1], the input of the face variants (as fer's)."""
    return (gray_u8.float() / 255.0 - 0.5) * 2.0


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class SqueezeExcite(nn.Module):
    """Channel gates from the global mean (RepVGGplus' post-SE, reduction 4)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.down = nn.Conv2d(channels, max(channels // reduction, 8), 1)
        self.up = nn.Conv2d(max(channels // reduction, 8), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.up(F.relu(self.down(F.adaptive_avg_pool2d(x, 1)))))
        return x * gate


def _fuse(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel and bias of conv-then-BN (eval statistics) as one conv."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepVGGPlusBlock(nn.Module):
    """relu(se(bn(conv3x3(x)) + bn(conv1x1(x)) + bn(x))); after reparameterize(), relu(se(conv3x3(x) + b))."""

    def __init__(self, cin: int, cout: int, stride: int, se: bool):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.dense = ConvBN(cin, cout, 3, stride)
        self.pointwise = ConvBN(cin, cout, 1, stride)
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.fused: nn.Conv2d | None = None
        # None rather than nn.Identity: int8 conversion fuses a conv with the ReLU only when no module sits between
        # them, and only the fused conv quantizes its output after the ReLU, in all 8 bits (emocam/nets/quantize.py)
        self.se = SqueezeExcite(cout) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            y = self.fused(x)
        else:
            y = self.dense(x) + self.pointwise(x)
            if self.identity is not None:
                y = y + self.identity(x)
        if self.se is not None:
            y = self.se(y)
        return F.relu(y)

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        kernel, bias = _fuse(self.dense.conv.weight, self.dense.bn)
        k1, b1 = _fuse(self.pointwise.conv.weight, self.pointwise.bn)
        kernel = kernel + F.pad(k1, (1, 1, 1, 1))  # a 1x1 kernel is a 3x3 one with zeros around the centre
        bias = bias + b1
        if self.identity is not None:
            eye = torch.zeros_like(kernel)
            eye[torch.arange(self.cout), torch.arange(self.cin), 1, 1] = 1.0
            k_id, b_id = _fuse(eye, self.identity)
            kernel, bias = kernel + k_id, bias + b_id
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is not None:
            return
        kernel, bias = self.fused_kernel_bias()
        conv = nn.Conv2d(self.cin, self.cout, 3, self.stride, padding=1, bias=True).to(kernel)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        self.fused = conv
        del self.dense, self.pointwise, self.identity
        self.dense = self.pointwise = self.identity = None


class RepVGGPlus(nn.Module):
    """Input (N, C, H, W) normalised images; output (N, num_classes) logits."""

    def __init__(self, config: RepVGGPlusConfig, num_classes: int = 7):
        super().__init__()
        self.config = config
        blocks = [RepVGGPlusBlock(config.in_channels, config.stem_width, config.stem_stride, config.se_of_stage(0))]
        cin = config.stem_width
        for stage, (width, depth) in enumerate(zip(config.widths, config.depths), start=1):
            for i in range(depth):
                blocks.append(RepVGGPlusBlock(cin, width, 2 if i == 0 else 1, config.se_of_stage(stage)))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Conv2d(cin, num_classes, 1)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_classes, h, w) per-class evidence maps; their spatial mean is the logit."""
        return self.classifier(self.dropout(self.blocks(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_maps(x).mean(dim=(2, 3))

    def conv_layers(self) -> list[tuple[str, nn.Module]]:
        """Each block (its output after SE and ReLU), then the class conv: hook targets for explain, input to
        output, with the same names in training and deploy form."""
        return [(f"blocks.{i}", b) for i, b in enumerate(self.blocks)] + [("classifier", self.classifier)]

    @property
    def deployed(self) -> bool:
        return all(b.fused is not None for b in self.blocks)

    def reparameterize(self) -> "RepVGGPlus":
        """Fold every block into one 3x3 conv in place (uses BN running statistics); returns self."""
        for block in self.blocks:
            block.reparameterize()
        return self


@torch.no_grad()
def load_deploy_for_training(model: RepVGGPlus, deploy: dict[str, torch.Tensor], batches) -> None:
    """Make the training-form `model` compute what these deploy weights compute, so that deploy weights (the only
    form a shipped model has) can be fine-tuned. Each block's 3x3 branch takes the fused kernel, its batch norm the
    statistics that kernel's output has on `batches` (normalised input tensors, e.g. unaugmented training faces)
    with the scale and shift that undo them: in eval mode the block is exactly the deploy block, in training mode
    (batch statistics) close to it. The 1x1 and identity branches start silent (scale 0) with their usual
    initialisation, so that training can grow them back. Tensors of other shapes (a class head for another label
    set) keep their fresh initialisation."""
    own = model.state_dict()
    model.load_state_dict({k: v.float() for k, v in deploy.items() if k in own and own[k].shape == v.shape},
                          strict=False)
    blocks = list(model.blocks)
    for i, block in enumerate(blocks):
        block.dense.conv.weight.copy_(deploy[f"blocks.{i}.fused.weight"].float())
        norm = block.dense.bn
        norm.reset_running_stats()  # mean 0, variance 1: with scale sqrt(1 + eps) the norm is a shift by the bias
        norm.weight.fill_(math.sqrt(1 + norm.eps))
        norm.bias.copy_(deploy[f"blocks.{i}.fused.bias"].float())
        for silent in (block.pointwise.bn, block.identity):
            if silent is not None:
                silent.weight.zero_()
                silent.bias.zero_()
    sums: dict[int, tuple] = {}  # block -> (sum, sum of squares, count) of its 3x3 conv's outputs per channel

    def record(i):
        def hook(_module, _inputs, y):
            y = y.double().transpose(0, 1).flatten(1)
            total, squares, n = sums.get(i, (0.0, 0.0, 0))
            sums[i] = (total + y.sum(1), squares + (y * y).sum(1), n + y.shape[1])
        return hook

    handles = [b.dense.conv.register_forward_hook(record(i)) for i, b in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if len(sums) != len(blocks):
        raise ValueError("no input batches to measure the batch-norm statistics on")
    for i, block in enumerate(blocks):
        total, squares, n = sums[i]
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0)
        norm = block.dense.bn
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        norm.weight.copy_(torch.sqrt(var + norm.eps))
        norm.bias.add_(mean.to(norm.bias))


def build_repvgg_plus(arch: str, num_classes: int = 7) -> RepVGGPlus:
    try:
        config = VARIANTS[arch]
    except KeyError:
        raise ValueError(f"unknown RepVGG-Plus variant {arch!r}; variants: {', '.join(VARIANTS)}") from None
    return RepVGGPlus(config, num_classes)


def deploy_state_dict(model: RepVGGPlus) -> dict[str, torch.Tensor]:
    """A deployed model's weights, each tensor with its own storage (small, reproducible files)."""
    if not model.deployed:
        raise ValueError("reparameterize() the model before exporting deploy weights")
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def deploy_shapes(arch: str, num_classes: int = 7) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a variant's deploy weights. (Built on the CPU: the meta device would
    save the memory but costs ~1 s to set up on first use.)"""
    model = build_repvgg_plus(arch, num_classes).eval().reparameterize()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def matching_variants(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """The variants whose deploy weights have exactly these names and shapes. Usually one; variants that differ
    only in input size or stride (fer-m and face64-m) share them. Lets a deploy.pt from `emocam train classifier`
    load without a manifest entry."""
    head = state_dict.get("classifier.weight")
    if not isinstance(head, torch.Tensor) or head.ndim != 4:
        return []
    shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state_dict.items()}
    stem = shapes.get("blocks.0.fused.weight")
    # only variants with this stem and head get built
    return [arch for arch, c in VARIANTS.items()
            if stem == (c.stem_width, c.in_channels, 3, 3) and head.shape[1] == c.widths[-1]
            and deploy_shapes(arch, head.shape[0]) == shapes]


def load_deployed(arch: str, state_dict: dict[str, torch.Tensor], device: torch.device | str = "cpu",
                  num_classes: int = 7) -> RepVGGPlus:
    """An eval-mode deploy-form model from deploy weights (channels_last: faster on CPU oneDNN)."""
    model = build_repvgg_plus(arch, num_classes).reparameterize()
    model.load_state_dict(state_dict)
    return model.to(device=device, memory_format=torch.channels_last).eval()
