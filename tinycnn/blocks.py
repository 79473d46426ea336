"""The layers tiny networks are made of. Each exists because it buys accuracy per parameter."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """Per-channel (x - mean) / std inside the model, so a saved model takes plain [0, 1] images.

    mean and std are buffers, not parameters: they cost nothing against the budget.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PerImageStandardize(nn.Module):
    """Per-image standardisation (grammar token ``std``): each channel of each image becomes
    (x - mean) / (std + eps), its mean and (population) std taken over that channel's pixels.

    Why: a deployed sensor's gain and offset drift, and the contrast and brightness
    corruptions of MNIST-C / CIFAR-10-C are (up to clipping) such changes. Standardising
    inside the model makes the features exactly invariant to any a * x + b with a > 0 (up to
    eps), so the net never has to learn it, for zero parameters and no multiply-accumulates
    the budget counts (two reductions and an elementwise affine per image).

    Per channel, not over all channels, because only then the invariance holds wherever the
    block sits: the model's dataset ``Normalize`` in front of it is itself a per-channel
    affine map, which turns a common a * x + b of the input into a different offset per
    channel, and a per-channel affine change (a colour cast, a white-balance drift,
    CIFAR-10-C's contrast, which shrinks each channel towards its own mean) is removed too.
    The price: the image's mean colour and each channel's contrast are gone, which on
    CIFAR-10 can be a class cue (an ablation must measure it); on grey MNIST the two choices
    are the same. eps keeps a flat channel finite (it maps to 0).
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean((2, 3), keepdim=True)
        centred = x - mean
        std = (centred * centred).mean((2, 3), keepdim=True).sqrt()
        return centred / (std + self.eps)


# Keyed like spec.ACTIVATIONS (a test keeps the two in step; spec stays free of torch).
# Only torch's own modules: a custom autograd activation does not export to ONNX (timm #730).
ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "re": nn.ReLU, "r6": nn.ReLU6, "sw": nn.SiLU, "hs": nn.Hardswish, "ge": nn.GELU,
}


def activation(name: str = "re") -> nn.Module:
    """A block's non-linearity by its spec name. ReLU zeroes half of a layer only 8-16
    channels wide; smooth SiLU and hard-swish (MobileNetV3) keep a little of the negative
    side, for no parameters. ReLU6 bounds activations for int8 (MobileNetV2); GELU is
    ConvNeXt's. GELU has no in-place form."""
    layer = ACTIVATION_LAYERS[name]
    return layer() if layer is nn.GELU else layer(inplace=True)


class ConvBNAct(nn.Sequential):
    """k x k conv (no bias: BN's shift replaces it) -> BatchNorm -> activation. The workhorse."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str = "re") -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            activation(act),
        )


class ConvBN(nn.Sequential):
    """k x k conv -> BatchNorm, no activation: MobileNetV2's linear bottleneck projects this
    way because a ReLU on a narrow layer throws information away, and RepVGG's branches are
    this so that their sum can be fused into one conv."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        )


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): GAP -> 1x1 down -> ReLU -> 1x1 up -> sigmoid gate.

    The bottleneck width is explicit: on a 12-channel layer a ratio rounded up to 8 would
    cost more than the layer itself, while 2-4 channels cost ~5 parameters per channel.
    The gate is a sigmoid, or with ``hard=True`` MobileNetV3's hard-sigmoid (piecewise
    linear: cheap and int8-friendly), which the hard-swish ir/fir blocks use.
    """

    def __init__(self, channels: int, bottleneck: int, hard: bool = False) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, bottleneck, 1)
        self.up = nn.Conv2d(bottleneck, channels, 1)
        self.act = nn.ReLU()
        self.gate = nn.Hardsigmoid() if hard else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.up(self.act(self.down(gate))))


class DepthwiseSeparable(nn.Sequential):
    """Depthwise k x k then pointwise 1x1 (MobileNet v1): ~k^2 + cout weights per input
    channel instead of k^2 * cout, the single biggest saving on a tight budget."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, act: str = "re") -> None:
        super().__init__(
            ConvBNAct(cin, cin, kernel, stride, groups=cin, act=act),
            ConvBNAct(cin, cout, 1, act=act),
        )


