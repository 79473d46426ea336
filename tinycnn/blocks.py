"""The layers tiny networks are made of. Each exists because it buys accuracy per parameter."""
from __future__ import annotations

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


# Keyed like spec.ACTIVATIONS (a test keeps the two in step; spec stays free of torch).
ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {"re": nn.ReLU, "sw": nn.SiLU, "hs": nn.Hardswish}


def activation(name: str = "re") -> nn.Module:
    """A block's non-linearity by its spec name. ReLU zeroes half of a layer only 8-16
    channels wide; smooth SiLU and hard-swish (MobileNetV3) keep a little of the negative
    side, for no parameters."""
    return ACTIVATION_LAYERS[name](inplace=True)


class ConvBNAct(nn.Sequential):
    """k x k conv (no bias: BN's shift replaces it) -> BatchNorm -> activation. The workhorse."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: str = "re") -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            activation(act),
        )


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): GAP -> 1x1 down -> ReLU -> 1x1 up -> sigmoid gate.

    The bottleneck width is explicit: on a 12-channel layer a ratio rounded up to 8 would
    cost more than the layer itself, while 2-4 channels cost ~5 parameters per channel.
    """

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, bottleneck, 1)
        self.up = nn.Conv2d(bottleneck, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.up(F.relu(self.down(gate))))
        return x * gate


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
