"""Many runs of one network at once on one device: N copies stacked and trained as one model.

    seeds s_0..s_{N-1} (+ lr, weight decay per copy) -> N independent runs, one step for all

A 1.5K-parameter net cannot fill a GPU: each of its kernels is too small, so a single run
is bound by kernel launches, not arithmetic. Seeds and hyperparameters that keep the tensor
shapes can instead train together (issue #19): every weight and buffer of the N copies is
stacked along a new first dimension, and ``torch.func.vmap`` over ``functional_call`` runs
the N forwards (and, through autograd, the N backwards) as one batched model, so each
kernel does N copies' work. On a CPU this is expected to be *slower* than N runs one after
another (nothing is launch-bound there); the GPU is its target
(``experiments/bench_many_runs.py`` measures both).

Each copy is its own run:

* its init is that of a single run with its seed (``torch.manual_seed(seed)``, then
  ``build(spec).to(device)`` and the recipe's ``dirac_init`` / ``whiten_init``, as
  `engine.new_state` does), so copy i starts exactly where ``fit`` with that seed starts;
* its shuffle comes from a generator of its own, seeded by its seed (`ArrayBatches`), so a
  copy sees the same order whatever N is; its batch is gathered by index from the uint8
  training images on the device;
* its augmentation (crop, flip, Cutout, noise, blur, contrast: ops that draw per image) is
  drawn per image, so no two copies share draws; the draws come from the global stream, so
  unlike the order they depend on N;
* its BatchNorm running statistics are its own slice of the stacked buffers: in train mode
  BatchNorm updates them in place under vmap, which works because the buffers are batched
  too (``replace_all_batch_norm_modules_`` is not needed, and would drop the running stats
  that evaluation uses);
* its SGD state is its own row of one (N, P) momentum buffer, and its lr and weight decay
  are (N,) tensors (`ArraySGD`: torch's SGD arithmetic, one fused update for all copies).

Copies never mix: the loss minimised is the sum of the per-copy losses, whose gradient with
respect to copy i's weights is copy i's own gradient. A copy that diverges (NaN) stays
NaN alone and is reported as diverged; the others train on.

What it does not implement is refused up front (`check_recipe`): SAM, EMA/SWA,
distillation, Mixup/CutMix, AugMix, Lookahead, optimisers other than SGD, gradient
clipping, AMP, ``torch.compile``, the alternating flip and the kornia backend.
``channels_last`` is accepted and ignored: it is memory layout only, and the stacked
(N, B, C, H, W) batches have no such layout.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.func import functional_call, vmap

from .augment import AugmentConfig, BatchAugment
from .batches import to_float
from .build import build
from .data import Split, Splits
from .device import resolve_device
from .engine import EXPLODED, fitting_splits
from .errors import RecipeError
from .init import initialise
from .objective import soft_cross_entropy
from .optim import lr_factor, param_groups
from .recipe import Recipe
from .spec import PhaseSpec

# Recipe fields the array implements; every other field must keep its default.
ARRAY_FIELDS = (
    "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "no_bias_decay", "lr_scale_batch",
    "schedule", "warmup_epochs", "min_lr_ratio", "step_milestones", "step_gamma", "clr_half_epochs", "clr_mode",
    "onecycle_pct", "onecycle_div", "onecycle_final_div",
    "label_smoothing", "crop_pad", "flip", "cutout",
    "noise_p", "noise_std", "blur_p", "blur_sigma", "contrast_p", "contrast_min", "contrast_max",
    "dirac_init", "whiten_init", "whiten_eps", "channels_last", "eval_batch_size",
    "val_size", "split_seed", "train_subset", "seed",
)
# Each copy's shuffle generator starts at its seed plus this, so its first draws are not
# the same numbers as the init's (drawn from the global stream seeded with the seed itself).
ORDER_SEED_OFFSET = 0x0DE5_0F5E


def check_recipe(recipe: Recipe) -> None:
    """Refuse, in one message, every recipe field the array does not implement."""
    default = Recipe()
    refused = [f.name for f in fields(Recipe)
               if f.name not in ARRAY_FIELDS and getattr(recipe, f.name) != getattr(default, f.name)]
    if refused:
        given = ", ".join(f"{name} = {getattr(recipe, name)!r}" for name in refused)
        raise RecipeError(
            f"the model array does not implement {given}. It trains plain SGD (momentum, Nesterov, "
            f"weight decay, no-bias-decay) on any lr schedule, with label smoothing, crop, random flip, "
            f"Cutout, noise, blur and contrast augmentation and the dirac/whiten inits; accepted fields: "
            f"{', '.join(ARRAY_FIELDS)}; every other field must keep its default "
            f"(no SAM, EMA/SWA, distillation, Mixup/CutMix, AugMix, Lookahead, other optimisers, "
            f"grad_clip, amp, compile, flip_mode = 'alternate', aug_backend = 'kornia')")


class ModelArray:
    """N copies of one network as stacked tensors: the trainable weights as one (N, P) leaf
    (``flat``, so the optimiser updates all of them in a few kernels), frozen weights and
    buffers as (N, ...) tensors (``fixed``). A template module supplies the code; its own
    tensors are never used."""

    def __init__(self, models: list[nn.Module]) -> None:
        if not models:
            raise ValueError("a model array needs at least one copy (one seed)")
        first = models[0]
        shapes = {name: t.shape for name, t in first.state_dict().items()}
        if any({name: t.shape for name, t in m.state_dict().items()} != shapes for m in models):
            raise ValueError("the copies of a model array must share one architecture (same tensor shapes)")
        self.names = list(shapes)  # build(spec)'s state-dict order
        self.spec: PhaseSpec = first.spec
        self.template = copy.deepcopy(first)
        self.n = len(models)
        named = dict(first.named_parameters())
        self.trainable = [name for name, p in named.items() if p.requires_grad]
        self.shapes = [named[name].shape for name in self.trainable]
        self.sizes = [named[name].numel() for name in self.trainable]
        rows = [dict(m.named_parameters()) for m in models]
        flat = torch.stack([torch.cat([row[name].detach().flatten() for name in self.trainable]) for row in rows])
        self.flat = flat.requires_grad_(True)
        frozen = [name for name, p in named.items() if not p.requires_grad]
        states = [m.state_dict() for m in models]
        self.fixed = {name: torch.stack([s[name].detach() for s in states])
                      for name in frozen + [name for name, _ in first.named_buffers()]}

    @classmethod
    def from_seeds(cls, spec: PhaseSpec, seeds: list[int], device: torch.device | str = "cpu",
                   recipe: Recipe | None = None, images: torch.Tensor | None = None) -> "ModelArray":
        """One copy per seed, each initialised exactly as `engine.new_state` does for a run
        with that seed (``recipe``'s inits; ``images``, the training split, for whitening)."""
        models = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = build(spec).to(device)
            if recipe is not None:
                initialise(model, recipe, images)
            models.append(model)
        return cls(models)

    def weights(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer, (N, ...): views into ``flat`` for the trainable ones."""
        parts = self.flat.split(self.sizes, dim=1)
        views = {name: part.view(self.n, *shape) for name, part, shape in zip(self.trainable, parts, self.shapes)}
        return {**views, **self.fixed}

    def _one(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, weights, (x,))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, B, C, H, W) float images, one batch per copy -> (N, B, classes) logits, in the
        current mode (train: BatchNorm uses and updates each copy's statistics)."""
        return vmap(self._one, randomness="different")(self.weights(), x)

    def train(self, mode: bool = True) -> "ModelArray":
        self.template.train(mode)
        return self

    def eval(self) -> "ModelArray":
        return self.train(False)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        """Eval-mode logits (N, n, classes) of every copy on the same uint8 ``images`` (n, C, H, W).
        About ``batch_size`` image-evaluations per call (shared by the copies), so memory does
        not grow with N."""
        was_training = self.template.training
        self.eval()
        device, chunk = self.flat.device, max(1, batch_size // self.n)
        shared = vmap(self._one, in_dims=(0, None), randomness="different")
        out = [shared(self.weights(), to_float(images[i:i + chunk].to(device))) for i in range(0, len(images), chunk)]
        self.train(was_training)
        return torch.cat(out, dim=1)

    def accuracy(self, split: Split, batch_size: int = 2000) -> list[float]:
        """Each copy's accuracy on ``split`` (exact counts over the split, as `evaluate.accuracy`)."""
        pred = self.predict(split.x, batch_size).argmax(-1)
        return [c / len(split.y) for c in (pred == split.y.to(pred.device)).sum(1).tolist()]

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Copy i as a state dict of ``build(spec)``, in its order (BatchNorm statistics included)."""
        weights = self.weights()
        return {name: weights[name][i].detach().clone() for name in self.names}

    def unstack(self, i: int) -> nn.Module:
        """Copy i as an ordinary module (``.spec`` attached, frozen weights still frozen), to
        evaluate, save or fine-tune like any run's model."""
        model = copy.deepcopy(self.template)
        model.load_state_dict(self.state_dict(i))
        model.spec = self.spec
        return model.train()


def decay_mask(model: nn.Module, trainable: list[str], no_bias_decay: bool) -> torch.Tensor:
    """(P,) 1 where `optim.param_groups` decays the weight, 0 where not, in ``flat``'s order."""
    groups = param_groups(model, 1.0, no_bias_decay)
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    named = dict(model.named_parameters())
    return torch.cat([torch.full_like(named[name].detach().flatten(), float(id(named[name]) in decayed))
                      for name in trainable])


class ArraySGD:
    """torch.optim.SGD's update (weight decay, momentum with dampening 0, Nesterov) on all
    copies' weights at once: a handful of kernels on (N, P) tensors whatever N is. Each copy
    has its own momentum row, and its own lr (per step) and weight decay, (N,) tensors."""

    def __init__(self, array: ModelArray, momentum: float, nesterov: bool, weight_decays: torch.Tensor,
                 no_bias_decay: bool = True) -> None:
        self.array, self.momentum, self.nesterov = array, momentum, nesterov and momentum > 0
        mask = decay_mask(array.template, array.trainable, no_bias_decay)
        self.decay = weight_decays.view(-1, 1).to(mask) * mask  # (N, P): each copy's wd where decayed
        self.buffer = torch.zeros_like(array.flat)  # zero, so step 1's buffer is the gradient, as torch's

    @torch.no_grad()
    def step(self, lr: torch.Tensor) -> None:
        """One update with each copy's ``lr`` (N,); clears the gradient."""
        w = self.array.flat
        g = w.grad + self.decay * w
        if self.momentum:
            self.buffer.mul_(self.momentum).add_(g)
            g = g + self.momentum * self.buffer if self.nesterov else self.buffer
        w.sub_(lr.view(-1, 1).to(w) * g)
        w.grad = None


class ArrayBatches:
    """Each copy's own shuffle of one split: per epoch one ``randperm`` per copy from its own
    generator, then batch ``step`` of all copies is one gather, (N, B, C, H, W)."""

    def __init__(self, split: Split, batch_size: int, seeds: list[int]) -> None:
        self.split, self.batch_size = split, batch_size
        device = split.x.device
        self.generators = [torch.Generator(device=device).manual_seed(ORDER_SEED_OFFSET + s) for s in seeds]

    def __len__(self) -> int:
        return len(self.split) // self.batch_size

    def indexed(self):
        """(x float (N, B, C, H, W), y (N, B), index (N, B)) for each step of one epoch."""
        n, device = len(self.split), self.split.x.device
        perms = torch.stack([torch.randperm(n, generator=g, device=device) for g in self.generators])
        for step in range(len(self)):
            index = perms[:, step * self.batch_size:(step + 1) * self.batch_size]
            yield to_float(self.split.x[index]), self.split.y[index], index


class ArrayAugment:
    """The recipe's per-image augmentation (`augment.BatchAugment`) on all copies' batches at
    once, flattened to one batch of N x B images: every image draws its own parameters."""

    def __init__(self, cfg: AugmentConfig, num_classes: int, image_size: int) -> None:
        self.augment = BatchAugment(cfg, num_classes, image_size)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, B, C, H, W) images, (N, B) labels -> augmented images, (N, B, classes) targets."""
        shape = y.shape
        images, targets = self.augment(x.flatten(0, 1), y.flatten())
        return images.unflatten(0, shape), targets.unflatten(0, shape)


def train_step(array: ModelArray, sgd: ArraySGD, x: torch.Tensor, targets: torch.Tensor,
               lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of every copy on its own batch; returns (losses (N,), logits (N, B, K))."""
    logits = array(x)
    losses = vmap(soft_cross_entropy)(logits, targets)
    losses.sum().backward()  # d(sum)/d(copy i) = copy i's own gradient
    sgd.step(lr)
    return losses.detach(), logits.detach()


@dataclass
class ArrayResult:
    models: list[nn.Module]  # each copy's final weights, ``.spec`` attached
    val_accuracy: list[float] | None
    history: list[dict]  # per epoch: per-copy train loss/accuracy, lr factor, aggregate images/s
    train_time: float
    images_per_s: float  # all copies together: N x images seen / training time
    diverged: list[bool]  # a copy whose last epoch's loss is not finite or exploded


def per_copy(values, default: float, n: int, name: str, device: torch.device) -> torch.Tensor:
    """An (N,) tensor of one hyperparameter: ``values`` (one per copy) or ``default`` for all."""
    values = [default] * n if values is None else list(values)
    if len(values) != n:
        raise RecipeError(f"{name} has {len(values)} values for {n} copies (one per seed)")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise RecipeError(f"{name} must be finite and >= 0, got {values}")
    return torch.tensor(values, dtype=torch.float32, device=device)


@dataclass
class ArrayRun:
    """What one epoch of the array needs."""

    array: ModelArray
    sgd: ArraySGD
    batches: ArrayBatches
    augment: ArrayAugment
    base_lr: torch.Tensor  # (N,)
    recipe: Recipe

    def lr_at(self, step: int) -> tuple[float, torch.Tensor]:
        """(the schedule's factor, each copy's lr) at optimiser step ``step`` (the engine's `lr_factor`)."""
        steps = len(self.batches)
        factor = lr_factor(step, self.recipe.epochs * steps, steps, self.recipe.schedule_config())
        return factor, self.base_lr * factor


def train_array_epoch(run: ArrayRun, epoch: int) -> dict:
    """One epoch of every copy; per-copy statistics are summed on the device, read once."""
    run.array.train()
    t0, steps = time.perf_counter(), len(run.batches)
    loss_sum = torch.zeros(run.array.n, device=run.array.flat.device)
    correct = torch.zeros_like(loss_sum)
    for step, (x, y, _) in enumerate(run.batches.indexed()):
        x, targets = run.augment(x, y)
        factor, lr = run.lr_at(epoch * steps + step)
        losses, logits = train_step(run.array, run.sgd, x, targets, lr)
        loss_sum += losses
        correct += (logits.argmax(-1) == targets.argmax(-1)).sum(1)
    seen = steps * run.batches.batch_size
    loss, acc = (loss_sum / steps).tolist(), (correct / seen).tolist()  # the one host sync
    epoch_time = time.perf_counter() - t0
    return {"epoch": epoch + 1, "train_loss": loss, "train_acc": acc, "lr_factor": factor,
            "images_per_s": run.array.n * seen / epoch_time, "epoch_time_s": epoch_time}


def fit_array(spec: PhaseSpec, recipe: Recipe, splits: Splits, seeds: list[int], lrs=None,
              weight_decays=None, device: str | torch.device = "auto") -> ArrayResult:
    """Train one copy of ``spec`` per seed with ``recipe`` (its epochs and lr schedule), all at
    once; ``lrs`` / ``weight_decays`` (one per seed) replace the recipe's effective lr and
    weight decay copy by copy. Like ``fit``, it never reads the test split."""
    check_recipe(recipe)
    device = resolve_device(device)
    train, val = fitting_splits(splits, recipe, device)
    n = len(seeds)
    array = ModelArray.from_seeds(spec, seeds, device, recipe, train.x)
    wd = per_copy(weight_decays, recipe.weight_decay, n, "weight_decays", device)
    sgd = ArraySGD(array, recipe.momentum, recipe.nesterov, wd, recipe.no_bias_decay)
    augment = ArrayAugment(recipe.augment_config(), splits.info.num_classes, splits.info.size)
    run = ArrayRun(array, sgd, ArrayBatches(train, recipe.batch_size, seeds), augment,
                   per_copy(lrs, recipe.effective_lr, n, "lrs", device), recipe)
    history = [train_array_epoch(run, epoch) for epoch in range(recipe.epochs)]
    train_time = sum(r["epoch_time_s"] for r in history)
    val_acc = array.accuracy(val, recipe.eval_batch_size) if len(val) else None
    limit = EXPLODED * math.log(splits.info.num_classes)
    diverged = [not (math.isfinite(loss) and loss <= limit) for loss in history[-1]["train_loss"]]
    seen = n * recipe.epochs * len(run.batches) * recipe.batch_size
    models = [array.unstack(i) for i in range(n)]
    return ArrayResult(models, val_acc, history, train_time, seen / train_time, diverged)