class SeparableConv(nn.Sequential):
    """Depthwise k x k straight into pointwise 1x1, then one BN -> ReLU (Xception, Chollet 2017).

    Chollet found no non-linearity between the two convs works best; on a tiny net it also
    drops the middle BatchNorm (2 parameters per input channel) and a ReLU that throws
    information away in a layer only 8-16 channels wide (the MobileNetV2 argument).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, act: str = "re") -> None:
        super().__init__(
            nn.Conv2d(cin, cin, kernel, stride, kernel // 2, groups=cin, bias=False),
            ConvBNAct(cin, cout, 1, act=act),
        )


class Residual(nn.Module):
    """``x + body(x)`` (He et al. 2016), for zero parameters: the body learns a correction to
    its input instead of a whole new map, so gradients reach the early layers of a deeper
    net and a block that does not help can learn to pass its input through."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class InvertedResidual(nn.Sequential):
    """MobileNetV2/V3's MBConv (Sandler et al. 2018): 1x1 expand to e x cin -> depthwise
    k x k [-> SE] -> 1x1 project -> BN, with no activation after the projection.

    The spatial filter runs depthwise on a wide layer while the block's input and output
    stay narrow, so a tiny net gets wide features for ~(2 cin + k^2) e cin weights; the
    linear projection keeps a ReLU from destroying a narrow layer's information. ``e1``
    drops the expand conv (MobileNetV2's first block). SE squeezes the expanded width, with
    MobileNetV3's hard-sigmoid gate in hard-swish blocks. The builder adds the skip
    (`Residual`) when the shapes match, as MobileNetV2 does.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, expand: int = 4,
                 se: int = 0, act: str = "re") -> None:
        mid = cin * expand
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if expand > 1:
            layers["expand"] = ConvBNAct(cin, mid, 1, act=act)
        layers["depthwise"] = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        if se:
            layers["se"] = SqueezeExcite(mid, se, hard=act == "hs")
        layers["project"] = ConvBN(mid, cout, 1)
        super().__init__(layers)


class FusedMBConv(nn.Sequential):
    """EfficientNetV2's fused MBConv (timm's EdgeResidual): one dense k x k conv expanding to
    e x cin -> BN -> act [-> SE] -> 1x1 project -> BN, no activation.

    Fusing MBConv's expand and depthwise convs costs k^2 e cin^2 weights, affordable only
    where cin is small, i.e. a tiny net's first stages; there a dense conv mixes channels
    and space at once, which a depthwise conv cannot, and runs as one well-vectorised
    kernel. The builder adds the skip when the shapes match.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, expand: int = 4,
                 se: int = 0, act: str = "re") -> None:
        mid = cin * expand
        layers: OrderedDict[str, nn.Module] = OrderedDict(expand=ConvBNAct(cin, mid, kernel, stride, act=act))
        if se:
            layers["se"] = SqueezeExcite(mid, se, hard=act == "hs")
        layers["project"] = ConvBN(mid, cout, 1)
        super().__init__(layers)


def split_channels(channels: int, groups: int) -> list[int]:
    """Near-equal channel groups, the first taking the remainder (timm's _split_channels)."""
    splits = [channels // groups] * groups
    splits[0] += channels - sum(splits)
    return splits


class MixedDepthwise(nn.Module):
    """MixConv (Tan & Le 2019): one depthwise conv per kernel size, each over its share of
    the channels, concatenated. Part of the layer sees a wide (7x7) neighbourhood and part a
    sharp (3x3) one, for fewer weights than giving every channel the largest kernel."""

    def __init__(self, channels: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.splits = split_channels(channels, len(kernels))
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False) for c, k in zip(self.splits, kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(part) for conv, part in zip(self.convs, parts)], dim=1)


# CaiT (Touvron et al. 2021) scales layer-scale's init with depth: 0.1 up to 18 blocks, 1e-5
# to 24, 1e-6 beyond (ConvNeXt's and timm's default, for 18-36 block networks). A tiny net has
# a handful of blocks, and at 1e-6 its residual branches would get ~1e-6 of their gradient
# until the scale grows: 0.1 lets them learn from the first step.
LAYER_SCALE_INIT = 0.1


