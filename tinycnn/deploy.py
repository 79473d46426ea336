"""The network as it runs after training: re-parameterised blocks fused, BatchNorm folded away.

Two steps, kept apart because the budget counts only the first (see `budget`):

* `reparameterize` replaces every block that defines ``fuse()`` (rep, repdw, reppw: RepVGG /
  MobileOne) by its single fused conv. This is the deployed *architecture*.
* `fold_batchnorms` folds every conv -> BatchNorm pair into one conv with bias, and every
  conv -> layer scale pair into the conv. This is an export step (ONNX, int8): it changes
  how the same function is computed, not what the network is.

`deploy` does both on a copy, in eval mode: its outputs equal the trained model's in eval
mode up to float rounding (tests check 1e-5 on every block kind and every ladder phase).
"""
from __future__ import annotations

import copy
from itertools import pairwise

import torch
from torch import nn

from .blocks import LayerScale, MixedDepthwise, fold_bn


def is_fusable(module: nn.Module) -> bool:
    return callable(getattr(module, "fuse", None))


def reparameterize(model: nn.Module) -> nn.Module:
    """Replace, in place, every sub-module with a ``fuse()`` method by what it returns; the
    model is returned (or its fused form, if it is such a block itself)."""
    if is_fusable(model):
        return model.fuse()
    for name, child in model.named_children():
        setattr(model, name, reparameterize(child))
    return model


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A conv with ``conv``'s geometry and the given weight and bias."""
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


def _fold_conv_bn(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    if isinstance(conv, MixedDepthwise):  # each kernel's conv takes its own channels of the BN
        start = 0
        for i, part in enumerate(conv.convs):
            conv.convs[i] = _fold_conv_bn_slice(part, bn, slice(start, start + part.out_channels))
            start += part.out_channels
        return conv
    return _fold_conv_bn_slice(conv, bn, slice(None))


def _fold_conv_bn_slice(conv: nn.Conv2d, bn: nn.BatchNorm2d, channels: slice) -> nn.Conv2d:
    weight, bias = fold_bn(conv.weight, bn, conv.bias, channels)
    return _conv_like(conv, weight, bias)


def _fold_layer_scale(conv: nn.Conv2d, scale: LayerScale) -> nn.Conv2d:
    gamma = scale.gamma
    bias = conv.bias if conv.bias is not None else torch.zeros_like(gamma)
    return _conv_like(conv, conv.weight * gamma.view(-1, 1, 1, 1), bias * gamma)


def _fold_pair(first: nn.Module, second: nn.Module) -> nn.Module | None:
    """The one module equal to ``first -> second``, if the pair folds."""
    if isinstance(first, (nn.Conv2d, MixedDepthwise)) and isinstance(second, nn.BatchNorm2d):
        return _fold_conv_bn(first, second)
    if isinstance(first, nn.Conv2d) and isinstance(second, LayerScale):
        return _fold_layer_scale(first, second)
    return None


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """In place: in every Sequential, fold each conv -> BN (and conv -> layer scale) pair
    into the conv and leave an Identity where the BN was, so the names keep their places."""
    for child in model.children():
        fold_batchnorms(child)
    if isinstance(model, nn.Sequential):
        for first, second in pairwise(list(model._modules)):
            folded = _fold_pair(model._modules[first], model._modules[second])
            if folded is not None:
                setattr(model, first, folded)
                setattr(model, second, nn.Identity())
    return model


def deploy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every re-parameterisable block fused and every
    conv -> BatchNorm pair folded into one conv with bias (the model itself is untouched)."""
    deployed = copy.deepcopy(model).eval()
    with torch.no_grad():
        fold_batchnorms(reparameterize(deployed))
    return deployed.eval()
