"""AugMix (Hendrycks et al., ICLR 2020) on the training device, batched.

Why: noise/blur/contrast training (`tinycnn.augment`) teaches a net the corruptions it is
shown; AugMix aims at the ones it is not. Each image becomes a convex mixture of ``width``
chains of 1-3 label-preserving ops at random strengths, mixed again with the image itself,
so it stays close to the data while its low-level statistics vary a lot. With the
Jensen-Shannon consistency loss (`tinycnn.objective.JensenShannon`) the net is also asked
to give the clean image and two AugMix views the same prediction.

Following google-research/augmix ``augment_and_mix`` (and timm's AugMixAugment), per image:

    w ~ Dirichlet(alpha, ..., alpha)  (width weights),  m ~ Beta(alpha, alpha)
    chain_i = op_d(... op_1(x))       d = depth, or 1..3 at random when depth is -1
    out = (1 - m) * x + m * sum_i w_i chain_i

with every op, level and sign drawn per image and per chain step. The ops are the paper's
list: autocontrast, equalize, posterize, rotate, solarize, shear_x/y, translate_x/y. Left
out, as in the paper, are contrast, color, brightness and sharpness, which overlap the
CIFAR-10-C corruptions the benchmark (`tinycnn.corruptions`) tests on. Caveat for MNIST: the
geometric ops (rotate up to ~8 degrees, shear up to 0.09, translate up to ~2 px at severity
3) are milder versions of MNIST-C's rotate/shear/translate families, so on MNIST those
three families are not unseen corruptions.

Strengths follow ``augmentations.py``: a level ~ U(0.1, severity) per image and step, then
``int(level * max / 10)`` (or a float) for posterize bits (4 - 0..4), rotation degrees
(0..30), solarize threshold (256 - 0..256), shear (0..0.3) and translation (0..size/3 px),
each geometric one with a random sign. Differences from the PIL reference: images stay
float (no 8-bit round trip except inside posterize/equalize); shears are about the centre
(PIL shears about the top-left corner, which also shifts the image); resampling is
bilinear with zero fill, as PIL's BILINEAR with a black fill.

Batched: a chain step loops over the 9 ops, never over images. On the CPU it gathers the
images that drew each op and runs the op once on that group; on an accelerator it runs every
op on the whole batch and keeps each image's own result (no host sync to size the groups).
kornia supplies equalize and posterize.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .augment import Op, Params

# fn(images (n, C, H, W), level (n,) in [0.1, severity], sign (n,) of +-1) -> images
AugMixFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# The paper's ops that overlap the test corruptions (ImageNet-C / CIFAR-10-C), never used.
EXCLUDED = ("contrast", "color", "brightness", "sharpness")
MAX_DEPTH = 3  # depth -1 draws 1..MAX_DEPTH ops per chain


def _int_level(level: torch.Tensor, maxval: float) -> torch.Tensor:
    """augmentations.py's ``int_parameter``: int(level * maxval / 10), as a float tensor."""
    return torch.floor(level * maxval / 10)