class LayerScale(nn.Module):
    """A learnable per-channel multiplier on a residual branch (CaiT, ConvNeXt): each channel
    starts as a small correction to the identity and grows only as far as it helps. One
    parameter per channel; at deployment it folds into the conv before it."""

    def __init__(self, channels: int, init: float = LAYER_SCALE_INIT) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class ConvNeXtBlock(Residual):
    """ConvNeXt's block (Liu et al. 2022): depthwise k x k -> norm -> 1x1 expand x e -> act
    -> 1x1 project -> layer scale, added to the input. Keeps the channel count.

    One norm and one activation per block, a large depthwise kernel for the spatial mixing
    and the expansion where it is cheap (1x1): a transformer-like block built from convs.
    The norm is BatchNorm, not ConvNeXt's LayerNorm: right after the conv it folds into the
    conv's weights at deployment (zero cost at inference, and int8-friendly), while a
    LayerNorm normalises each pixel by its own statistics and must stay in the graph. The
    activation is ReLU unless ``_n..`` says otherwise (``_nge`` for the paper's GELU): one
    default across the grammar, and the one that quantises and exports most simply.
    """

    def __init__(self, channels: int, kernels: tuple[int, ...] = (7,), expand: int = 4,
                 act: str = "re") -> None:
        mid = channels * expand
        mixer = (nn.Conv2d(channels, channels, kernels[0], 1, kernels[0] // 2, groups=channels, bias=False)
                 if len(kernels) == 1 else MixedDepthwise(channels, kernels))
        super().__init__(nn.Sequential(OrderedDict(
            depthwise=mixer, norm=nn.BatchNorm2d(channels),
            expand=nn.Conv2d(channels, mid, 1), act=activation(act), project=nn.Conv2d(mid, channels, 1),
            scale=LayerScale(channels),
        )))


def fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d, bias: torch.Tensor | None = None,
            channels: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of one conv equal to conv -> BN in eval mode, for ``bn``'s ``channels``:
    BN is y = (x - mean) / sqrt(var + eps) * gamma + beta, an affine map per channel
    (timm's RepVggBlock._fuse_bn_tensor)."""
    std = (bn.running_var[channels] + bn.eps).sqrt()
    t = bn.weight[channels] / std
    shift = bn.running_mean[channels] if bias is None else bn.running_mean[channels] - bias
    return kernel * t.reshape(-1, 1, 1, 1), bn.bias[channels] - shift * t


class RepConv(nn.Module):
    """Structural re-parameterisation (RepVGG, Ding et al. 2021; MobileOne, Vasu et al. 2023):
    trains as a sum of branches, k x k conv+BN + 1x1 conv+BN + identity BN (when the shapes
    match), then act; deploys as ONE k x k conv with bias, then act.

    The extra branches give training a ResNet-like gradient path and an ensemble of
    receptive fields, and cost nothing at inference: the budget counts the fused conv.
    ``groups=channels`` is MobileOne's depthwise block; ``kernel=1`` its pointwise block (the
    1x1 branch is then the k x k one, so only conv+BN and identity BN remain).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str = "re") -> None:
        super().__init__()
        self.kxk = ConvBN(cin, cout, kernel, stride, groups)
        self.scale = ConvBN(cin, cout, 1, stride, groups) if kernel > 1 else None
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.kxk(x)
        if self.scale is not None:
            y = y + self.scale(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    def _identity_kernel(self) -> torch.Tensor:
        """The identity map as a k x k (grouped) conv kernel: 1 at the centre tap of each channel."""
        weight = self.kxk[0].weight
        kernel = torch.zeros_like(weight)
        channel = torch.arange(weight.shape[0], device=weight.device)
        centre = weight.shape[-1] // 2
        kernel[channel, channel % weight.shape[1], centre, centre] = 1
        return kernel

    @torch.no_grad()
    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each branch folded with its BN, 1x1 zero-padded to k x k, summed (RepVGG's rule)."""
        conv = self.kxk[0]
        kernel, bias = fold_bn(conv.weight, self.kxk[1])
        if self.scale is not None:
            pad = conv.kernel_size[0] // 2
            k1, b1 = fold_bn(self.scale[0].weight, self.scale[1])
            kernel, bias = kernel + F.pad(k1, [pad] * 4), bias + b1
        if self.identity is not None:
            ki, bi = fold_bn(self._identity_kernel(), self.identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    def fuse(self) -> nn.Sequential:
        """The deployed form: one conv with bias, then the same activation."""
        src = self.kxk[0]
        kernel, bias = self.fused_kernel_bias()
        conv = nn.Conv2d(src.in_channels, src.out_channels, src.kernel_size, src.stride, src.padding,
                         groups=src.groups, bias=True, device=kernel.device, dtype=kernel.dtype)
        with torch.no_grad():
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
        return nn.Sequential(conv, self.act)


class BlurPool(nn.Module):
    """Anti-aliased downsampling (Zhang 2019, "Making CNNs shift-invariant again").

    A strided max-pool aliases: shifting the input by one pixel can change the output a
    lot. Here the max is taken densely (2x2, stride 1) and the result is low-pass filtered
    with a fixed 3x3 binomial kernel [1,2,1]x[1,2,1]/16 before subsampling by 2. Borders
    use reflect padding so edge pixels are not darkened by zeros (kornia's
    ``max_blur_pool2d`` pads with zeros, which is why this is our own ten lines). The
    filter is a buffer: zero parameters.
    """

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps)
        self.register_buffer("kernel", (kernel / kernel.sum()).view(1, 1, 3, 3))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, kernel_size=2, stride=1)
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, 3, 3)
        return F.conv2d(x, weight, stride=self.stride, groups=channels)


class GAPHead(nn.Module):
    """Global average pooling then one linear layer: the classifier costs (C + 1) * classes
    parameters whatever the image size, instead of C * H * W * classes for a flatten head."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
