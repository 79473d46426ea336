"""Spec -> nn.Module, and nothing else (no training, no I/O)."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import BlurPool, ConvBNAct, DepthwiseSeparable, GAPHead, Normalize, SeparableConv, SqueezeExcite
from .datasets import dataset_info
from .spec import BlockSpec, PhaseSpec


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


def _build_block(block: BlockSpec, cin: int) -> tuple[nn.Module, int]:
    if block.kind == "max":
        return nn.MaxPool2d(2), cin
    if block.kind == "blur":
        return BlurPool(), cin
    if block.kind == "drop":
        return nn.Dropout(block.drop / 100), cin
    if block.kind == "dw":
        layer: nn.Module = DepthwiseSeparable(cin, block.out, block.kernel, block.stride, block.act)
    elif block.kind == "sep":
        layer = SeparableConv(cin, block.out, block.kernel, block.stride, block.act)
    else:  # conv and pw share one implementation; pw is conv with k=1
        layer = ConvBNAct(cin, block.out, block.kernel, block.stride, act=block.act)
    if block.se:
        layer = nn.Sequential(layer, SqueezeExcite(block.out, block.se))
    return layer, block.out


def build(spec: PhaseSpec) -> TinyCNN:
    """Build any phase spec into a fresh, randomly initialised model."""
    return TinyCNN(spec)
