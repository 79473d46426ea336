"""Initialisations that cut the epochs to a target (issue #19), after airbench (Keller Jordan,
``legacy/airbench94.py``) and hlb-CIFAR10: identity (dirac) convs, and a frozen first conv
that whitens the training images' patches.

Each is a recipe switch, off by default (``dirac_init``, ``whiten_init``). The engine calls
`initialise` once, after the model is built and moved to its device and before the optimiser
exists, so a frozen weight is in no optimiser group: no step and no weight decay touches it.
Neither draws a random number (dirac is a fixed pattern; whitening reads the first training
images in order), so a recipe without them trains bit for bit as before, and a resumed run
recomputes the same values and the same frozen flags before its checkpoint's weights load.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batches import to_float
from .errors import RecipeError

WHITEN_IMAGES = 5000  # training images whose patches estimate the covariance (airbench's 5000)
WHITEN_CHUNK = 256  # images per step of the estimate: 3x3 patches of 256 CIFAR images ~ 25 MB
WHITEN_KINDS = ("conv", "pw")  # first blocks that are one plain dense conv -> BN -> act


def dirac_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The convs ``dirac_init`` touches: dense (groups = 1), spatial (k x k, k > 1), and not
    narrowing (out >= in).

    Why these: an identity needs one output channel per input channel, hence out >= in. A
    dense k x k conv is where airbench uses it: at identity the block first passes its input
    on (a ResNet-like start, without a skip) while its other out - in channels keep their
    random init and learn new filters. Depthwise convs are left out: at identity every
    channel would start with the same delta filter, and spatial filtering is their only job.
    1x1 convs are left out: in dw/sep/ir blocks they are the only place channels mix, and SE
    and ConvNeXt's 1x1 convs feed gates and layer scales, where identity is not "near
    identity" of the block at all. (A RepConv's k x k branch qualifies; when it also has an
    identity-BN branch the block starts as two identities plus its 1x1 branch.)"""
    return [m for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and min(m.kernel_size) > 1
            and m.out_channels >= m.in_channels]


@torch.no_grad()
def dirac_init_(model: nn.Module) -> list[nn.Conv2d]:
    """airbench's ``dirac_(w[:in])``: output channel i < in of each `dirac_convs` conv copies
    input channel i (a 1 at the centre tap); the rest keep their init. Returns the convs."""
    convs = dirac_convs(model)
    for conv in convs:
        nn.init.dirac_(conv.weight[:conv.in_channels])
    return convs


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The conv of the model's first block, which must be a plain ``conv`` or ``pw`` block
    (a whitening filter bank needs the raw, normalised image as its input)."""
    block = model.spec.blocks[0]
    if block.kind not in WHITEN_KINDS or block.residual:
        raise RecipeError(f"whiten_init needs a plain conv block first (conv_k3_c16, pw_c8: one conv -> BN -> "
                          f"act, no _r), but {model.spec.name!r} starts with {str(block)!r}; "
                          f"drop whiten_init or start the architecture with a conv block")
    return next(m for m in model.features[0].modules() if isinstance(m, nn.Conv2d))


def image_patches(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Every ``kernel``-sized patch of the batch (no padding), one row each, flattened in
    the order of a conv weight's (in, kh, kw): (B * L, C * kh * kw)."""
    cols = F.unfold(x, kernel)  # (B, C*kh*kw, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


@torch.no_grad()
def patch_covariance(images: torch.Tensor, normalize: nn.Module, kernel: tuple[int, int],
                     chunk: int = WHITEN_CHUNK) -> torch.Tensor:
    """Covariance (d, d), float64, of the patches the first conv sees: uint8 ``images`` as
    floats in [0, 1], through the model's ``normalize``, cut into ``kernel`` patches.
    Accumulated chunk by chunk on the images' device, so 5,000 CIFAR images never hold all
    their 4.5 M patches at once. Centred (airbench uses the raw second moment of normalised
    patches, nearly the same): the BatchNorm after the conv removes the mean anyway."""
    total, outer, count = None, None, 0
    for i in range(0, len(images), chunk):
        p = image_patches(normalize(to_float(images[i:i + chunk])), kernel)
        s, o = p.sum(0).double(), (p.T @ p).double()
        total, outer = (s, o) if total is None else (total + s, outer + o)
        count += len(p)
    mean = total / count
    return outer / count - torch.outer(mean, mean)


def whitening_filters(cov: torch.Tensor, eps: float, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues descending (d,), filters (2d, *shape)): airbench's filter bank, each
    eigenvector of ``cov`` over sqrt(eigenvalue + eps), largest variance first, then the
    same filters negated (with a ReLU after, the pair keeps both signs of a direction)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    scaled = eigenvectors.T / (eigenvalues.clamp(min=0) + eps).sqrt().unsqueeze(1)
    return eigenvalues, torch.cat([scaled, -scaled]).reshape(-1, *shape)


@torch.no_grad()
def whiten_first_conv_(model: nn.Module, images: torch.Tensor, eps: float = 5e-4,
                       n_images: int = WHITEN_IMAGES) -> nn.Conv2d:
    """Set the first conv to patch whitening of the first ``n_images`` training images and
    freeze it (``requires_grad = False``) for the run.

    Its out channels take airbench's filters [+e_1 .. +e_d, -e_1 .. -e_d] in that order, cut
    at the channel count: with at least 2d channels every direction comes as a pair and the
    channels past 2d keep their init (frozen with the rest of the tensor: fixed random
    features); with fewer, the top-variance directions come first, unpaired when d or fewer
    fit. The freeze is on the whole weight tensor; the BN after it still trains."""
    conv = first_conv(model)
    cov = patch_covariance(images[:n_images], model.normalize, conv.kernel_size)
    _, filters = whitening_filters(cov, eps, conv.weight.shape[1:])
    kept = min(conv.out_channels, len(filters))
    conv.weight[:kept] = filters[:kept].to(conv.weight.dtype)
    conv.weight.requires_grad_(False)
    return conv


def initialise(model: nn.Module, recipe, images: torch.Tensor | None) -> None:
    """The recipe's initialisations, in airbench's order (dirac, then whitening, which
    overwrites the first conv): the engine's one call. ``images``: the training split's
    uint8 images on the model's device, read only by whitening."""
    if recipe.dirac_init:
        dirac_init_(model)
    if recipe.whiten_init:
        if images is None:
            raise ValueError("whiten_init needs the training images (pass the training split)")
        whiten_first_conv_(model, images, recipe.whiten_eps)