def _view(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


def autocontrast(x, level, sign):
    """Stretch each channel of each image to [0, 1] (PIL ``autocontrast``); flat channels stay."""
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    flat = hi <= lo
    return torch.where(flat, x, (x - lo) / torch.where(flat, torch.ones_like(hi), hi - lo))


def equalize(x, level, sign):
    """Histogram equalisation per channel (kornia, PIL's algorithm on 8-bit levels)."""
    import kornia

    return kornia.enhance.equalize(x)


def posterize(x, level, sign):
    """Keep the top 4 - int(level * 4 / 10) bits of each 8-bit value (kornia)."""
    import kornia

    bits = (4 - _int_level(level, 4)).long()
    return kornia.enhance.posterize(x, bits)


def solarize(x, level, sign):
    """Invert values at or above 256 - int(level * 256 / 10) (on the 0..255 scale)."""
    threshold = _view(256 - _int_level(level, 256)).to(x.dtype)
    return torch.where(x * 255 >= threshold, 1 - x, x)


def warp(x: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """out(p) = x(matrix @ p + shift) per image, p in pixels from the image centre; bilinear,
    zeros outside. ``matrix`` (n, 2, 2) and ``shift`` (n, 2) act on (column, row)."""
    n, _, h, w = x.shape
    scale = torch.tensor([w / 2, h / 2], device=x.device, dtype=x.dtype)
    theta = torch.cat([matrix * scale.view(1, 1, 2) / scale.view(1, 2, 1),
                       (shift / scale).unsqueeze(2)], 2)  # normalised coords, align_corners=False
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0, 1)  # bilinear weights sum to 1 only up to rounding; equalize needs [0, 1]


def _eye(x: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, device=x.device, dtype=x.dtype).repeat(len(x), 1, 1)


def rotate(x, level, sign):
    """Rotate by int(level * 30 / 10) degrees, either way."""
    angle = (_int_level(level, 30) * sign).to(x.dtype) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    matrix = torch.stack([cos, -sin, sin, cos], 1).view(-1, 2, 2)
    return warp(x, matrix, torch.zeros(len(x), 2, device=x.device, dtype=x.dtype))


def _shear(x, level, sign, axis: int):
    matrix = _eye(x)
    matrix[:, axis, 1 - axis] = (level * 0.3 / 10 * sign).to(x.dtype)
    return warp(x, matrix, torch.zeros(len(x), 2, device=x.device, dtype=x.dtype))


def shear_x(x, level, sign):
    """Shear along the columns by level * 0.3 / 10, either way."""
    return _shear(x, level, sign, 0)


def shear_y(x, level, sign):
    """Shear along the rows by level * 0.3 / 10, either way."""
    return _shear(x, level, sign, 1)


def _translate(x, level, sign, axis: int):
    shift = torch.zeros(len(x), 2, device=x.device, dtype=x.dtype)
    shift[:, axis] = (_int_level(level, x.shape[-1] / 3) * sign).to(x.dtype)
    return warp(x, _eye(x), shift)


def translate_x(x, level, sign):
    """Shift by int(level * (size / 3) / 10) pixels left or right."""
    return _translate(x, level, sign, 0)


def translate_y(x, level, sign):
    """Shift by int(level * (size / 3) / 10) pixels up or down."""
    return _translate(x, level, sign, 1)


AUGMIX_OPS: dict[str, AugMixFn] = {
    "autocontrast": autocontrast, "equalize": equalize, "posterize": posterize, "rotate": rotate,
    "solarize": solarize, "shear_x": shear_x, "shear_y": shear_y,
    "translate_x": translate_x, "translate_y": translate_y,
}


class AugMix(Op):
    """Each image replaced by its AugMix mixture (see the module docstring); targets pass
    through. Params: ``ws`` (B, width) Dirichlet weights, ``m`` (B,) the chains' share, and
    per chain step (width x steps) ``op`` (B,) an index into ``ops`` or -1 (no op: a chain
    shorter than ``steps``), ``level`` (B,), ``sign`` (B,)."""

    def __init__(self, image_size: int, width: int = 3, depth: int = -1, severity: int = 3,
                 alpha: float = 1.0, ops: dict[str, AugMixFn] | None = None) -> None:
        self.image_size, self.width, self.depth = image_size, width, depth
        self.severity, self.alpha = severity, alpha
        self.ops = list((AUGMIX_OPS if ops is None else ops).values())
        self.steps = depth if depth > 0 else MAX_DEPTH
        self.grouped: bool | None = None  # None: by device (see `step`); a test may force either

    def sample(self, batch_shape, device):
        b = batch_shape[0]
        alpha = torch.full((self.width,), float(self.alpha), device=device)
        ws = torch.distributions.Dirichlet(alpha).sample((b,))
        m = torch.distributions.Beta(alpha[0], alpha[0]).sample((b,))
        chains = []
        for _ in range(self.width):
            depth = (torch.randint(1, MAX_DEPTH + 1, (b,), device=device) if self.depth <= 0
                     else torch.full((b,), self.depth, device=device))
            steps = []
            for j in range(self.steps):
                op = torch.randint(0, len(self.ops), (b,), device=device)
                level = 0.1 + torch.rand(b, device=device) * (self.severity - 0.1)
                sign = torch.randint(0, 2, (b,), device=device) * 2 - 1
                steps.append({"op": torch.where(j < depth, op, -1), "level": level, "sign": sign})
            chains.append(steps)
        return {"ws": ws, "m": m, "chains": chains}

    def step(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """One chain step: each op runs once, on the images that drew it (CPU: gathered, so
        the work is one batch's worth), or on the whole batch, kept where drawn (elsewhere:
        no host sync per op to size a group, at 9x the arithmetic of tiny images)."""
        grouped = x.device.type == "cpu" if self.grouped is None else self.grouped
        out = x.clone() if grouped else x
        for k, fn in enumerate(self.ops):
            if not grouped:
                out = torch.where(_view(params["op"] == k), fn(x, params["level"], params["sign"]).to(x.dtype), out)
                continue
            idx = (params["op"] == k).nonzero().squeeze(1)
            if idx.numel():
                out[idx] = fn(x[idx], params["level"][idx], params["sign"][idx]).to(x.dtype)
        return out

    def chains(self, x: torch.Tensor, params: Params) -> list[torch.Tensor]:
        """The ``width`` augmented images of each input, before mixing."""
        outs = []
        for steps in params["chains"]:
            aug = x
            for step in steps:
                aug = self.step(aug, step)
            outs.append(aug)
        return outs

    def apply(self, x, targets, params):
        ws, m = params["ws"].to(x.dtype), _view(params["m"].to(x.dtype))
        mix = sum(_view(ws[:, i]) * chain for i, chain in enumerate(self.chains(x, params)))
        return (1 - m) * x + m * mix, targets


class AugMixViews(Op):
    """The batch followed by ``extra`` independent AugMix views of it, concatenated along the
    batch (B x (1 + extra) images, view after view), for the JSD loss; the B targets are
    those of the batch, shared by its views. Params: ``views``, one AugMix dict per view."""

    def __init__(self, augmix: AugMix, extra: int = 2) -> None:
        self.augmix, self.extra = augmix, extra

    def sample(self, batch_shape, device):
        return {"views": [self.augmix.sample(batch_shape, device) for _ in range(self.extra)]}

    def apply(self, x, targets, params):
        views = [self.augmix.apply(x, targets, p)[0] for p in params["views"]]
        return torch.cat([x, *views]), targets
