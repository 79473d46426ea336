"""Everything around the training loop that is not training: checkpoints, log lines, the
live display. Each is a `Callback`; the engine calls them in the order given.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable

from .budget import count_params, deployed_params
from .checkpoint import save_checkpoint
from .device import device_description


class Callback:
    """Hooks of a fit; override the ones you need. ``run`` is `engine.Run`."""

    def on_fit_start(self, run) -> None:
        pass

    def on_batch_end(self, run, step: int, stats) -> None:
        pass

    def on_epoch_end(self, run, record: dict) -> None:
        pass


class CallbackList(Callback):
    def __init__(self, callbacks) -> None:
        self.callbacks = list(callbacks)

    def on_fit_start(self, run) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(run)

    def on_batch_end(self, run, step: int, stats) -> None:
        for cb in self.callbacks:
            cb.on_batch_end(run, step, stats)

    def on_epoch_end(self, run, record: dict) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(run, record)


class OnEpochEnd(Callback):
    """A plain function of the run called after every epoch (tests, notebooks, search pruning)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def on_epoch_end(self, run, record: dict) -> None:
        self.fn(run)


class SaveCheckpoint(Callback):
    """After every epoch, everything needed to resume bit-for-bit (atomic write)."""

    def __init__(self, path: Path, extra: dict | None = None) -> None:
        self.path, self.extra = Path(path), extra or {}

    def on_epoch_end(self, run, record: dict) -> None:
        save_checkpoint({**run.state.checkpoint(run.spec, run.recipe), **self.extra}, self.path)


class RunLog:
    """Time-stamped lines to a file, and to stdout when ``echo``."""

    def __init__(self, path: Path | None, echo: bool) -> None:
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        stamped = f"{_dt.datetime.now().strftime('%H:%M:%S')} {line}"
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(stamped + "\n")
        if self.echo:
            print(stamped, flush=True)


class LogLines(Callback):
    """One line when training starts and one per epoch."""

    def __init__(self, log: RunLog, label: str) -> None:
        self.log, self.label = log, label

    def on_fit_start(self, run) -> None:
        r = run.recipe
        self.log(f"train {self.label} ({_param_counts(run)}) on {device_description(run.device)}; "
                 f"{run.n_train} images, {run.steps_per_epoch} steps/epoch, {r.epochs} epochs"
                 + (f", resuming after epoch {run.state.epoch}" if run.state.epoch else ""))

    def on_epoch_end(self, run, record: dict) -> None:
        val = f"{record['val_acc']:.4f}" if record["val_acc"] is not None else "-"
        self.log(f"epoch {record['epoch']}/{run.recipe.epochs} loss {record['train_loss']:.4f} "
                 f"train_acc {record['train_acc']:.4f} val_acc {val} lr {record['lr']:.5f} "
                 f"{record['images_per_s']:,.0f} img/s {record['epoch_time_s']:.1f}s")


def _param_counts(run) -> str:
    """``1,473 params``, or ``1,461 params deployed, 1,790 while training`` for rep* blocks."""
    deployed, trained = deployed_params(run.spec), count_params(run.state.model)
    return f"{deployed:,} params" + (f" deployed, {trained:,} while training" if trained != deployed else "")


class RichProgress(Callback):
    """A live display: the whole run (fractional epochs, so its time-remaining estimate
    moves from the first batches on) and the current epoch's batches."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), transient=False)

    def on_fit_start(self, run) -> None:
        self.progress.start()
        self.run_task = self.progress.add_task("epochs", total=run.recipe.epochs, completed=run.state.epoch, stats="")
        self.batch_task = self.progress.add_task("batches", total=run.steps_per_epoch, stats="")

    def on_batch_end(self, run, step: int, stats) -> None:
        if step == 0:
            self.progress.reset(self.batch_task, total=run.steps_per_epoch)
        if step % 10 == 0 or step == run.steps_per_epoch - 1:
            import time

            done = (step + 1) * run.recipe.batch_size
            self.progress.update(self.batch_task, completed=step + 1, stats=(
                f"loss {stats.last_loss.item():.3f}  acc {stats.correct.item() / done:.3f}  "
                f"lr {run.state.optim.lr:.4f}  {done / (time.perf_counter() - stats.t0):,.0f} img/s"))
            self.progress.update(self.run_task, completed=run.state.epoch + (step + 1) / run.steps_per_epoch)

    def on_epoch_end(self, run, record: dict) -> None:
        val = f"{record['val_acc']:.4f}" if record["val_acc"] is not None else "-"
        self.progress.update(self.run_task, completed=run.state.epoch,
                             stats=f"val {val}  train loss {record['train_loss']:.3f}")
        if run.state.epoch >= run.recipe.epochs:
            self.stop()

    def stop(self) -> None:
        self.progress.stop()
