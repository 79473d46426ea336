"""Spec -> nn.Module, and nothing else (no training, no I/O)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .blocks import (
    BlurPool,
    ConvBNAct,
    ConvNeXtBlock,
    DepthwiseSeparable,
    FusedMBConv,
    GAPHead,
    InvertedResidual,
    Normalize,
    PerImageStandardize,
    RepConv,
    Residual,
    SeparableConv,
    SqueezeExcite,
)
from .datasets import dataset_info
from .errors import SpecError
from .spec import BlockSpec, PhaseSpec, has_skip, output_channels


class TinyCNN(nn.Module):
    """normalise -> features -> head. Takes float NCHW images in [0, 1], returns logits."""

    def __init__(self, spec: PhaseSpec) -> None:
        super().__init__()
        info = dataset_info(spec.dataset)
        self.spec = spec
        self.normalize = Normalize(info.mean, info.std)
        layers: list[nn.Module] = []
        channels = info.channels
        for block in spec.blocks:
            layer, channels = _build_block(block, channels)
            layers.append(layer)
        self.features = nn.Sequential(*layers)
        self.head = GAPHead(channels, info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def _plain(block: BlockSpec, cin: int) -> nn.Module:
    """conv / dw / sep / pw, then SE if asked (conv and pw share one implementation: pw is k=1)."""
    if block.kind == "dw":
        layer: nn.Module = DepthwiseSeparable(cin, block.out, block.kernel, block.stride, block.act)
    elif block.kind == "sep":
        layer = SeparableConv(cin, block.out, block.kernel, block.stride, block.act)
    else:
        layer = ConvBNAct(cin, block.out, block.kernel, block.stride, act=block.act)
    if block.se:
        layer = nn.Sequential(layer, SqueezeExcite(block.out, block.se))
    return layer


def _mbconv(block: BlockSpec, cin: int) -> nn.Module:
    kind = InvertedResidual if block.kind == "ir" else FusedMBConv
    return kind(cin, block.out, block.kernel, block.stride, block.expand, block.se, block.act)


_BUILDERS: dict[str, Callable[[BlockSpec, int], nn.Module]] = {
    "conv": _plain, "dw": _plain, "sep": _plain, "pw": _plain, "ir": _mbconv, "fir": _mbconv,
    "cnx": lambda b, cin: ConvNeXtBlock(cin, b.kernels, b.expand, b.act),
    "rep": lambda b, cin: RepConv(cin, b.out, b.kernel, b.stride, act=b.act),
    "repdw": lambda b, cin: RepConv(cin, cin, b.kernel, b.stride, groups=cin, act=b.act),
    "reppw": lambda b, cin: RepConv(cin, b.out, 1, act=b.act),
    "max": lambda b, cin: nn.MaxPool2d(2),
    "blur": lambda b, cin: BlurPool(),
    "drop": lambda b, cin: nn.Dropout(b.drop / 100),
    "std": lambda b, cin: PerImageStandardize(),
}


def _build_block(block: BlockSpec, cin: int) -> tuple[nn.Module, int]:
    cout = output_channels(block, cin)
    layer = _BUILDERS[block.kind](block, cin)
    if has_skip(block, cin) and not isinstance(layer, Residual):
        if cout != cin or block.stride != 1:  # PhaseSpec refuses this; a direct call may not
            raise SpecError(f"block '{block}' adds its input to its output, but receives {cin} "
                            f"channels and returns {cout} at stride {block.stride}")
        layer = Residual(layer)
    return layer, cout


def build(spec: PhaseSpec) -> TinyCNN:
    """Build any phase spec into a fresh, randomly initialised model."""
    return TinyCNN(spec)
