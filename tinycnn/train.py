"""The training loop: dataset on the device, batches sliced there, one screen of hot path.

    spec + recipe -> model, optimiser, schedule -> epochs (augment, forward, SAM, KD,
    step, EMA/SWA) -> checkpoint each epoch -> final weights -> test once -> run dir

The run directory receives ``model.pt`` (final weights, loadable by
``tinycnn.load_model``), ``metrics.json``, ``train.log`` and, while the run is
unfinished, ``checkpoint.pt`` (everything needed to resume bit-for-bit on CPU).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from . import __version__
from .augment import BatchAugment
from .budget import count_macs, count_params
from .build import TinyCNN, build
from .checkpoint import load_checkpoint, save_checkpoint, save_model
from .data import Splits, load_splits
from .errors import CheckpointError, TrainingDiverged
from .evaluate import accuracy, evaluate, to_float
from .optim import SAM, bn_frozen, lr_factor, make_optimizer
from .recipe import Recipe
from .spec import PhaseSpec


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against probability targets (smoothed and/or mixed)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: T^2 * KL(softmax(teacher/T) || softmax(student/T)); T^2 keeps the
    gradient scale independent of T."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@dataclass
class TrainState:
    """Everything that changes during training (and so goes into a checkpoint)."""

    model: TinyCNN
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    swa_model: AveragedModel | None = None
    swa_scheduler: SWALR | None = None
    ema_model: AveragedModel | None = None
    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    train_time: float = 0.0


class RunLog:
    """Lines to ``train.log`` always, and to stdout when the live display is off."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        stamped = f"{_dt.datetime.now().strftime('%H:%M:%S')} {line}"
        with open(self.path, "a") as f:
            f.write(stamped + "\n")
        if self.echo:
            print(stamped, flush=True)


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _new_state(spec: PhaseSpec, recipe: Recipe, steps_per_epoch: int, device: torch.device) -> TrainState:
    model = build(spec).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    total = recipe.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, steps_per_epoch, recipe))
    state = TrainState(model, optimizer, scheduler)
    if recipe.swa:
        state.swa_model = AveragedModel(model)
        if recipe.swa_lr > 0:
            state.swa_scheduler = SWALR(optimizer, swa_lr=recipe.swa_lr, anneal_epochs=1, anneal_strategy="cos")
    if recipe.ema_decay:
        state.ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
    return state


def _checkpoint_dict(state: TrainState, spec: PhaseSpec, recipe: Recipe) -> dict:
    def sd(obj):
        return obj.state_dict() if obj is not None else None

    return {
        "spec": spec.to_dict(), "recipe": recipe.to_dict(), "epoch": state.epoch,
        "history": state.history, "train_time": state.train_time,
        "model": sd(state.model), "optimizer": sd(state.optimizer), "scheduler": sd(state.scheduler),
        "swa_model": sd(state.swa_model), "swa_scheduler": sd(state.swa_scheduler),
        "ema_model": sd(state.ema_model),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore(state: TrainState, ckpt: dict) -> None:
    try:
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        for name in ("swa_model", "swa_scheduler", "ema_model"):
            if getattr(state, name) is not None:
                getattr(state, name).load_state_dict(ckpt[name])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint does not match its recorded spec/recipe ({e})") from e
    state.epoch, state.history, state.train_time = ckpt["epoch"], ckpt["history"], ckpt["train_time"]
    torch.set_rng_state(ckpt["rng_cpu"])
    if ckpt["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng_cuda"])


def _progress(quiet: bool):
    if quiet:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    transient=False)


