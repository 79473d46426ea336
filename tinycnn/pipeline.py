"""One run, end to end: decide train / resume / reuse / refuse, fit, score the test set once,
write the run directory. The CLI and the studies (ladder, ablation) both come through here.

    RunRequest --run_or_reuse--> (reuse a finished run | fit with callbacks -> evaluate -> record)
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .budget import count_params, phase_cost
from .callbacks import LogLines, RichProgress, RunLog, SaveCheckpoint
from .checkpoint import load_checkpoint, load_model, save_model
from .data import Splits, load_splits
from .device import device_description, resolve_device
from .engine import FitResult, fit
from .errors import CheckpointError, RunInterrupted, TinyCNNError, TrainingDiverged
from .evaluate import evaluate
from .ladders import get_phase, ladder, previous_phase
from .provenance import environment, utc_now
from .recipe import Recipe
from .results import (CHECKPOINT, LOG, METRICS, MODEL, REPO_ROOT, has_checkpoint, invoked_command, is_finished,
                      move_aside, portable, read_metrics, resume_command, run_dir_for, write_metrics)
from .spec import PhaseSpec

MODES = ("continue", "new", "force", "resume")


@dataclass(frozen=True)
class RunRequest:
    """Everything that decides one run; ``splits`` lets tests and notebooks pass small data."""

    spec: PhaseSpec
    recipe: Recipe
    run_dir: Path
    recipe_name: str = ""
    command: str = ""
    data_dir: str | None = None
    device: str = "auto"
    quiet: bool = True
    splits: Splits | None = None
    callbacks: tuple = field(default=())
    initial_weights: dict | None = field(default=None, repr=False)  # fine-tuning start (pruning)
    origin: dict | None = None  # where initial_weights came from, recorded in metrics.json

    @property
    def label(self) -> str:
        return f"{self.spec.dataset}/{self.spec.name} (recipe {self.recipe_name or 'custom'})"


def run_or_reuse(req: RunRequest, mode: str = "continue") -> dict:
    """The one place that decides what happens to a run directory.

    ``continue`` (ladders, ablations): reuse a finished run of this network and recipe,
    resume an unfinished one, else train. ``new`` (`tinycnn train`): refuse a directory
    that holds a run. ``force``: move the old run aside, then train. ``resume``: continue
    the checkpoint, which must exist.
    """
    d = Path(req.run_dir)
    if mode == "resume":
        if not has_checkpoint(d):
            raise CheckpointError(f"{d} has no {CHECKPOINT} to resume"
                                  + (" (the run finished)" if is_finished(d) else ""))
        return _train(req, resume=True)
    if is_finished(d) or has_checkpoint(d):
        if mode == "force":
            move_aside(d)
        elif mode == "new":
            raise _occupied(d)
        elif is_finished(d):
            return _reuse(req)
        else:
            return _train(req, resume=True)
    return _train(req, resume=False)


def _occupied(d: Path) -> TinyCNNError:
    if is_finished(d):
        return TinyCNNError(f"{d} already holds a finished run; pass --out DIR for a new one, "
                            f"or --force to move the old one aside and start over")
    return TinyCNNError(f"{d} holds an unfinished run; continue it with `{resume_command(d)}`, "
                        f"or pass --force to move it aside and start over")


def _reuse(req: RunRequest) -> dict:
    """A finished run stands in only for the network and the recipe it trained."""
    m = read_metrics(req.run_dir)
    if m.get("arch") != req.spec.arch:
        raise CheckpointError(f"{req.run_dir} holds a finished run of `{m.get('arch')}`, not of {req.spec.name!r} "
                              f"(`{req.spec.arch}`); move it away or delete it to train the new one")
    if req.recipe_name and m.get("recipe_name") and m["recipe_name"] != req.recipe_name:
        raise CheckpointError(f"{req.run_dir} holds a finished run with recipe {m['recipe_name']!r}, not "
                              f"{req.recipe_name!r}; move it away or delete it to train the new one")
    return m


def _train(req: RunRequest, resume: bool) -> dict:
    d = Path(req.run_dir)
    ckpt = load_checkpoint(d / CHECKPOINT) if resume else None
    check_writable(d)
    device = resolve_device(req.device)
    splits = req.splits or load_splits(req.spec.dataset, req.recipe.val_size, req.data_dir,
                                       split_seed=req.recipe.split_seed)
    recipe, teacher = attach_teacher(req.spec, req.recipe)
    command = (ckpt or {}).get("command") or req.command or invoked_command() or ""
    req = replace(req, origin=req.origin or (ckpt or {}).get("initial_weights"))  # a resumed fine-tune keeps it
    created = not d.exists()
    d.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        result = _fit_with_callbacks(req, recipe, splits, device, teacher, ckpt, command)
    except BaseException as e:
        _clean_failed(d, created)
        raise _explained(e, d) from e
    return _record(req, recipe, result, splits, device, command, resume, time.perf_counter() - start)


def _fit_with_callbacks(req, recipe, splits, device, teacher, ckpt, command) -> FitResult:
    d = Path(req.run_dir)
    progress = None if req.quiet else RichProgress()
    callbacks = [SaveCheckpoint(d / CHECKPOINT, {"command": command, "recipe_name": req.recipe_name,
                                                    "initial_weights": req.origin}),
                 LogLines(RunLog(d / LOG, echo=req.quiet), req.label), *([progress] if progress else []),
                 *req.callbacks]
    try:
        return fit(req.spec, recipe, splits, device=device, teacher=teacher, callbacks=callbacks, resume_from=ckpt,
                   initial_weights=req.initial_weights)
    finally:
        if progress is not None:
            progress.stop()


def _clean_failed(d: Path, created: bool) -> None:
    """A run that failed before its first checkpoint leaves nothing behind."""
    if created and not has_checkpoint(d) and not is_finished(d):
        shutil.rmtree(d, ignore_errors=True)


def _explained(e: BaseException, d: Path) -> BaseException:
    """Say what is left on disk and how to go on."""
    kept = has_checkpoint(d)
    epoch = load_checkpoint(d / CHECKPOINT)["epoch"] if kept else 0
    if isinstance(e, KeyboardInterrupt):
        return RunInterrupted(f"interrupted; the checkpoint after epoch {epoch} is kept: continue with "
                              f"`{resume_command(d)}`" if kept else
                              "interrupted before the first epoch finished; nothing was kept")
    if isinstance(e, TrainingDiverged):
        where = (f"the last good checkpoint (epoch {epoch}) is kept at {d / CHECKPOINT}" if kept else
                 "no checkpoint was written (it diverged in the first epoch)")
        return TrainingDiverged(f"{e}; {where}")
    return e


def check_writable(d: Path) -> None:
    """Refuse an --out that cannot be created or written before any work is done."""
    probe = d
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise TinyCNNError(f"cannot write the run directory {d}: {probe} is "
                           f"{'not a folder' if not probe.is_dir() else 'not writable'}; choose another --out")


def _record(req: RunRequest, recipe: Recipe, result: FitResult, splits: Splits, device, command: str,
            resumed: bool, wall: float) -> dict:
    d = Path(req.run_dir)
    test = evaluate(result.model, splits.test.to(device), splits.info.num_classes, recipe.eval_batch_size)
    metrics = run_record(req, recipe, result, test, device, command, resumed, wall)
    save_model(result.model, d / MODEL, info={
        "test_accuracy": test["accuracy"], "weights": result.weights, "phase": req.spec.name,
        "recipe_name": req.recipe_name, "val_size": recipe.val_size, "split_seed": recipe.split_seed})
    write_metrics(d, metrics)
    (d / CHECKPOINT).unlink(missing_ok=True)
    RunLog(d / LOG, echo=req.quiet)(
        f"done: test accuracy {test['accuracy']:.4f} ({result.weights} weights), train time "
        f"{result.train_time:.0f}s; wrote {d / MODEL} and {METRICS}")
    return metrics


def run_record(req: RunRequest, recipe: Recipe, result: FitResult, test: dict, device, command: str,
               resumed: bool, wall: float) -> dict:
    """The metrics.json of a finished run: what ran, on what, how long, and how well."""
    spec, cost = req.spec, phase_cost(req.spec)
    assert count_params(result.model) == cost.train_params  # the model trained is the spec's
    return {
        "dataset": spec.dataset, "phase": spec.name, "arch": spec.arch, "change": spec.change,
        "params": cost.params, "train_params": cost.train_params, "macs": cost.macs,
        "recipe_name": req.recipe_name, "recipe": recipe.to_dict(), "seed": recipe.seed,
        "final_weights": result.weights, "epochs": recipe.epochs,
        "val_accuracy": result.val_accuracy, "test_accuracy": test["accuracy"],
        "test_per_class": test["per_class"], "test_confusion": test["confusion"],
        "history": result.history, "train_time_s": result.train_time, "wall_time_s": wall,
        "device": device_description(device), "threads": torch.get_num_threads(), **environment(),
        "command": command, "resumed": resumed,
        "resumed_by": (invoked_command() or "") if resumed else None,
        "finished_at": utc_now(), "teacher": recipe.kd_teacher or None,
        **({"initial_weights": req.origin} if req.origin else {}),
    }


def fit_only(spec: PhaseSpec, recipe: Recipe, splits: Splits, **kwargs) -> FitResult:
    """`engine.fit` with the recipe's teacher resolved: for notebooks and searches."""
    recipe, teacher = attach_teacher(spec, recipe)
    return fit(spec, recipe, splits, teacher=teacher, **kwargs)


