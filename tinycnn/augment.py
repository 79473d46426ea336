"""Batch augmentation on the training device: whole batches, no per-sample Python.

Two interchangeable backends produce the same transforms:

* ``tensor`` — plain batched tensor ops (gather for crops, masks for Cutout). The default:
  on 28-32 px batches of 128 it ran Cutout 1.5-4x and Mixup 3-4x faster than kornia on
  this CPU, crop+flip+Cutout+Mixup 1.2-2x (kornia's crop alone was faster on CIFAR-10);
  ``experiments/results/bench-cpu.json`` has the numbers. Either path costs a few percent
  of a training step, so the choice is about simplicity more than speed.
* ``kornia`` — kornia.augmentation modules (RandomCrop, RandomHorizontalFlip,
  RandomErasing as Cutout, RandomMixUpV2), for users who compose with kornia pipelines.

Conventions shared by both backends:

* inputs are float images in [0, 1]; normalisation happens inside the model;
* random crop pads with *reflect* (no black borders, as in airbench);
* Cutout fills one ``size`` x ``size`` square with 0. The tensor backend follows DeVries &
  Taylor (centre anywhere, square clipped at the border); kornia's RandomErasing keeps
  the square fully inside the image;
* Mixup draws one lambda per *sample* from Beta(alpha, alpha) (Zhang et al. use one per
  batch; per sample gives lower-variance gradients at the same cost). kornia's
  RandomMixUpV2 would draw lambda uniformly, so we pass our Beta draws to it as params;
* CutMix (Yun et al.) pastes one box per batch, lambda ~ Beta(alpha, alpha), corrected to
  the box's exact area; it is a tensor op in both backends;
* targets come out as probability vectors: label smoothing is applied to each one-hot
  target *before* mixing, so a mixed target is the lambda-mix of two smoothed targets and
  always sums to 1.

Structure (after kornia's augmentation base, issue #14): every op splits into ``sample``,
which draws all its random numbers into a dict of tensors (kornia's ``forward_parameters``),
and ``apply``, which is deterministic given that dict (kornia's ``apply_transform``);
``op(x, targets, params=p)`` replays a call. A backend is a choice of implementation per
op (``RandomCrop`` or ``KorniaCrop``, ...), made once in ``BatchAugment.__init__``; the
call is then label smoothing followed by the list of ops. The random draws happen in the
same order and amount as before this split, so seeded training runs are unchanged.

Robustness ops (issue #18), tensor ops in both backends and off by default, so that a recipe
without them draws no extra random numbers: ``Contrast``, ``GaussBlur`` and ``GaussNoise``,
each applied per image with probability ``p`` at a strength drawn per image, and AugMix
(`tinycnn.augmix`), which comes last and may return several views of the batch.

Ops keyed by image (issue #19): ``AlternatingFlip`` (``flip_mode = "alternate"``) decides
each image's flip from its index into the training split and the epoch, not from a draw per
batch, so the engine hands ``BatchAugment`` each batch's indices and calls ``start_epoch``.
An op says so with ``keyed = True`` and builds its params in ``sample_keyed(index, device)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import RecipeError

BACKENDS = ("tensor", "kornia")
FLIP_MODES = ("random", "alternate")
# AlternatingFlip's epoch-0 coins come from a generator of their own, seeded with the recipe's
# seed plus this, so they are not the same numbers as the global stream's first draws.
FLIP_SEED_OFFSET = 0x5EED_F11B

Params = dict  # name -> tensor; a composite op nests its inner op's dict under "inner"


def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(1 - eps) on the true class plus eps / K everywhere: the target that
    ``F.cross_entropy(label_smoothing=eps)`` uses implicitly."""
    t = F.one_hot(y, num_classes).float()
    return t * (1.0 - smoothing) + smoothing / num_classes


class Op:
    """One augmentation step on (images, targets). ``sample`` holds every random draw, so
    ``apply`` can be replayed, inspected or handed parameters from another implementation.
    A ``keyed`` op draws nothing per batch: its params follow from each image's index into
    the training split (``sample_keyed``), which `BatchAugment` passes on."""

    keyed = False

    def sample(self, batch_shape: torch.Size, device: torch.device) -> Params:
        return {}

    def apply(self, x: torch.Tensor, targets: torch.Tensor, params: Params):
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, targets: torch.Tensor, params: Params | None = None):
        if params is None:
            params = self.sample(x.shape, x.device)
        return self.apply(x, targets, params)