def train(
    spec: PhaseSpec,
    recipe: Recipe,
    run_dir: str | Path,
    *,
    splits: Splits | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "auto",
    teacher: nn.Module | None = None,
    resume: bool = False,
    quiet: bool = False,
    command: str | None = None,
    recipe_name: str = "",
    on_epoch_end: Callable[[TrainState], None] | None = None,
) -> dict:
    """Train ``spec`` with ``recipe`` into ``run_dir`` and return the metrics written there."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    device = resolve_device(str(device))
    log = RunLog(run_dir / "train.log", echo=quiet)
    wall_start = time.perf_counter()

    torch.manual_seed(recipe.seed)
    if splits is None:
        splits = load_splits(spec.dataset, recipe.val_size, data_dir, split_seed=recipe.split_seed)
    train_split = splits.train.subset(recipe.train_subset) if recipe.train_subset else splits.train
    train_split, val_split = train_split.to(device), splits.val.to(device)
    n = len(train_split)
    steps_per_epoch = n // recipe.batch_size  # drop the ragged last batch: BN dislikes tiny batches
    if steps_per_epoch < 1:
        raise TrainingDiverged(f"training set of {n} images is smaller than one batch of {recipe.batch_size}")

    state = _new_state(spec, recipe, steps_per_epoch, device)
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        _restore(state, ckpt)
        log(f"resumed from {ckpt_path} after epoch {state.epoch}")
    fwd = torch.compile(state.model) if recipe.compile else state.model
    augment = BatchAugment(recipe.augment_config(), splits.info.num_classes, splits.info.size)
    sam = SAM(state.optimizer, recipe.sam_rho, recipe.sam_adaptive) if recipe.sam_rho else None
    scaler = torch.amp.GradScaler("cuda") if recipe.amp == "fp16" and device.type == "cuda" else None
    if teacher is not None:
        teacher = teacher.to(device).eval()
    swa_start_epoch = int(recipe.swa_start * recipe.epochs)

    def loss_fn(x, targets, teacher_logits):
        with _autocast(device, recipe.amp):
            logits = fwd(x)
        loss = soft_cross_entropy(logits, targets)
        if teacher_logits is not None:
            loss = (1 - recipe.kd_alpha) * loss + recipe.kd_alpha * distillation_loss(
                logits, teacher_logits, recipe.kd_temperature)
        return loss, logits

    log(f"train {spec.dataset}/{spec.name} ({count_params(state.model):,} params) on {device_description(device)}; "
        f"{n} images, {steps_per_epoch} steps/epoch, {recipe.epochs} epochs")
    progress = _progress(quiet)
    guard_every = 1 if device.type == "cpu" else 50
    with progress if progress is not None else contextlib.nullcontext():
        epoch_task = progress.add_task("epochs", total=recipe.epochs, completed=state.epoch, stats="") if progress else None
        batch_task = progress.add_task("batches", total=steps_per_epoch, stats="") if progress else None
        try:
            while state.epoch < recipe.epochs:
                epoch = state.epoch
                state.model.train()
                t0 = time.perf_counter()
                in_swa = state.swa_model is not None and epoch >= swa_start_epoch
                step_main_schedule = not (in_swa and state.swa_scheduler is not None)  # SWALR takes over
                perm = torch.randperm(n, device=device)
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device)
                if progress:
                    progress.reset(batch_task, total=steps_per_epoch)
                for step in range(steps_per_epoch):
                    idx = perm[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                    x = to_float(train_split.x[idx], recipe.channels_last)
                    x, targets = augment(x, train_split.y[idx])
                    teacher_logits = None
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(x)
                    loss, logits = loss_fn(x, targets, teacher_logits)
                    # A host sync per step is free on a CPU but stalls a GPU's queue, so there
                    # the guard looks at the running sum every `guard_every` steps instead.
                    if (step % guard_every == 0 or step == steps_per_epoch - 1) and not torch.isfinite(
                            loss_sum + loss.detach()):
                        raise TrainingDiverged(
                            f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                            f"the last good checkpoint (epoch {state.epoch}) is kept at {ckpt_path}. "
                            f"Lower lr (now {recipe.effective_lr}) or add warmup_epochs")
                    state.optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(state.optimizer)
                    else:
                        loss.backward()
                    if sam is not None:
                        sam.ascend()
                        with bn_frozen(state.model):
                            loss_fn(x, targets, teacher_logits)[0].backward()
                        sam.descend()
                    if recipe.grad_clip:
                        nn.utils.clip_grad_norm_(state.model.parameters(), recipe.grad_clip)
                    if scaler is not None:
                        scaler.step(state.optimizer)
                        scaler.update()
                    else:
                        state.optimizer.step()
                    if step_main_schedule:
                        state.scheduler.step()
                    if state.ema_model is not None:
                        state.ema_model.update_parameters(state.model)
                    loss_sum += loss.detach()
                    correct += (logits.argmax(1) == targets.argmax(1)).sum()
                    if progress and (step % 10 == 0 or step == steps_per_epoch - 1):
                        done = (step + 1) * recipe.batch_size
                        progress.update(batch_task, completed=step + 1, stats=(
                            f"loss {loss.item():.3f}  acc {correct.item() / done:.3f}  "
                            f"lr {state.optimizer.param_groups[0]['lr']:.4f}  "
                            f"{done / (time.perf_counter() - t0):,.0f} img/s"))
                if in_swa:
                    state.swa_model.update_parameters(state.model)
                    if state.swa_scheduler is not None:
                        state.swa_scheduler.step()
                epoch_time = time.perf_counter() - t0
                state.train_time += epoch_time
                seen = steps_per_epoch * recipe.batch_size
                record = {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum.item() / steps_per_epoch,
                    "train_acc": correct.item() / seen,
                    "val_acc": accuracy(state.model, val_split, recipe.eval_batch_size, recipe.channels_last)
                    if len(val_split) else None,
                    "lr": state.optimizer.param_groups[0]["lr"],
                    "images_per_s": seen / epoch_time,
                    "epoch_time_s": epoch_time,
                    "train_time_s": state.train_time,
                }
                state.history.append(record)
                state.epoch = epoch + 1
                save_checkpoint(_checkpoint_dict(state, spec, recipe), ckpt_path)
                val = f"{record['val_acc']:.4f}" if record["val_acc"] is not None else "-"
                log(f"epoch {epoch + 1}/{recipe.epochs} loss {record['train_loss']:.4f} "
                    f"train_acc {record['train_acc']:.4f} val_acc {val} lr {record['lr']:.5f} "
                    f"{record['images_per_s']:,.0f} img/s {epoch_time:.1f}s")
                if progress:
                    progress.update(epoch_task, completed=state.epoch,
                                    stats=f"val {val}  train loss {record['train_loss']:.3f}")
                if on_epoch_end is not None:
                    on_epoch_end(state)
        except KeyboardInterrupt:
            log(f"interrupted; checkpoint after epoch {state.epoch} kept at {ckpt_path}; "
                f"continue with `tinycnn train --resume {run_dir}`")
            raise

    final_model, weights = state.model, "last"
    if state.swa_model is not None:
        # BN statistics of an averaged model must be recomputed: average of running stats
        # is not the running stats of the average. Use plain (un-augmented) training batches.
        batches = (to_float(train_split.x[i:i + 512], recipe.channels_last) for i in range(0, n, 512))
        update_bn(batches, state.swa_model)
        final_model, weights = state.swa_model.module, "swa"
    elif state.ema_model is not None:
        final_model, weights = state.ema_model.module, "ema"

    val_acc = accuracy(final_model, val_split, recipe.eval_batch_size) if len(val_split) else None
    test = evaluate(final_model, splits.test.to(device), splits.info.num_classes, recipe.eval_batch_size)
    wall = time.perf_counter() - wall_start  # this invocation; train_time_s spans resumes
    params = count_params(final_model)
    metrics = {
        "dataset": spec.dataset, "phase": spec.name, "arch": spec.arch, "change": spec.change,
        "params": params, "macs": count_macs(final_model.cpu(), spec.dataset),
        "recipe_name": recipe_name, "recipe": recipe.to_dict(), "seed": recipe.seed,
        "final_weights": weights, "epochs": recipe.epochs,
        "val_accuracy": val_acc, "test_accuracy": test["accuracy"],
        "test_per_class": test["per_class"], "test_confusion": test["confusion"],
        "history": state.history, "train_time_s": state.train_time, "wall_time_s": wall,
        "device": device_description(device), "torch_version": torch.__version__,
        "tinycnn_version": __version__, "python": platform.python_version(), "git_commit": git_commit(),
        "command": command or " ".join(sys.argv), "resumed": resume,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "teacher": recipe.kd_teacher or None,
    }
    final_model.spec = spec
    save_model(final_model, run_dir / "model.pt", info={"test_accuracy": test["accuracy"], "weights": weights})
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(run_dir / "metrics.json")
    ckpt_path.unlink(missing_ok=True)
    log(f"done: test accuracy {test['accuracy']:.4f} ({weights} weights), train time {state.train_time:.0f}s; "
        f"wrote {run_dir / 'model.pt'} and metrics.json")
    return metrics


def first_reach(history: list[dict], target: float, key: str = "val_acc") -> dict | None:
    """The first epoch whose ``key`` reaches ``target``, with the training time to get there."""
    for rec in history:
        v = rec.get(key)
        if v is not None and not math.isnan(v) and v >= target:
            return {"epoch": rec["epoch"], "train_time_s": rec["train_time_s"], key: v}
    return None