# --- distillation teachers ------------------------------------------------------------------

def resolve_teacher_path(phase: PhaseSpec, kd_teacher: str, root: Path | None = None) -> Path | None:
    """``""`` -> no teacher; ``"previous"`` or a phase name of the same ladder -> that phase's
    seed-0 model in the committed study; else a path to a model file."""
    if not kd_teacher:
        return None
    if kd_teacher == "previous":
        teacher_phase = previous_phase(phase)
        if teacher_phase is None:
            raise CheckpointError(f"phase {phase.name!r} is the first of its ladder: it has no previous phase to "
                                  f"distil from; pass kd_teacher=<path to model.pt>")
    elif kd_teacher in {p.name for p in ladder(phase.dataset)}:
        teacher_phase = get_phase(phase.dataset, kd_teacher)
    else:
        path = Path(kd_teacher)
        # A repository-relative path (as attach_teacher records it) works from any cwd.
        return path if path.is_absolute() or path.exists() else REPO_ROOT / path
    path = run_dir_for(teacher_phase, 0, root) / MODEL
    if not path.exists():
        raise CheckpointError(f"kd_teacher={kd_teacher} needs {path}; train it first with "
                              f"`tinycnn ladder {phase.dataset} --phases {teacher_phase.name}`")
    return path


def attach_teacher(phase: PhaseSpec, recipe: Recipe):
    """(recipe with ``kd_teacher`` resolved to a file path, loaded teacher or None).

    Recording the resolved path, not "previous", lets metrics.json say which model taught.
    """
    path = resolve_teacher_path(phase, recipe.kd_teacher)
    if path is None:
        return recipe, None
    teacher = load_model(path)
    if teacher.spec.dataset != phase.dataset:
        raise CheckpointError(f"teacher {path} is a {teacher.spec.dataset} model; the student is {phase.dataset}")
    return replace(recipe, kd_teacher=portable(path)), teacher