class LabelSmoothing(Op):
    """Int labels -> smoothed one-hot probability targets; the step every other op's targets come from."""

    def __init__(self, num_classes: int, smoothing: float) -> None:
        self.num_classes, self.smoothing = num_classes, smoothing

    def apply(self, x, y, params):
        return x, smooth_one_hot(y, self.num_classes, self.smoothing)


# --- tensor implementations -------------------------------------------------------------


class RandomCrop(Op):
    """Translate each image by up to ``pad`` pixels (reflect padding), one gather per batch.
    Params: ``dy``, ``dx`` (B, 1), the crop's top-left corner in the padded image."""

    def __init__(self, pad: int) -> None:
        self.pad = pad

    def sample(self, batch_shape, device):
        b, n = batch_shape[0], 2 * self.pad + 1
        dy = torch.randint(0, n, (b, 1), device=device)
        dx = torch.randint(0, n, (b, 1), device=device)
        return {"dy": dy, "dx": dx}

    def apply(self, x, targets, params):
        b, c, h, w = x.shape
        p = self.pad
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        rows = (params["dy"] + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (params["dx"] + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[batch, chan, rows, cols], targets


class RandomFlip(Op):
    """Mirror half of the images left-right. Params: ``flip`` (B, 1, 1, 1) bool."""

    def sample(self, batch_shape, device):
        return {"flip": torch.rand(batch_shape[0], 1, 1, 1, device=device) < 0.5}

    def apply(self, x, targets, params):
        return torch.where(params["flip"], x.flip(3), x), targets


class AlternatingFlip(RandomFlip):
    """airbench's alternating flip (Keller Jordan, legacy/airbench94.py): in epoch 0 each
    training image is mirrored with a fair coin; in every later epoch it is mirrored exactly
    when it was not in the epoch before, i.e. ``flipped = coin[i] XOR (epoch odd)``.

    Why: a random flip per batch shows some images the same way several epochs in a row and
    some orientations not at all for a while; alternating shows every image both ways in any
    two consecutive epochs, which airbench found worth fewer epochs to the same accuracy.
    Keyed by the image's index in the training split; the coins come from a generator of
    their own (seeded by the recipe's seed), so the global random stream is untouched and a
    resumed run recomputes the same coins. A tensor op in both backends (kornia has no such
    flip). Params: ``flip`` (B, 1, 1, 1) bool, as RandomFlip's."""

    keyed = True

    def __init__(self, n_images: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(FLIP_SEED_OFFSET + seed)
        self.coins = torch.rand(n_images, generator=generator) < 0.5  # epoch 0's flips, on the CPU
        self.epoch = 0

    def sample(self, batch_shape, device):
        raise TypeError("AlternatingFlip flips by image index: call it through BatchAugment with index=")

    def sample_keyed(self, index: torch.Tensor, device) -> Params:
        if self.coins.device != torch.device(device):
            self.coins = self.coins.to(device)  # once: the coins then live beside the batches
        flip = self.coins[index.to(device)] ^ (self.epoch % 2 == 1)
        return {"flip": flip.view(-1, 1, 1, 1)}


class Cutout(Op):
    """Zero one ``size`` x ``size`` square per image, centred uniformly, clipped at borders.
    Params: ``cy``, ``cx`` (B, 1, 1), the square's centre."""

    def __init__(self, size: int) -> None:
        self.size = size

    def sample(self, batch_shape, device):
        b, _, h, w = batch_shape
        cy = torch.randint(0, h, (b, 1, 1), device=device)
        cx = torch.randint(0, w, (b, 1, 1), device=device)
        return {"cy": cy, "cx": cx}

    def apply(self, x, targets, params):
        _, _, h, w = x.shape
        s = self.size
        y0, x0 = params["cy"] - s // 2, params["cx"] - s // 2
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        hole = (ys >= y0) & (ys < y0 + s) & (xs >= x0) & (xs < x0 + s)
        return x.masked_fill(hole.unsqueeze(1), 0.0), targets


class MixingOp(Op):
    """A mixing op whose strength can ramp up: the paired image's weight (1 - lam) is
    multiplied by ``strength`` in [0, 1] (xvel/cifar10-tiniest ramps Mixup's weight with
    training progress, so early epochs see clean images). At 1 the draws are untouched."""

    strength = 1.0

    def ramped(self, partner_weight: torch.Tensor) -> torch.Tensor:
        return partner_weight if self.strength >= 1.0 else partner_weight * self.strength


class Mixup(MixingOp):
    """x' = lam * x + (1 - lam) * x[perm], same for targets; lam per sample ~ Beta(alpha, alpha).
    Params: ``lam`` (B,), ``perm`` (B,)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def draw_lam(self, b: int, device) -> torch.Tensor:
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((b,)).to(device)
        return lam if self.strength >= 1.0 else 1 - self.ramped(1 - lam)

    def sample(self, batch_shape, device):
        b = batch_shape[0]
        lam = self.draw_lam(b, device)
        return {"lam": lam, "perm": torch.randperm(b, device=device)}

    def apply(self, x, targets, params):
        b, lam, perm = x.shape[0], params["lam"], params["perm"]
        lx = lam.view(b, 1, 1, 1).to(x.dtype)
        lt = lam.view(b, 1).to(targets.dtype)
        return lx * x + (1 - lx) * x[perm], lt * targets + (1 - lt) * targets[perm]


class CutMix(MixingOp):
    """Paste one box from a shuffled batch; targets mix by the box's exact area.
    Params: ``lam`` (), ``cy``, ``cx`` () the box centre, ``perm`` (B,)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def sample(self, batch_shape, device):
        b, _, h, w = batch_shape
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample()
        lam = lam if self.strength >= 1.0 else 1 - self.ramped(1 - lam)  # a smaller box
        cy, cx = torch.randint(0, h, ()), torch.randint(0, w, ())
        return {"lam": lam, "cy": cy, "cx": cx, "perm": torch.randperm(b, device=device)}

    def apply(self, x, targets, params):
        _, _, h, w = x.shape
        lam, cy, cx, perm = params["lam"].item(), params["cy"].item(), params["cx"].item(), params["perm"]
        cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        return out, kept * targets + (1 - kept) * targets[perm]


class RandomApply(Op):
    """One coin per batch: ``op`` when it lands below ``p``, else ``otherwise`` (or nothing).
    The coin is drawn before the chosen op's own parameters. Params: ``applied`` () bool and
    the chosen op's params under ``inner``."""

    def __init__(self, op: Op, p: float, otherwise: Op | None = None) -> None:
        self.op, self.p, self.otherwise = op, p, otherwise

    def sample(self, batch_shape, device):
        applied = torch.rand(()).item() < self.p  # a Python comparison, as before the split
        chosen = self.op if applied else self.otherwise
        inner = chosen.sample(batch_shape, device) if chosen is not None else {}
        return {"applied": torch.tensor(applied), "inner": inner}

    def apply(self, x, targets, params):
        chosen = self.op if bool(params["applied"]) else self.otherwise
        return chosen.apply(x, targets, params["inner"]) if chosen is not None else (x, targets)


# --- robustness ops: contrast, blur, noise (issue #18) -------------------------------------
#
# Why: a deployed tiny net sees low contrast, defocus and sensor noise that clean training
# images never show it. Each op is drawn per image: a coin (``p``) and a strength, so one
# batch mixes clean and degraded images of every strength. They are written here, not taken
# from `tinycnn.corruptions`, and differ from the benchmark on purpose where they can (a
# Gaussian blur is not one of its defocus/glass/motion/zoom blurs; contrast shrinks towards
# the image's mean over all channels, the benchmark's towards each channel's). Gaussian
# noise, though, *is* CIFAR-10-C's gaussian_noise family (and close to shot noise): a gain
# there measures a corruption trained on, not robustness to unseen ones.


class PerImageOp(Op):
    """An op applied to each image with probability ``p``; ``sample`` draws the coins
    first, then the op's strengths (every image draws both, applied or not, so the number
    of random draws does not depend on the coins). Params: ``applied`` (B, 1, 1, 1) bool."""

    def __init__(self, p: float) -> None:
        self.p = p

    def coins(self, batch_shape, device) -> torch.Tensor:
        return torch.rand(batch_shape[0], 1, 1, 1, device=device) < self.p

    def apply(self, x, targets, params):
        return torch.where(params["applied"], self.transform(x, params), x), targets

    def transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError


class GaussNoise(PerImageOp):
    """x + sigma * N(0, 1) per pixel and channel, clipped to [0, 1]; sigma ~ U(0, ``std``)
    per image. Params: ``applied``, ``sigma`` (B, 1, 1, 1), ``noise`` (B, C, H, W)."""

    def __init__(self, p: float, std: float) -> None:
        super().__init__(p)
        self.std = std

    def sample(self, batch_shape, device):
        applied = self.coins(batch_shape, device)
        sigma = torch.rand(batch_shape[0], 1, 1, 1, device=device) * self.std
        return {"applied": applied, "sigma": sigma, "noise": torch.randn(batch_shape, device=device)}

    def transform(self, x, params):
        return (x + params["sigma"].to(x.dtype) * params["noise"].to(x.dtype)).clamp(0, 1)


def blur_kernel_size(sigma_max: float, image_size: int) -> int:
    """Odd taps covering +-3 sigma of the widest blur, at most what reflect padding allows."""
    k = 2 * math.ceil(3 * sigma_max) + 1
    return min(k, 2 * image_size - 1 if image_size > 1 else 1)


class GaussBlur(PerImageOp):
    """Gaussian blur with sigma ~ U(0.1, ``sigma``) pixels per image, reflect borders:
    kornia's ``gaussian_blur2d``, which takes one sigma per image (a batched separable
    conv). Params: ``applied``, ``sigma`` (B,)."""

    def __init__(self, p: float, sigma: float) -> None:
        super().__init__(p)
        self.sigma = sigma

    def sample(self, batch_shape, device):
        applied = self.coins(batch_shape, device)
        sigma = 0.1 + torch.rand(batch_shape[0], device=device) * (self.sigma - 0.1)
        return {"applied": applied, "sigma": sigma}

    def transform(self, x, params):
        import kornia

        k = blur_kernel_size(self.sigma, min(x.shape[-2:]))
        sigma = params["sigma"].to(x.device, x.dtype).view(-1, 1).expand(-1, 2)
        return kornia.filters.gaussian_blur2d(x, (k, k), sigma, border_type="reflect")


class Contrast(PerImageOp):
    """mean + f * (x - mean) with f ~ U(``lo``, ``hi``) per image and the mean over the
    image's pixels and channels (torchvision's ``adjust_contrast`` uses a grey mean),
    clipped to [0, 1]. Params: ``applied``, ``factor`` (B, 1, 1, 1)."""

    def __init__(self, p: float, lo: float, hi: float) -> None:
        super().__init__(p)
        self.lo, self.hi = lo, hi

    def sample(self, batch_shape, device):
        applied = self.coins(batch_shape, device)
        factor = self.lo + torch.rand(batch_shape[0], 1, 1, 1, device=device) * (self.hi - self.lo)
        return {"applied": applied, "factor": factor}

    def transform(self, x, params):
        mean = x.mean((1, 2, 3), keepdim=True)
        return (mean + params["factor"].to(x.dtype) * (x - mean)).clamp(0, 1)


# --- kornia implementations of the same ops -------------------------------------------------


class KorniaOp(Op):
    """An image op done by a kornia module: ``sample`` is its ``forward_parameters`` (drawn on
    the module's own RNG device, the CPU), ``apply`` its forward with those params."""

    def __init__(self, module) -> None:
        self.module = module

    def sample(self, batch_shape, device):
        return self.module.forward_parameters(torch.Size(batch_shape))

    def apply(self, x, targets, params):
        return self.module(x, params=params), targets


class KorniaCrop(KorniaOp):
    """RandomCrop's kornia twin. Params: kornia's; ``src`` (B, 4, 2) holds the crop's corners
    as (x, y) in the padded image, so ``src[:, 0]`` is (dx, dy)."""

    def __init__(self, pad: int, image_size: int) -> None:
        import kornia.augmentation as K

        size = (image_size, image_size)
        super().__init__(K.RandomCrop(size, padding=pad, padding_mode="reflect"))


class KorniaFlip(KorniaOp):
    """RandomFlip's kornia twin. Params: kornia's; ``batch_prob`` (B,) is 1 where flipped."""

    def __init__(self) -> None:
        import kornia.augmentation as K

        super().__init__(K.RandomHorizontalFlip())


class KorniaCutout(KorniaOp):
    """Cutout's kornia twin (RandomErasing, square kept inside the image). Params: kornia's
    ``xs``, ``ys``, ``widths``, ``heights`` (B,), the erased box."""

    def __init__(self, size: int, image_size: int) -> None:
        import kornia.augmentation as K

        area = size**2 / image_size**2
        super().__init__(K.RandomErasing(scale=(area, area), ratio=(1.0, 1.0), value=0.0, p=1.0))


class KorniaMixup(MixingOp):
    """Mixup's kornia twin: RandomMixUpV2 mixes the images with our Beta lambdas.
    kornia weights the *paired* image by lambda, so targets mix as (1 - lam) * t + lam * t[pair].
    Params: kornia's, with ``mixup_lambdas`` (B,) ~ Beta(alpha, alpha) and ``mixup_pairs`` (B,)."""

    def __init__(self, alpha: float) -> None:
        import kornia.augmentation as K

        self.alpha = alpha
        self.module = K.RandomMixUpV2(data_keys=["input"])

    def sample(self, batch_shape, device):
        params = self.module.forward_parameters(torch.Size(batch_shape))
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((batch_shape[0],))
        params["mixup_lambdas"] = self.ramped(lam)  # kornia's lambda is the partner's weight
        return params

    def apply(self, x, targets, params):
        x = self.module(x, params=params)
        lam = params["mixup_lambdas"].to(targets.device, targets.dtype).view(-1, 1)
        pair = params["mixup_pairs"].to(targets.device)
        return x, (1 - lam) * targets + lam * targets[pair]


# --- functional forms (one call = sample + apply) -------------------------------------------


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Translate each image by up to ``pad`` pixels (reflect padding), one gather per batch."""
    return RandomCrop(pad)(x, None)[0]


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror half of the images left-right."""
    return RandomFlip()(x, None)[0]


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image, centred uniformly, clipped at borders."""
    return Cutout(size)(x, None)[0]


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float,
          lam: torch.Tensor | None = None, perm: torch.Tensor | None = None):
    """x' = lam * x + (1 - lam) * x[perm], same for targets; lam per sample ~ Beta(alpha, alpha).
    A ``lam`` or ``perm`` given is used as is; only the missing ones are drawn (lam first)."""
    op, b = Mixup(alpha), x.shape[0]
    lam = op.draw_lam(b, x.device) if lam is None else lam
    perm = torch.randperm(b, device=x.device) if perm is None else perm
    return op.apply(x, targets, {"lam": lam, "perm": perm})


def cutmix(x: torch.Tensor, targets: torch.Tensor, alpha: float):
    """Paste one box from a shuffled batch; targets mix by the box's exact area."""
    return CutMix(alpha)(x, targets)


# --- the batch pipeline ---------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    crop_pad: int = 0
    flip: bool = False
    flip_mode: str = "random"  # "alternate": airbench's alternating flip, keyed by image index
    cutout: int = 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0  # chance per batch that Mixup/CutMix is applied at all
    mix_ramp_epochs: float = 0.0  # > 0: the partner's weight ramps 0 -> full over these epochs
    label_smoothing: float = 0.0
    backend: str = "tensor"
    # robustness ops (issue #18); p = 0 leaves an op out of the pipeline
    noise_p: float = 0.0
    noise_std: float = 0.1  # max sigma; each image draws sigma ~ U(0, noise_std)
    blur_p: float = 0.0
    blur_sigma: float = 1.0  # max Gaussian sigma in pixels; each image draws U(0.1, blur_sigma)
    contrast_p: float = 0.0
    contrast_min: float = 0.2  # each image's contrast factor ~ U(contrast_min, contrast_max)
    contrast_max: float = 1.0
    augmix: bool = False
    augmix_width: int = 3
    augmix_depth: int = -1  # -1: each chain draws 1-3 ops
    augmix_severity: int = 3
    augmix_alpha: float = 1.0
    augmix_jsd: bool = False  # three views (clean, AugMix, AugMix) for the JSD loss

    def __post_init__(self) -> None:
        for ok, message in [
            (self.flip_mode in FLIP_MODES,
             f"flip_mode must be one of {', '.join(FLIP_MODES)} (got {self.flip_mode!r})"),
            (self.flip or self.flip_mode == "random", f"flip_mode = {self.flip_mode!r} needs flip = true"),
            (all(0 <= p <= 1 for p in (self.noise_p, self.blur_p, self.contrast_p)),
             "noise_p, blur_p and contrast_p must be probabilities in [0, 1] (0 disables)"),
            (self.noise_std > 0, "noise_std (the largest noise sigma) must be > 0"),
            (self.blur_sigma >= 0.1, "blur_sigma (the largest blur sigma, pixels) must be >= 0.1"),
            (0 <= self.contrast_min <= self.contrast_max, "need 0 <= contrast_min <= contrast_max"),
            (self.augmix_width >= 1, "augmix_width must be >= 1"),
            (self.augmix_depth == -1 or self.augmix_depth >= 1, "augmix_depth must be >= 1, or -1 (1-3 random)"),
            (1 <= self.augmix_severity <= 10, "augmix_severity must be in 1..10"),
            (self.augmix_alpha > 0, "augmix_alpha must be > 0"),
            (self.augmix or not self.augmix_jsd, "augmix_jsd needs augmix = true"),
        ]:
            if not ok:
                raise RecipeError(f"invalid recipe: {message}")

    @property
    def views(self) -> int:
        """Images per sample in an augmented batch: 3 with AugMix's JSD loss, else 1."""
        return 3 if self.augmix_jsd else 1


def flip_op(cfg: AugmentConfig, n_images: int, seed: int) -> Op:
    """The flip of ``flip_mode``: random per batch (in the backend's implementation), or
    alternating per image, which needs the training split's size ``n_images``."""
    if cfg.flip_mode == "alternate":
        if n_images < 1:
            raise ValueError("flip_mode 'alternate' needs n_images, the size of the training split")
        return AlternatingFlip(n_images, seed)
    return KorniaFlip() if cfg.backend == "kornia" else RandomFlip()


def image_ops(cfg: AugmentConfig, image_size: int, n_images: int = 0, seed: int = 0) -> list[Op]:
    """Crop, flip, Cutout in that order, each in the backend's implementation."""
    kornia = cfg.backend == "kornia"
    ops: list[Op] = []
    if cfg.crop_pad:
        ops.append(KorniaCrop(cfg.crop_pad, image_size) if kornia else RandomCrop(cfg.crop_pad))
    if cfg.flip:
        ops.append(flip_op(cfg, n_images, seed))
    if cfg.cutout:
        ops.append(KorniaCutout(cfg.cutout, image_size) if kornia else Cutout(cfg.cutout))
    return ops


def robust_ops(cfg: AugmentConfig) -> list[Op]:
    """Contrast, blur, noise in that order (scene, optics, sensor), each only when its p > 0,
    so that recipes without them draw exactly the random numbers they drew before."""
    ops: list[Op] = []
    if cfg.contrast_p:
        ops.append(Contrast(cfg.contrast_p, cfg.contrast_min, cfg.contrast_max))
    if cfg.blur_p:
        ops.append(GaussBlur(cfg.blur_p, cfg.blur_sigma))
    if cfg.noise_p:
        ops.append(GaussNoise(cfg.noise_p, cfg.noise_std))
    return ops


def augmix_ops(cfg: AugmentConfig, image_size: int) -> list[Op]:
    """AugMix last, after mixing: it may turn the batch into several views of it, which no
    op after it would know how to pair with the targets."""
    if not cfg.augmix:
        return []
    from .augmix import AugMix, AugMixViews

    augmix = AugMix(image_size, cfg.augmix_width, cfg.augmix_depth, cfg.augmix_severity, cfg.augmix_alpha)
    return [AugMixViews(augmix, cfg.views - 1) if cfg.augmix_jsd else augmix]


def mix_op(cfg: AugmentConfig) -> Op | None:
    """Mixup/CutMix behind the per-batch ``mix_prob`` coin; with both on, a second, fair coin
    picks CutMix (below 0.5) or Mixup. CutMix is a tensor op in both backends, so kornia's
    Mixup is used only when ``cutmix_alpha`` is 0."""
    if not (cfg.mixup_alpha or cfg.cutmix_alpha):
        return None
    if cfg.mixup_alpha and cfg.cutmix_alpha:
        mixer: Op = RandomApply(CutMix(cfg.cutmix_alpha), 0.5, otherwise=Mixup(cfg.mixup_alpha))
    else:
        mixer = CutMix(cfg.cutmix_alpha) if cfg.cutmix_alpha else Mixup(cfg.mixup_alpha)
    gated = RandomApply(mixer, cfg.mix_prob)
    if cfg.backend == "kornia" and not cfg.cutmix_alpha:
        # One coin, as for the tensor ops. (Until #14 a "no" from this coin fell through to
        # the tensor mixer's own coin, so a batch was mixed with chance p(2 - p).)
        return RandomApply(KorniaMixup(cfg.mixup_alpha), cfg.mix_prob)
    return gated


class BatchAugment:
    """Turn a float batch and int labels into augmented images and probability targets.
    Everything is decided here, once: the call is label smoothing, then the list of ops.
    ``n_images`` (the training split's size) and ``seed`` are needed only by keyed ops
    (the alternating flip); each call then passes the batch's indices into that split."""

    def __init__(self, cfg: AugmentConfig, num_classes: int, image_size: int,
                 n_images: int = 0, seed: int = 0) -> None:
        if cfg.backend not in BACKENDS:
            raise ValueError(f"unknown augmentation backend {cfg.backend!r}; accepted: {', '.join(BACKENDS)}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.smoothing = LabelSmoothing(num_classes, cfg.label_smoothing)
        mix = mix_op(cfg)
        self.ops: list[Op] = image_ops(cfg, image_size, n_images, seed) + robust_ops(cfg)
        self.ops += ([mix] if mix is not None else []) + augmix_ops(cfg, image_size)
        self.views = cfg.views  # the objective splits a batch of ``views`` x B images

    def start_epoch(self, epoch: int) -> None:
        """Tell keyed ops the epoch (0-based) and set the mixing strength of a ramp
        (``mix_ramp_epochs``) for it."""
        for op in self.ops:
            if op.keyed:
                op.epoch = epoch
        if self.cfg.mix_ramp_epochs:
            strength = min(1.0, epoch / self.cfg.mix_ramp_epochs)
            for op in _mixing_ops(self.ops):
                op.strength = strength

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, targets): B targets, and ``views`` x B images, view after view (the
        first B are the batch itself when ``views`` > 1). ``index`` (B,): the images'
        indices into the training split, needed only by keyed ops."""
        x, targets = self.smoothing(x, y)
        for op in self.ops:
            x, targets = op(x, targets, params=self._keyed_params(op, x, index))
        return x, targets

    @staticmethod
    def _keyed_params(op: Op, x: torch.Tensor, index: torch.Tensor | None) -> Params | None:
        """A keyed op's params from the batch's indices; None (draw as usual) for the rest."""
        if not op.keyed:
            return None
        if index is None:
            raise ValueError(f"{type(op).__name__} needs the batch's image indices: call with index=")
        return op.sample_keyed(index, x.device)


def _mixing_ops(ops) -> list[MixingOp]:
    """The mixing ops, also those inside RandomApply wrappers."""
    found = []
    for op in ops:
        if isinstance(op, MixingOp):
            found.append(op)
        elif isinstance(op, RandomApply):
            found += _mixing_ops([o for o in (op.op, op.otherwise) if o is not None])
    return found
