"""The training engine: ``fit`` -> ``train_one_epoch`` -> ``stepper.step``.

    spec + recipe + (train, val) -> model, optimisation, averager -> epochs -> final weights

``fit`` writes no file and never sees the test set: it returns a `FitResult` (final model,
history, which weights). Everything around the loop — checkpoints, log lines, the live
display, pruning reports to a search — is a callback (`tinycnn.callbacks`); scoring the
test set and writing a run directory is the pipeline's job.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .augment import BatchAugment
from .averaging import make_averager
from .batches import TrainBatches, plain_batches
from .build import build
from .callbacks import Callback, CallbackList
from .data import Split, Splits
from .device import resolve_device
from .errors import CheckpointError, RecipeError, TrainingDiverged
from .evaluate import accuracy
from .init import initialise
from .objective import make_objective
from .optim import Optimization
from .recipe import Recipe
from .spec import PhaseSpec
from .stepper import make_stepper

# A loss this many times the chance loss (predicting all classes equally) for a whole epoch
# means the weights are blowing up even if it stays finite (`--set lr=1000`: 288 vs 2.3).
EXPLODED = 10.0


@dataclass
class TrainState:
    """Everything that changes during training, and so goes into a checkpoint."""

    model: nn.Module
    optim: Optimization
    averager: object
    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    train_time: float = 0.0

    def checkpoint(self, spec: PhaseSpec, recipe: Recipe) -> dict:
        return {"spec": spec.to_dict(), "recipe": recipe.to_dict(), "epoch": self.epoch,
                "history": self.history, "train_time": self.train_time, "model": self.model.state_dict(),
                **self.optim.state_dict(), **self.averager.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def restore(self, ckpt: dict) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optim.load_state_dict({"lookahead": None, **ckpt})
            self.averager.load_state_dict(ckpt)
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint does not match its recorded spec/recipe ({e})") from e
        self.epoch, self.history, self.train_time = ckpt["epoch"], ckpt["history"], ckpt["train_time"]
        torch.set_rng_state(ckpt["rng_cpu"])
        if ckpt["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])


@dataclass
class FitResult:
    model: nn.Module  # the final weights (last, EMA or SWA), with ``.spec`` attached
    weights: str  # "last", "ema" or "swa"
    history: list[dict]
    train_time: float
    val_accuracy: float | None


@dataclass
class Run:
    """What callbacks see of a fit in progress."""

    spec: PhaseSpec
    recipe: Recipe
    state: TrainState
    device: torch.device
    n_train: int
    steps_per_epoch: int


def new_state(spec: PhaseSpec, recipe: Recipe, steps_per_epoch: int, device: torch.device,
              initial_weights: dict | None = None, train: Split | None = None) -> TrainState:
    """Model, optimisation and averager at epoch 0; ``initial_weights`` (a state dict of
    ``build(spec)``, e.g. pruned from a wider trained net) replace the random start before
    the averager copies the model, so EMA/SWA start from them too.

    The recipe's initialisations (`tinycnn.init`: ``dirac_init``, ``whiten_init``, which
    reads ``train``'s images) run once on the device, before the optimiser is built, so a
    frozen whitening conv is in no parameter group; ``initial_weights`` then overwrite the
    values (a frozen conv stays frozen at the given ones)."""
    model = build(spec).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    initialise(model, recipe, train.x if train is not None else None)
    if initial_weights is not None:
        model.load_state_dict(initial_weights)
    optim = Optimization(model, recipe.optimizer_config(), recipe.schedule_config(),
                         recipe.epochs * steps_per_epoch, steps_per_epoch)
    averager = make_averager(model, optim.optimizer, recipe.averaging_config(), recipe.epochs)
    return TrainState(model, optim, averager)


def fitting_splits(splits: Splits, recipe: Recipe, device: torch.device) -> tuple[Split, Split]:
    """(train, val) on the device; the test split is dropped here, never read by the engine."""
    train = splits.train.subset(recipe.train_subset) if recipe.train_subset else splits.train
    if len(train) < recipe.batch_size:
        raise RecipeError(f"training set of {len(train)} images is smaller than one batch of "
                          f"{recipe.batch_size}; lower batch_size or raise train_subset")
    return train.to(device), splits.val.to(device)


def fit(spec: PhaseSpec, recipe: Recipe, splits: Splits, *, device: str | torch.device = "auto",
        teacher: nn.Module | None = None, callbacks: list[Callback] | tuple = (),
        resume_from: dict | None = None, initial_weights: dict | None = None) -> FitResult:
    """Train ``spec`` with ``recipe`` on ``splits.train``; validate on ``splits.val`` each epoch.
    ``initial_weights`` start the run from given weights (fine-tuning); a resumed run ignores them."""
    device = resolve_device(device)
    torch.manual_seed(recipe.seed)
    train, val = fitting_splits(splits, recipe, device)
    batches = TrainBatches(train, recipe.batch_size, recipe.channels_last)
    state = new_state(spec, recipe, len(batches), device, initial_weights if resume_from is None else None, train)
    if resume_from is not None:
        state.restore(resume_from)
    forward = torch.compile(state.model, mode=recipe.compile_mode) if recipe.compile else state.model
    augment = BatchAugment(recipe.augment_config(), splits.info.num_classes, splits.info.size,
                           n_images=len(train), seed=recipe.seed)
    stepper = make_stepper(state.model, forward, state.optim.optimizer, recipe.step_config(), device)
    objective = make_objective(teacher.to(device) if teacher is not None else None, recipe.distill_config(),
                               recipe.consistency_config())
    run, cbs = Run(spec, recipe, state, device, len(train), len(batches)), CallbackList(callbacks)
    cbs.on_fit_start(run)
    while state.epoch < recipe.epochs:
        record = train_one_epoch(run, batches, augment, stepper, objective, cbs)
        check_not_exploded(record, objective.chance_loss(splits.info.num_classes), recipe)
        record["val_acc"] = accuracy(state.model, val, recipe.eval_batch_size, recipe.channels_last) if len(val) else None
        _finish_epoch(run, record)
        cbs.on_epoch_end(run, record)
    final, weights = state.averager.final(state.model, plain_batches(train, 512, recipe.channels_last))
    final.spec = spec
    val_acc = accuracy(final, val, recipe.eval_batch_size) if len(val) else None
    return FitResult(final, weights, state.history, state.train_time, val_acc)


def train_one_epoch(run: Run, batches: TrainBatches, augment, stepper, objective, callbacks) -> dict:
    """One pass over the shuffled training split; returns the epoch's running statistics.

    ``augment`` may return several views of each image (AugMix's JSD loss: ``views`` x B
    images for B targets); the objective splits them and returns one row of logits per
    image, so the accuracy below counts every training image once."""
    state = run.state
    state.model.train()
    t0 = time.perf_counter()
    schedule_on = state.averager.main_schedule_active(state.epoch)
    augment.start_epoch(state.epoch)
    stats = EpochStats(run.device, state.epoch, t0)
    for step, (x, y, index) in enumerate(batches.indexed()):
        x, targets = augment(x, y, index)
        loss, logits = stepper.step(objective, x, targets)
        if schedule_on:
            state.optim.scheduler.step()
        state.averager.on_step(state.model)
        stats.update(step, len(batches), loss, logits, targets, state.optim.lr)
        callbacks.on_batch_end(run, step, stats)
    state.averager.on_epoch_end(state.model, state.epoch)
    return stats.record(len(batches) * batches.batch_size, state.optim.lr)


class EpochStats:
    """Running loss and accuracy on the device; a NaN/inf guard that syncs rarely on a GPU."""

    def __init__(self, device: torch.device, epoch: int, t0: float) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.epoch, self.t0, self.steps, self.last_loss = epoch, t0, 0, None
        # A host sync per step is free on a CPU but stalls a GPU's queue: there the guard
        # looks at the running sum every 50 steps instead.
        self.guard_every = 1 if device.type == "cpu" else 50

    def update(self, step: int, steps: int, loss, logits, targets, lr: float) -> None:
        self.last_loss = loss.detach()
        if (step % self.guard_every == 0 or step == steps - 1) and not torch.isfinite(self.loss_sum + self.last_loss):
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {self.epoch + 1}, step {step + 1}; "
                                   f"lower lr (now {lr:g}) or add warmup_epochs")
        self.loss_sum += self.last_loss
        self.correct += (logits.argmax(1) == targets.argmax(1)).sum()
        self.steps = step + 1

    def record(self, seen: int, lr: float) -> dict:
        epoch_time = time.perf_counter() - self.t0
        return {"epoch": self.epoch + 1, "train_loss": self.loss_sum.item() / self.steps,
                "train_acc": self.correct.item() / seen, "val_acc": None, "lr": lr,
                "images_per_s": seen / epoch_time, "epoch_time_s": epoch_time}


def check_not_exploded(record: dict, chance_loss: float, recipe: Recipe) -> None:
    if record["train_loss"] > EXPLODED * chance_loss:
        raise TrainingDiverged(
            f"loss exploded to {record['train_loss']:.4g} in epoch {record['epoch']} (predicting every class "
            f"equally gives {chance_loss:.3g}); lower lr (now {recipe.effective_lr:g}) or add warmup_epochs")


def _finish_epoch(run: Run, record: dict) -> None:
    state = run.state
    state.train_time += record["epoch_time_s"]
    record["train_time_s"] = state.train_time
    state.history.append(record)
    state.epoch += 1
